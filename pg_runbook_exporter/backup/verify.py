"""``verify-backup``: the runbook's *Backup Verification*, automated on a throwaway server.

The backup is restored into a disposable PostgreSQL (never production) inside a private working
directory, the runbook's integrity checks run on the copy, and the server and directory are
removed on every way out: success, failure, timeout and Ctrl-C. Only the serving path's siblings
``dumpfile`` and ``record`` are shared with the exporter; this module is loaded by the command.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pg_runbook_exporter.backup.dumpfile import DumpHeader, read_header
from pg_runbook_exporter.backup.record import Outcome, VerificationRecord
from pg_runbook_exporter.backup.restore import (
    Deadline,
    RestoreFailure,
    SqlStream,
    feed_psql,
)
from pg_runbook_exporter.backup.versions import Tools, choose_tools
from pg_runbook_exporter.config import Check, Config
from pg_runbook_exporter.database_url import DatabaseTarget
from pg_runbook_exporter.errors import CheckError
from pg_runbook_exporter.pgserver.binaries import BinariesUnavailable
from pg_runbook_exporter.pgserver.server import SUPERUSER, ServerError, ServerUser
from pg_runbook_exporter.pgserver.throwaway import Setting, ThrowawayServer, server_user
from pg_runbook_exporter.session import Session

logger = logging.getLogger(__name__)

RESTORE_DATABASE = "portal_backup_test"  # the runbook's scratch database
WORK_PREFIX = "pgrb-verify-"
# A scratch server: nothing it holds must survive a crash, and nothing else uses it.
_SERVER_SETTINGS: dict[str, Setting] = {
    "synchronous_commit": False,
    "full_page_writes": False,
    "autovacuum": False,
    "max_wal_size": "4GB",
}


@dataclass(frozen=True)
class VerifyOptions:
    """What one ``verify-backup`` run was asked to do."""

    backup: Path
    config: Config
    work_dir: Path
    timeout: float
    bindir: Path | None = None
    live: DatabaseTarget | None = None


@dataclass
class _Findings:
    header: DumpHeader | None = None
    tools: Tools | None = None
    tables: dict[str, int] = field(default_factory=dict)
    checks: dict[str, int] = field(default_factory=dict)
    live_tables: dict[str, int] = field(default_factory=dict)
    tolerated: dict[str, int] = field(default_factory=dict)


def make_work_dir(parent: Path, user: ServerUser | None) -> Path:
    """A fresh 0700 directory for the restored copy, which holds every customer's data."""
    parent = parent.resolve()
    if user is not None:
        blocked = _first_closed(parent, user)
        if blocked is not None:
            raise RestoreFailure(
                Outcome.SERVER_ERROR,
                f"the server user {user.name} cannot enter {blocked}: choose another --work-dir",
            )
    path = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=parent))
    if user is not None:
        # Root runs the server as its own user: that user owns the copy; nobody else can enter.
        os.chown(path, user.uid, user.gid)
    return path


def _first_closed(path: Path, user: ServerUser) -> Path | None:
    """The first directory on the way to ``path`` that ``user`` may not pass through."""
    for part in (*reversed(path.parents), path):
        info = part.stat()
        if info.st_uid == user.uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == user.gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return part
    return None


