"""One read-only PostgreSQL session that cannot hurt the database it watches.

Session options are set at connect time (libpq ``options``), not with ``SET`` in the check's own
string, so a check can never run outside the read-only default. Errors are classified by SQLSTATE
into the reasons the exporter reports.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import psycopg
import psycopg.conninfo
from psycopg import errors as pg_errors

from pg_runbook_exporter.database_url import DatabaseTarget, redact

logger = logging.getLogger(__name__)

APPLICATION_NAME = "pg-runbook-exporter"

# libpq keepalive and timeout defaults: a dead server or network is noticed in seconds, not hours.
_CONNECTION_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "20000",
}


class Reason(StrEnum):
    """Why a check run failed, as exported in ``check_errors_total{reason}``."""

    TIMEOUT = "timeout"
    LOCK_TIMEOUT = "lock_timeout"
    PERMISSION = "permission"
    CONNECTION = "connection"
    INVALID_RESULT = "invalid_result"
    OTHER = "other"


class CheckError(Exception):
    """A failed run, with its reason and a message that is safe to log."""

    def __init__(self, reason: Reason, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.sqlstate = sqlstate


def classify(exc: BaseException) -> Reason:
    """Map a psycopg error to a reason, by SQLSTATE where the server gave one."""
    if isinstance(exc, pg_errors.LockNotAvailable):
        return Reason.LOCK_TIMEOUT
    if isinstance(exc, pg_errors.QueryCanceled):
        return Reason.TIMEOUT
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return Reason.PERMISSION
    sqlstate = getattr(exc, "sqlstate", None) or ""
    # Class 08 (connection exception), 57P0x (admin shutdown, crash, cannot connect now) and
    # errors without SQLSTATE from the client side all mean the session is gone.
    if sqlstate.startswith(("08", "57P")) or (
        isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and not sqlstate
    ):
        return Reason.CONNECTION
    return Reason.OTHER


@dataclass(frozen=True)
class ServerFacts:
    """What decides which checks can run: version, role in replication, installed objects."""

    version_num: int
    in_recovery: bool
    extensions: frozenset[str]
    relations: frozenset[str]
    checked_at: float
    settings: Mapping[str, str] = field(default_factory=dict)  # those checks require, as shown

    @property
    def major(self) -> int:
        return self.version_num // 10000


@dataclass(frozen=True)
class QueryResult:
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    truncated: bool


_FACTS_SQL = """
SELECT current_setting('server_version_num')::int,
       pg_is_in_recovery(),
       ARRAY(SELECT extname::text FROM pg_extension),
       ARRAY(SELECT r FROM unnest(%(relations)s::text[]) AS r WHERE to_regclass(r) IS NOT NULL),
       ARRAY(SELECT ARRAY[name, setting] FROM pg_settings WHERE name = ANY(%(settings)s::text[]))
