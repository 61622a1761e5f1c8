"""Nothing a check does reaches the next check or the database, proven on a real PostgreSQL.

The checks here are run through the session directly, past the vetting that refuses them at load
(tests/unit/test_sqlvet.py): they stand for a check that got through anyway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from pg_runbook_exporter import sqlallow
from pg_runbook_exporter.config import parse_config
from pg_runbook_exporter.database_url import parse_database_url
from pg_runbook_exporter.errors import CheckError, ConfigError, FailureReason
from pg_runbook_exporter.session import Session
from tests.conftest import MONITOR_ROLE, PortalDb


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


# Everything of a session a check could change and the next one would inherit.
STATE = """
SELECT pg_backend_pid(), current_user::text, current_setting('default_transaction_read_only'),
       current_setting('standard_conforming_strings'), current_setting('search_path'),
       current_setting('row_security'),
       (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),
       (SELECT count(*) FROM pg_listening_channels()),
       (SELECT count(*) FROM pg_prepared_statements)
"""
START = (MONITOR_ROLE, "on", "on", 'pg_catalog,"public",pg_temp', "off", 0, 0, 0)


def advisory_locks_of(db: PortalDb, pid: int) -> list[tuple[Any, ...]]:
    return db.server.execute(
        "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND pid = %s", (pid,)
    )


def test_whatever_a_check_changed_in_the_session_is_gone_before_the_next_run(
    portal_db: PortalDb,
) -> None:
    with session_of(portal_db) as session:
        ((pid, *start),) = run(session, STATE)
        assert tuple(start) == START
        # Settings, the role, a session-level advisory lock, a LISTEN, a prepared statement:
        # without the reset each of these stayed for every later check on the session.
        run(
            session,
            "SELECT set_config('default_transaction_read_only', 'off', false),"
            " set_config('standard_conforming_strings', 'off', false),"
            " set_config('search_path', 'public', false),"
            " set_config('row_security', 'on', false),"
            " set_config('role', 'pg_monitor', false),"
            " pg_advisory_lock(4242)::text",
        )
        assert advisory_locks_of(portal_db, pid) == []  # released when the run ended
        run(session, "LISTEN portal_events")
        run(session, "PREPARE leftover AS SELECT 1")
        # A failed run is reset too: its session-level lock outlives the failed statement.
        with pytest.raises(CheckError, match="division by zero"):
            run(session, "SELECT pg_advisory_lock(4243)::text, 1 / 0")
        assert advisory_locks_of(portal_db, pid) == []
        assert run(session, STATE) == [(pid, *START)]  # same backend: reset, not reconnected


def test_a_check_cannot_leave_its_session_without_statement_timeout(portal_db: PortalDb) -> None:
    with session_of(portal_db) as session:
        # Both runs have the same timeouts: before, the second reused what the session held.
        run(session, "SELECT set_config('statement_timeout', '0', false)", timeout=0.5)
        with pytest.raises(CheckError) as caught:
            run(session, "SELECT pg_sleep(2)::text", timeout=0.5)
        assert (caught.value.reason, str(caught.value)) == (
            FailureReason.TIMEOUT,
            "canceling statement due to statement timeout",
        )


def test_the_session_keeps_its_settings_whatever_the_role_and_database_default(
    portal_db: PortalDb,
) -> None:
    for setting, value in [
        ("standard_conforming_strings", "off"),
        ("default_transaction_read_only", "off"),
        ("search_path", "portal_tricks"),
        ("row_security", "on"),
        ("statement_timeout", "0"),
        ("lock_timeout", "0"),
    ]:
        portal_db.server.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = {}").format(
                sql.Identifier(MONITOR_ROLE),
                sql.Identifier(portal_db.name),
                sql.Identifier(setting),
                sql.Literal(value),
            )
        )
    # Read as the vetter reads it, this is two strings; with standard_conforming_strings off
    # (the role's default now) the backslash escapes the quote and the rest runs as SQL.
    smuggled = "SELECT 'x\\', ' , pg_try_advisory_lock(7) --' AS n"
    with psycopg.connect(portal_db.monitor_dsn, autocommit=True) as plain:  # no pinned options
        assert plain.execute("SHOW standard_conforming_strings").fetchone() == ("off",)
        assert plain.execute(smuggled).fetchone() == ("x', ", True)  # the lock was taken
    with session_of(portal_db) as session:
        ((pid, *state),) = run(session, STATE)
        assert tuple(state) == START
        # (each run sets its own timeouts, so the default is read in the server facts' way)
        timeouts = (
            "SELECT name, setting FROM pg_settings "
            "WHERE name IN ('statement_timeout', 'lock_timeout') ORDER BY name"
        )
        assert session._execute(timeouts, {}).rows == [
            ("lock_timeout", "100"),
            ("statement_timeout", "5000"),
        ]
        assert run(session, smuggled) == [("x\\", " , pg_try_advisory_lock(7) --")]
        assert advisory_locks_of(portal_db, pid) == []


def test_a_session_that_cannot_be_reset_is_closed(portal_db: PortalDb) -> None:
    with session_of(portal_db) as session:
        ((pid,),) = run(session, "SELECT pg_backend_pid()")
        run(session, "BEGIN")  # DISCARD ALL cannot run in the transaction it leaves open
        assert not session.connected
        assert portal_db.server.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
        ) == [(0,)]
        session.connect()
        ((again,),) = run(session, "SELECT pg_backend_pid()")
        assert again != pid


def test_a_session_whose_settings_changed_under_it_is_dropped(portal_db: PortalDb) -> None:
    with session_of(portal_db) as session:
        # What a pooler handing over a server connection with other settings would do; a check
        # cannot (its run ends with the reset), so the test changes it on the connection itself.
        assert session._conn is not None
        session._conn.execute("SET standard_conforming_strings = off")
        with pytest.raises(CheckError) as caught:
            session.ensure_facts(max_age=0)
        assert (caught.value.reason, str(caught.value)) == (
            FailureReason.CONNECTION,
            "the session does not have the settings it was opened with: "
            "standard_conforming_strings is 'off', not 'on'",
        )
        assert not session.connected


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


# Functions a check calls only on the major that has them (a per-version SQL variant).
NEW_IN_18 = {"pg_get_sequence_data"}


def test_every_name_on_the_allowlist_is_the_catalogs(portal_db: PortalDb) -> None:
    portal_db.server.execute("CREATE EXTENSION pg_stat_statements", dbname=portal_db.name)
    missing = portal_db.server.execute(
        "SELECT 'function ' || n FROM unnest(%(f)s::text[]) AS n WHERE NOT EXISTS ("
        "  SELECT 1 FROM pg_proc WHERE proname = n AND (pronamespace = 'pg_catalog'::regnamespace"
        "  OR n LIKE 'pg_stat_statements%%')) "
        "UNION ALL SELECT 'relation ' || n FROM unnest(%(r)s::text[]) AS n WHERE NOT EXISTS ("
        "  SELECT 1 FROM pg_class WHERE relname = n AND (relnamespace = 'pg_catalog'::regnamespace"
        "  OR n LIKE 'pg_stat_statements%%')) "
        "UNION ALL SELECT 'type ' || n FROM unnest(%(t)s::text[]) AS n WHERE NOT EXISTS ("
        "  SELECT 1 FROM pg_type WHERE typname = n AND typnamespace = 'pg_catalog'::regnamespace) "
        "UNION ALL SELECT 'operator ' || n FROM unnest(%(o)s::text[]) AS n WHERE NOT EXISTS ("
        "  SELECT 1 FROM pg_operator WHERE oprname = n "
        "  AND oprnamespace = 'pg_catalog'::regnamespace)",
        {
            "f": sorted(sqlallow.FUNCTIONS - (NEW_IN_18 if portal_db.server.major < 18 else set())),
            "r": sorted(sqlallow.CATALOG_RELATIONS),
            "t": sorted(sqlallow.TYPES),
            "o": sorted(sqlallow.OPERATORS - {"!="}),  # the parser's spelling of <>
        },
        dbname=portal_db.name,
    )
    assert missing == []


def test_no_volatile_catalog_function_can_be_called_as_a_column(portal_db: PortalDb) -> None:
    # t.f means f(t) when t has no column f: the vetter sees a column. A catalog function that
    # takes a whole row and changes something would get past it; there is none.
    callable_as_column = portal_db.server.execute(
        "SELECT p.proname::text FROM pg_proc p JOIN pg_type t ON t.oid = p.proargtypes[0] "
        "WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.pronargs = 1 "
        "AND p.provolatile = 'v' AND (t.typtype = 'c' OR t.typname IN ('record', 'anyelement', "
        "'anynonarray', 'anycompatible', 'anycompatiblenonarray', 'any'))",
        dbname=portal_db.name,
    )
    assert callable_as_column == []


def test_a_portal_table_replaced_by_a_view_or_guarded_by_row_security_counts_as_absent(
    portal_db: PortalDb,
) -> None:
    # Both would run code their owner chose in the exporter's session: here, an advisory lock.
    portal_db.server.execute(
        "ALTER TABLE users RENAME TO users_data;"
        "CREATE VIEW users AS SELECT id FROM users_data WHERE pg_try_advisory_lock(1);"
        f"GRANT SELECT ON users TO {MONITOR_ROLE};"
        "ALTER TABLE id_mappings ENABLE ROW LEVEL SECURITY;"
        "CREATE POLICY lock ON id_mappings USING (pg_try_advisory_lock(2));"
        "INSERT INTO id_mappings (id, user_id, updated_at) VALUES ('m1', 'u1', now())",
        dbname=portal_db.name,
    )
    probed = ["users", "id_mappings", "_prisma_migrations"]
    with session_of(portal_db, probe_relations=probed) as session:
        assert session.facts is not None
        assert session.facts.relations == {"_prisma_migrations"}  # checks on the others skip
        # Read anyway, the policy is not applied: the statement fails (row_security off).
        with pytest.raises(CheckError) as caught:
            run(session, "SELECT count(*) FROM id_mappings")
        assert str(caught.value) == (
            'query would be affected by row-level security policy for table "id_mappings"'
        )
        ((pid,),) = run(session, "SELECT pg_backend_pid()")
        assert advisory_locks_of(portal_db, pid) == []
