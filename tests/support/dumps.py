"""Real backups of a seeded portal database, written by pg_dump, for the backup tests.

The database is seeded with the demo's data (``demo.SEED_SQL``), so every count a restored copy
reports is known: ``SEEDED_TABLES`` and ``SEEDED_CHECKS``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg.conninfo

from pg_runbook_exporter import demo
from pg_runbook_exporter.backup.record import (
    Outcome,
    VerificationRecord,
    record_path,
    write_record,
)
from pg_runbook_exporter.pgserver.binaries import find_client_tool
from tests.conftest import PortalDb, Server, Servers

SEEDED_TABLES = {"users": demo.USERS, "id_mappings": demo.USERS + demo.ORPHANED_MAPPINGS}
SEEDED_CHECKS = {
    "id_mappings_orphaned": demo.ORPHANED_MAPPINGS,
    "id_mappings_duplicate_whmcs_ids": demo.DUPLICATE_WHMCS_IDS,
    "id_mappings_duplicate_whmcs_rows": 2 * demo.DUPLICATE_WHMCS_IDS,
    "id_mappings_duplicate_sf_ids": demo.DUPLICATE_SF_IDS,
    "id_mappings_duplicate_sf_rows": 3 * demo.DUPLICATE_SF_IDS,
}


@dataclass(frozen=True)
class Dumps:
    """One seeded database written in each format (file names as the runbook's commands make)."""

    plain: Path
    gzip: Path
    custom: Path

    def by_format(self, name: str) -> Path:
        path: Path = getattr(self, name)
        return path


def pg_dump(dsn: str, out: Path, *args: str, program: Path | None = None) -> Path:
    """Run pg_dump (the newest installed, or ``program``) on ``dsn``; the password by env."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    password = str(params.pop("password", "") or "")
    tool = program or find_client_tool("pg_dump", min_major=18)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = password
    subprocess.run(
        [str(tool), "-d", psycopg.conninfo.make_conninfo("", **params), "-f", str(out), *args],
        check=True, env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    return out


def write_dumps(dsn: str, directory: Path, stamp: str = "20261201_020000") -> Dumps:
    """The database at ``dsn`` as backup_<stamp>.sql, .sql.gz and .dump in ``directory``."""
    plain = pg_dump(dsn, directory / f"backup_{stamp}.sql")
    gzipped = directory / f"backup_{stamp}.sql.gz"
    gzipped.write_bytes(gzip.compress(plain.read_bytes()))
    custom = pg_dump(dsn, directory / f"backup_{stamp}.dump", "-Fc")
    return Dumps(plain=plain, gzip=gzipped, custom=custom)


@contextlib.contextmanager
def seeded_portal(servers: Servers, server: Server) -> Iterator[PortalDb]:
    """A portal database holding the demo's data, dropped afterwards."""
    db = servers.portal_db(server)
    try:
        db.server.execute(demo.SEED_SQL, dbname=db.name)
        yield db
    finally:
        db.server.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')


@contextlib.contextmanager
def private_work_dir() -> Iterator[Path]:
    """A --work-dir the server user can pass through (pytest's tmp dirs are root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="pgrb-test-work-"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sample_backups(directory: Path, *, now: float | None = None) -> Path:
    """Two small full backups (2 and 26 hours old) and a passed verification record of the
    newer, so a running exporter exports every backup metric without a dump being taken."""
    now = time.time() if now is None else now
    directory.mkdir(parents=True, exist_ok=True)
    newest = None
    for age, filler in ((26 * 3600, 3000), (2 * 3600, 2900)):
        when = dt.datetime.fromtimestamp(now - age, dt.UTC)
        path = directory / f"backup_{when:%Y%m%d_%H%M%S}.sql"
        path.write_bytes(
            b"--\n-- PostgreSQL database dump\n--\n-- Dumped by pg_dump version 18.6\n"
            + b"-" * filler
            + b"\n-- PostgreSQL database dump complete\n"
        )
        os.utime(path, (now - age + 600, now - age + 600))
        newest = path
    assert newest is not None
    record = VerificationRecord(
        backup=newest.name, backup_bytes=newest.stat().st_size, verified_at=now - 3600,
        duration_seconds=4.0, outcome=Outcome.PASSED, format="plain", dumped_by="18.6",
        server_version="18.6", server_choice="the major of the pg_dump that wrote it",
        client_version="18.6", tables=dict(SEEDED_TABLES), checks=dict(SEEDED_CHECKS),
    )  # fmt: skip
    write_record(record, record_path(newest))
    return directory