"""


def _escape_option(value: str) -> str:
    return value.replace("\\", "\\\\").replace(" ", "\\ ")


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _read(cur: psycopg.Cursor[tuple[Any, ...]], max_rows: int | None) -> QueryResult:
    if cur.description is None:
        return QueryResult(columns=(), rows=[], truncated=False)
    columns = tuple(col.name for col in cur.description)
    if max_rows is None:
        return QueryResult(columns=columns, rows=cur.fetchall(), truncated=False)
    rows = cur.fetchmany(max_rows + 1)
    return QueryResult(columns=columns, rows=rows[:max_rows], truncated=len(rows) > max_rows)


class Session:
    """A single connection, reopened with capped exponential backoff and jitter."""

    def __init__(
        self,
        *,
        target: DatabaseTarget,
        probe_relations: Sequence[str] = (),
        probe_settings: Sequence[str] = (),
        default_timeout: float = 5.0,
        default_lock_timeout: float = 0.1,
        max_backoff: float = 5.0,
        name: str = "session",
    ) -> None:
        self._target = target
        self._probe_relations = list(probe_relations)
        self._probe_settings = list(probe_settings)
        self._default_timeout = default_timeout
        self._default_lock_timeout = default_lock_timeout
        self._max_backoff = max_backoff
        self._name = name
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._timeouts: tuple[float, float] | None = None
        self._failures = 0
        self._next_attempt = 0.0
        self.facts: ServerFacts | None = None

    def _connect_kwargs(self) -> dict[str, Any]:
        params: dict[str, Any] = psycopg.conninfo.conninfo_to_dict(self._target.conninfo)
        for key, value in _CONNECTION_DEFAULTS.items():
            params.setdefault(key, value)
        options = [
            params.pop("options", "") or "",
            "-c default_transaction_read_only=on",
            f"-c statement_timeout={_ms(self._default_timeout)}",
            f"-c lock_timeout={_ms(self._default_lock_timeout)}",
            # A check never holds a transaction open; if one ever did, the server ends it.
            "-c idle_in_transaction_session_timeout=60s",
        ]
        if self._target.search_path:
            schema = '"' + self._target.search_path.replace('"', '""') + '"'
            options.append(f"-c search_path={_escape_option(schema)},public")
        params["options"] = " ".join(o for o in options if o)
        params["application_name"] = APPLICATION_NAME
        return params

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def connect(self) -> ServerFacts:
        """Open the connection (unless backing off) and read the server facts."""
        if self.connected and self.facts is not None:
            return self.facts
        now = time.monotonic()
        if now < self._next_attempt:
            raise CheckError(
                Reason.CONNECTION,
                f"database unreachable; next attempt in {self._next_attempt - now:.1f}s",
            )
        try:
            conn = psycopg.connect(autocommit=True, **self._connect_kwargs())
            if self._target.pgbouncer:
                conn.prepare_threshold = None  # pgbouncer transaction pooling breaks prepared plans
            self._conn = conn
            self._timeouts = (self._default_timeout, self._default_lock_timeout)
            facts = self.refresh_facts()
        except psycopg.Error as exc:
            self._fail(exc)
            raise self._error(exc) from None
        if self._failures:
            logger.info("%s: connected to %s again", self._name, self._target.display)
        else:
            logger.info(
                "%s: connected to %s (PostgreSQL %s)",
                self._name,
                self._target.display,
                facts.version_num,
            )
        self._failures = 0
        return facts

    def ensure_facts(self, *, max_age: float) -> ServerFacts:
        """Connected server facts, re-read when older than ``max_age`` seconds."""
        facts = self.connect()
        if time.monotonic() - facts.checked_at <= max_age:
            return facts
        try:
            return self.refresh_facts()
        except psycopg.Error as exc:
            if classify(exc) is Reason.CONNECTION:
                self._fail(exc)
            raise self._error(exc) from None

    def refresh_facts(self) -> ServerFacts:
        probes = {"relations": self._probe_relations, "settings": self._probe_settings}
        row = self._execute(_FACTS_SQL, probes).rows[0]
        self.facts = ServerFacts(
            version_num=int(row[0]),
            in_recovery=bool(row[1]),
            extensions=frozenset(row[2]),
            relations=frozenset(row[3]),
            checked_at=time.monotonic(),
            settings={name: value for name, value in row[4]},
        )
        return self.facts

    def run(
        self,
        sql: str,
        params: Mapping[str, Any],
        *,
        timeout: float,
        lock_timeout: float,
        max_rows: int,
    ) -> QueryResult:
        """Run one check's statement under its own timeouts; raises CheckError."""
        try:
            if self._timeouts == (timeout, lock_timeout) or self._conn is None:
                return self._execute(sql, params, max_rows=max_rows)
            # New timeouts travel in the same round trip as the statement (pipeline mode).
            self._timeouts = None
            with self._conn.pipeline() as pipeline, self._conn.cursor() as cur:
                cur.execute(
                    b"SELECT set_config('statement_timeout', %(t)s, false),"
                    b" set_config('lock_timeout', %(l)s, false)",
                    {"t": _ms(timeout), "l": _ms(lock_timeout)},
                )
                cur.execute(sql.encode(), params)
                pipeline.sync()
                result = _read(cur, max_rows)
            self._timeouts = (timeout, lock_timeout)
            return result
        except psycopg.Error as exc:
            if classify(exc) is Reason.CONNECTION:
                self._fail(exc)
            raise self._error(exc) from None

    def _execute(
        self, sql: str, params: Mapping[str, Any], *, max_rows: int | None = None
    ) -> QueryResult:
        if self._conn is None:
            raise psycopg.OperationalError("not connected")
        with self._conn.cursor() as cur:
            cur.execute(sql.encode(), params)
            return _read(cur, max_rows)

    def _describe(self, exc: BaseException) -> str:
        """The first line of an error, redacted: safe for logs and metrics' neighbours."""
        text = str(exc).strip()
        return redact(text.splitlines()[0] if text else type(exc).__name__, self._target.secrets)

    def _error(self, exc: psycopg.Error) -> CheckError:
        sqlstate = getattr(exc, "sqlstate", None)
        return CheckError(classify(exc), self._describe(exc), sqlstate=sqlstate)

    def _fail(self, exc: BaseException) -> None:
        """Drop the connection and schedule the next attempt with capped, jittered backoff."""
        self.close()
        self._failures += 1
        delay = min(self._max_backoff, 0.25 * 2 ** min(self._failures, 10))
        self._next_attempt = time.monotonic() + random.uniform(delay / 2, delay)  # noqa: S311
        if self._failures == 1:
            logger.warning(
                "%s: lost the database (%s): %s",
                self._name,
                self._target.display,
                self._describe(exc),
            )

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self.facts = None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                logger.debug("%s: error while closing", self._name, exc_info=True)

    def cancel(self) -> None:
        """Ask the server to cancel the running statement (from another thread)."""
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                conn.cancel_safe(timeout=2.0)
            except psycopg.Error:
                logger.debug("%s: cancel failed", self._name, exc_info=True)
