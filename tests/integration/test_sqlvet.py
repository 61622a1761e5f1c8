"""Why the vetting refuses what it refuses, shown on a real PostgreSQL: past it, the read-only
session alone does not stop large objects on every major.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from pg_runbook_exporter.config import parse_config
from pg_runbook_exporter.database_url import parse_database_url
from pg_runbook_exporter.errors import CheckError, ConfigError
from pg_runbook_exporter.session import Session
from tests.conftest import PortalDb


@contextlib.contextmanager
def session_of(db: PortalDb, **options: Any) -> Iterator[Session]:
    """A connected exporter session as the shipped monitoring role."""
    session = Session(target=parse_database_url(db.monitor_dsn), **options)
    try:
        session.connect()
        yield session
    finally:
        session.close()


def run(session: Session, text: str, *, timeout: float = 5.0) -> list[tuple[Any, ...]]:
    return session.run(text, {}, timeout=timeout, lock_timeout=0.1, max_rows=100).rows


LARGE_OBJECT = "SELECT lo_from_bytea(0, E'\\\\x00'::bytea)::text AS n"


READ_WRITE = (
    "SELECT word AS n FROM ts_stat('SELECT to_tsvector(''simple'', "
    "set_config(''default_transaction_read_only'', ''off'', false))')"
)


def large_objects(db: PortalDb) -> int:
    ((count,),) = db.server.execute("SELECT count(*) FROM pg_largeobject_metadata", dbname=db.name)
    return int(count)


def test_large_objects_are_refused_at_load_because_read_only_does_not_stop_them(
    portal_db_each: PortalDb,
) -> None:
    db = portal_db_each
    checks = {
        name: {"help": "Writes.", "sql": text, "metrics": {"n": {"name": name, "type": "gauge",
                                                                  "help": "N."}}}
        for name, text in [("read_write", READ_WRITE), ("large_object", LARGE_OBJECT)]
    }  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump({"checks": checks}, sort_keys=False), source="q.yaml")
    assert caught.value.problems == [
        "q.yaml: checks.read_write.sql: calls ts_stat() (runs SQL given as text): "
        "not on the allowlist (pg_runbook_exporter/sqlallow.py)",
        "q.yaml: checks.large_object.sql: calls lo_from_bytea() (reads or writes large "
        "objects): not on the allowlist (pg_runbook_exporter/sqlallow.py)",
    ]
    # Past the vetting, as the shipped role on its read-only session: the ts_stat() check
    # switches read-only off (kept for the next check until the reset), then the large object.
    before = large_objects(db)
    with session_of(db) as session:
        assert run(session, READ_WRITE) == [("off",)]  # set_config() ran
        if db.server.major < 16:  # read-only does not cover large objects before 16
            assert len(run(session, LARGE_OBJECT)) == 1
        else:
            with pytest.raises(CheckError, match="in a read-only transaction"):
                run(session, LARGE_OBJECT)
    assert large_objects(db) == before + (1 if db.server.major < 16 else 0)