def verify(options: VerifyOptions) -> VerificationRecord:
    """Verify one backup; every problem with the backup becomes a failed record.

    KeyboardInterrupt passes through, after the server and working directory are gone.
    """
    started = time.time()
    deadline = Deadline(options.timeout)
    found = _Findings()
    try:
        size = options.backup.stat().st_size
    except OSError as exc:
        size = 0
        failure: RestoreFailure | None = RestoreFailure(
            Outcome.UNREADABLE, f"cannot read: {exc.strerror or exc}"
        )
    else:
        failure = None
    if failure is None:
        try:
            _Run(options, deadline, found).run()
        except RestoreFailure as exc:
            failure = exc
        except ServerError as exc:
            failure = RestoreFailure(Outcome.SERVER_ERROR, exc.what)
        except BinariesUnavailable as exc:
            failure = RestoreFailure(Outcome.SERVER_ERROR, str(exc))
    header, tools = found.header, found.tools
    return VerificationRecord(
        backup=options.backup.name,
        backup_bytes=size,
        verified_at=started,
        duration_seconds=round(time.time() - started, 3),
        outcome=failure.outcome if failure else Outcome.PASSED,
        message=failure.message if failure else "",
        format=str(header.format) if header else None,
        dumped_from=header.dumped_from if header else None,
        dumped_by=header.dumped_by if header else None,
        server_version=tools.server.version if tools else None,
        server_choice=tools.choice if tools else None,
        client_version=tools.client_version if tools else None,
        tables=found.tables,
        checks=found.checks,
        live_tables=found.live_tables,
        tolerated=found.tolerated,
    )


class _Run:
    """One verification's state: its options, budget, working directory and findings."""

    def __init__(self, options: VerifyOptions, deadline: Deadline, found: _Findings) -> None:
        self.options = options
        self.config = options.config
        self.deadline = deadline
        self.found = found
        self.tables, self.checks = portal_checks(options.config)

    def run(self) -> None:
        backup = self.options.backup
        try:
            header = read_header(backup)
        except OSError as exc:
            raise RestoreFailure(Outcome.UNREADABLE, f"cannot read: {exc.strerror}") from None
        if header is None:
            raise RestoreFailure(
                Outcome.NOT_A_DUMP,
                "not pg_dump output: neither plain SQL, gzip'd SQL nor a custom-format archive",
            )
        self.found.header = header
        tools = choose_tools(header, self.options.bindir)
        user = server_user()
        work = make_work_dir(self.options.work_dir, user)

        def stream() -> SqlStream:
            return SqlStream(backup, header.format, tools.pg_restore, work / "pg_restore.log")

        try:
            expanded = stream().measure(self.deadline)
            self._check_space(work, expanded)
            server = ThrowawayServer(binaries=tools.server, settings=_SERVER_SETTINGS, parent=work)
            with server:
                self.found.tools = tools
                server.create_database(RESTORE_DATABASE)
                logger.info(
                    "restoring %s (%s, %d bytes of SQL) into PostgreSQL %s",
                    backup.name, header.format, expanded, tools.server.version,
                )  # fmt: skip
                self._restore(server, stream(), work)
                self._count(server)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if self.options.live is not None:
            self._compare_live(self.options.live)

    def _check_space(self, work: Path, expanded: int) -> None:
        factor = _number(self.config, "backup_verify_space_factor")
        needed = int(expanded * factor)
        free = shutil.disk_usage(work).free
        if free < needed:
            raise RestoreFailure(
                Outcome.NO_SPACE,
                f"{work.parent} has {free} bytes free; the copy needs about {needed} "
                f"({factor:g} × {expanded} bytes of SQL)",
            )

    def _restore(self, server: ThrowawayServer, stream: SqlStream, work: Path) -> None:
        assert self.found.tools is not None
        args = [
            str(self.found.tools.psql), "-X", "-q", "-b", "-v", "ON_ERROR_STOP=0",
            "-v", "VERBOSITY=verbose", "-h", str(server.socket_dir), "-p", str(server.port),
            "-U", SUPERUSER, "-d", RESTORE_DATABASE, "-f", "-",
        ]  # fmt: skip
        errors = feed_psql(stream, args, deadline=self.deadline, log=work / "psql.log")
        fatal = []
        for error in errors:
            kind = error.tolerated_as
            if kind is None:
                fatal.append(error)
            else:
                self.found.tolerated[kind] = self.found.tolerated.get(kind, 0) + 1
        if fatal:
            shown = "; ".join(error.describe() for error in fatal[:3])
            raise RestoreFailure(Outcome.RESTORE_ERRORS, f"{len(fatal)} statements failed: {shown}")

    def _count(self, server: ThrowawayServer) -> None:
        with server.connect(dbname=RESTORE_DATABASE) as conn:
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false)",
                (f"{int(self.deadline.remaining() * 1000)}ms",),
            )
            missing = [
                name
                for name in self.tables
                if conn.execute("SELECT to_regclass(%s)", (_quoted(name),)).fetchone() == (None,)
            ]
            if missing:
                raise RestoreFailure(
                    Outcome.NO_PORTAL_TABLES,
                    f"the restored copy has no table {', '.join(missing)}",
                )
            try:
                for name in self.tables:
                    row = conn.execute(
                        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))
                    ).fetchone()
                    self.found.tables[name] = int(row[0]) if row else 0
                for check in self.checks:
                    self.found.checks.update(_check_values(conn, check, self.config, server.major))
            except psycopg.errors.QueryCanceled:
                raise RestoreFailure(
                    Outcome.TIMEOUT, "the integrity checks ran out of time"
                ) from None

    def _compare_live(self, live: DatabaseTarget) -> None:
        """Row counts of the live database, read the way the exporter reads: read-only, bounded."""
        timeout = self.checks[0].timeout if self.checks else 5.0
        lock_timeout = self.checks[0].lock_timeout if self.checks else 0.1
        session = Session(
            target=live, default_timeout=timeout, default_lock_timeout=lock_timeout, name="live"
        )
        try:
            session.connect()
            for name in self.tables:
                result = session.run(
                    f"SELECT count(*) FROM {_quoted(name)}",
                    {},
                    timeout=timeout,
                    lock_timeout=lock_timeout,
                    max_rows=1,
                )
                self.found.live_tables[name] = int(result.rows[0][0])
        except CheckError as exc:
            raise RestoreFailure(
                Outcome.LIVE_UNAVAILABLE, f"live counts not read ({exc.reason}): {exc}"
            ) from None
        finally:
            session.close()
        ratio = _number(self.config, "backup_verify_count_tolerance_ratio")
        differing = _differing(self.found.tables, self.found.live_tables, ratio)
        if differing:
            raise RestoreFailure(
                Outcome.COUNTS_DIFFER,
                "; ".join(differing) + f" (tolerance {ratio:.0%} of the live count)",
            )


def portal_checks(config: Config) -> tuple[list[str], list[Check]]:
    """The tables to count and the checks to run on the copy; ValueError names a bad setting."""
    tables = config.setting("backup_verify_tables")
    names = config.setting("backup_verify_checks")
    by_name = {check.name: check for check in config.checks}
    if not isinstance(tables, tuple) or not isinstance(names, tuple):
        raise ValueError("settings.backup_verify_tables and backup_verify_checks must be lists")
    missing = [name for name in names if name not in by_name]
    if missing:
        raise ValueError(f"settings.backup_verify_checks names no check: {', '.join(missing)}")
    return list(tables), [by_name[name] for name in names]


def _check_values(
    conn: psycopg.Connection[Any], check: Check, config: Config, major: int
) -> dict[str, int]:
    statement = check.sql_for(major)
    if statement is None:
        raise ValueError(f"checks.{check.name} has no SQL for PostgreSQL {major}")
    cur = conn.execute(statement.encode(), config.sql_params())
    rows = cur.fetchall()
    columns = [col.name for col in cur.description or ()]
    if len(rows) != 1:
        raise ValueError(f"checks.{check.name} returned {len(rows)} rows, not one")
    values = dict(zip(columns, rows[0], strict=True))
    prefix = f"{config.namespace}_"
    return {m.name.removeprefix(prefix): int(values[m.column]) for m in check.metrics}


def _number(config: Config, name: str) -> float:
    value = config.setting(name)
    if not isinstance(value, int | float):
        raise ValueError(f"settings.{name} must be a number")
    return float(value)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _differing(restored: Mapping[str, int], live: Mapping[str, int], ratio: float) -> list[str]:
    return [
        f"{name}: {restored.get(name, 0)} restored, {count} live"
        for name, count in live.items()
        if abs(restored.get(name, 0) - count) > ratio * count
    ]
