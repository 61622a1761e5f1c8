"""One read-only PostgreSQL session that cannot hurt the database it watches.

Session options are set at connect time (libpq ``options``), not with ``SET`` in the check's own
string, so a check can never run outside the read-only default; they are read back with the server
facts. After every check run the session is reset (``DISCARD ALL``), so nothing a check changed
(a setting, an advisory lock, a LISTEN) reaches the next one. Errors are classified by SQLSTATE
into the reasons the exporter reports. Every statement has a deadline kept outside its thread
(``liveness.py``), and an idle session the server ended is reported as soon as its socket says so.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg.conninfo
from psycopg import errors as pg_errors

from pg_runbook_exporter.database_url import DatabaseTarget, redact
from pg_runbook_exporter.errors import CheckError, FailureReason
from pg_runbook_exporter.liveness import PROCESS_WATCHER, Liveness, Watcher, ended

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


def classify(exc: BaseException) -> FailureReason:
    """Map a psycopg error to a reason, by SQLSTATE where the server gave one."""
    if isinstance(exc, pg_errors.LockNotAvailable):
        return FailureReason.LOCK_TIMEOUT
    if isinstance(exc, pg_errors.QueryCanceled):
        return FailureReason.TIMEOUT
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return FailureReason.PERMISSION
    sqlstate = getattr(exc, "sqlstate", None) or ""
    # Class 08 (connection exception), 57P0x (admin shutdown, crash, cannot connect now) and
    # errors without SQLSTATE from the client side all mean the session is gone.
    if sqlstate.startswith(("08", "57P")) or (
        isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and not sqlstate
    ):
        return FailureReason.CONNECTION
    return FailureReason.OTHER


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


# A portal table counts as present only as a table: a view (or a table with row-level security)
# of that name would run code of its owner's choosing in the exporter's session.
_FACTS_SQL = """
SELECT current_setting('server_version_num')::int,
       pg_is_in_recovery(),
       ARRAY(SELECT extname::text FROM pg_extension),
       ARRAY(SELECT r FROM unnest(%(relations)s::text[]) AS r
             JOIN pg_class c ON c.oid = to_regclass(r)
             WHERE c.relkind IN ('r', 'p') AND NOT c.relrowsecurity),
       ARRAY(SELECT ARRAY[name, setting] FROM pg_settings WHERE name = ANY(%(settings)s::text[])),
       ARRAY[current_setting('default_transaction_read_only'),
             current_setting('standard_conforming_strings'),
             current_setting('row_security'),
             current_setting('search_path'),
             (SELECT setting FROM pg_settings WHERE name = 'statement_timeout'),
             (SELECT setting FROM pg_settings WHERE name = 'lock_timeout')]
"""
_PINNED = (
    "default_transaction_read_only",
    "standard_conforming_strings",
    "row_security",
    "search_path",
    "statement_timeout",
    "lock_timeout",
)
_TIMEOUTS_SQL = (
    b"SELECT set_config('statement_timeout', %(t)s, false),"
    b" set_config('lock_timeout', %(l)s, false)"
)


def _escape_option(value: str) -> str:
    return value.replace("\\", "\\\\").replace(" ", "\\ ")


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _ms(seconds: float) -> str:
    return f"{_milliseconds(seconds)}ms"


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
        watcher: Watcher | None = None,
        on_idle_readable: Callable[[Session], None] | None = None,
    ) -> None:
        self._target = target
        self._probe_relations = list(probe_relations)
        self._probe_settings = list(probe_settings)
        self._default_timeout = default_timeout
        self._default_lock_timeout = default_lock_timeout
        self._name = name
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self.liveness = Liveness(
            watcher or PROCESS_WATCHER,
            max_backoff=max_backoff,
            on_deadline=self._fail,
            on_idle_readable=on_idle_readable and functools.partial(on_idle_readable, self),
        )
        self.facts: ServerFacts | None = None

    def _connect_kwargs(self) -> dict[str, Any]:
        params: dict[str, Any] = psycopg.conninfo.conninfo_to_dict(self._target.conninfo)
        for key, value in _CONNECTION_DEFAULTS.items():
            params.setdefault(key, value)
        if str(params["connect_timeout"]).strip() == "0":  # libpq would wait forever
            params["connect_timeout"] = _CONNECTION_DEFAULTS["connect_timeout"]
        options = [
            params.pop("options", "") or "",
            # A check never holds a transaction open; if one ever did, the server ends it.
            "-c idle_in_transaction_session_timeout=60s",
            # A statement whose socket was shut down (a stop, a deadline) ends on the server too.
            "-c client_connection_check_interval=1s",
            *(f"-c {name}={_escape_option(value)}" for name, value in self._pinned().items()),
        ]
        params["options"] = " ".join(o for o in options if o)
        params["application_name"] = APPLICATION_NAME
        return params

    def _pinned(self) -> dict[str, str]:
        """The settings every check runs under, as the server reports them back (``_PINNED``)."""
        schema = '"' + (self._target.search_path or "public").replace('"', '""') + '"'
        return {
            "default_transaction_read_only": "on",
            # The vetter reads '…' strings as PostgreSQL does with this on; a role or database
            # default of off would make a backslash end a string it read as text.
            "standard_conforming_strings": "on",
            # A row-level security policy runs its owner's code: fail instead of applying it.
            "row_security": "off",
            # Names in a check mean the catalog's objects first (sqlallow.py), then the portal's.
            "search_path": f"pg_catalog,{schema},pg_temp",
            "statement_timeout": str(_milliseconds(self._default_timeout)),
            "lock_timeout": str(_milliseconds(self._default_lock_timeout)),
        }

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    @property
    def lost(self) -> bool:
        """Not connected since a failure: a new connection is wanted, not only at the next run."""
        return not self.connected and self.liveness.failures > 0

    def connect(self) -> ServerFacts:
        """Open the connection (unless backing off) and read the server facts."""
        if self.connected and self.facts is not None:
            return self.facts
        if (wait := self.liveness.retry_in()) > 0:
            raise CheckError(
                FailureReason.CONNECTION, f"database unreachable; next attempt in {wait:.1f}s"
            )
        try:
            conn = psycopg.connect(autocommit=True, **self._connect_kwargs())
            # DISCARD ALL after every run drops prepared statements (and pgbouncer's transaction
            # pooling breaks them): never prepare.
            conn.prepare_threshold = None
            self._conn = conn
            facts = self.refresh_facts()
        except psycopg.Error as exc:
            self._fail(exc)
            raise self._error(exc) from None
        if self.liveness.failures:
            logger.info("%s: connected to %s again", self._name, self._target.display)
        else:
            logger.info(
                "%s: connected to %s (PostgreSQL %s)",
                self._name,
                self._target.display,
                facts.version_num,
            )
        self.liveness.failures = 0
        return facts

    def ensure_facts(self, *, max_age: float) -> ServerFacts:
        """Connected server facts, re-read when older than ``max_age`` seconds."""
        facts = self.connect()
        if time.monotonic() - facts.checked_at <= max_age:
            return facts
        try:
            return self.refresh_facts()
        except psycopg.Error as exc:
            if classify(exc) is FailureReason.CONNECTION:
                self._fail(exc)
            raise self._error(exc) from None

    def refresh_facts(self) -> ServerFacts:
        probes = {"relations": self._probe_relations, "settings": self._probe_settings}
        row = self._execute(_FACTS_SQL, probes).rows[0]
        expected = self._pinned()
        # (text arrives as bytes from a SQL_ASCII database)
        pinned = [v.decode() if isinstance(v, bytes) else v for v in row[5]]
        wrong = [
            f"{name} is {value!r}, not {expected[name]!r}"
            for name, value in zip(_PINNED, pinned, strict=True)
            if value != expected[name]
        ]
        if wrong:
            # A pooler that drops startup options, say: no check runs on such a session.
            raise psycopg.InterfaceError(
                "the session does not have the settings it was opened with: " + "; ".join(wrong)
            )
        self.facts = ServerFacts(
            version_num=int(row[0]),
            in_recovery=bool(row[1]),
            extensions=frozenset(row[2]),
            relations=frozenset(row[3]),
            checked_at=time.monotonic(),
            settings={name: value for name, value in row[4]},
        )
        self._watch_idle()
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
        """Run one check's statement under its own timeouts, then reset the session.

        Raises CheckError. Whatever the statement did to the session, the next one starts from
        the state the connection was opened with, or on a new connection.
        """
        failure: psycopg.Error | None = None
        try:
            if self._conn is None:
                raise psycopg.OperationalError("not connected")
            # The timeouts travel in the same round trip as the statement (pipeline mode), every
            # run: a check never runs under timeouts some earlier statement left behind.
            with (
                self.liveness.deadline(self._conn.pgconn.socket, timeout),
                self._conn.pipeline() as pipeline,
                self._conn.cursor() as cur,
            ):
                try:
                    cur.execute(_TIMEOUTS_SQL, {"t": _ms(timeout), "l": _ms(lock_timeout)})
                    cur.execute(sql.encode(), params)
                    pipeline.sync()
                    result = _read(cur, max_rows)
                except psycopg.Error as exc:  # not raised through the pipeline's exit, where
                    failure = exc  # psycopg would log a lost connection a second time
        except psycopg.Error as exc:
            failure = failure or exc  # an error from ending the pipeline comes after the first
        if failure is not None:
            if classify(failure) is FailureReason.CONNECTION:
                self._fail(failure)
                raise self._error(failure) from None
            error = self._error(failure)
            self._reset(timeout)
            raise error from None
        self._reset(timeout)
        return result

    def check_idle(self) -> bool:
        """After the idle socket became readable: whether the session is still there."""
        if (error := ended(self._conn)) is None:
            self._watch_idle()
            return True
        self._fail(error)  # dropped, one log line
        return False

    def _watch_idle(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self.liveness.idle(self._conn.pgconn.socket)

    def _reset(self, timeout: float) -> None:
        """Back to the connection's start: settings, role, advisory locks, LISTENs, temp tables
        (under the check's ``timeout``, which the check set for the session)."""
        conn = self._conn
        if conn is None:
            return
        try:
            with self.liveness.deadline(conn.pgconn.socket, timeout):
                conn.execute(b"DISCARD ALL")
        except CheckError:
            return  # past the deadline: dropped and logged already
        except psycopg.Error as exc:
            if classify(exc) is FailureReason.CONNECTION:
                self._fail(exc)
                return
            # Not reset, never reused: the next run opens a new connection.
            level = logging.DEBUG if classify(exc) is FailureReason.TIMEOUT else logging.WARNING
            logger.log(
                level, "%s: reset failed (%s); reconnecting", self._name, self._describe(exc)
            )
            self.close()
            return
        self._watch_idle()

    def _execute(
        self, sql: str, params: Mapping[str, Any], *, max_rows: int | None = None
    ) -> QueryResult:
        if self._conn is None:
            raise psycopg.OperationalError("not connected")
        timeout = self._default_timeout
        with self.liveness.deadline(self._conn.pgconn.socket, timeout), self._conn.cursor() as cur:
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
        """Drop the connection and schedule the next attempt (``liveness.retry_delay``)."""
        self.close()
        self.liveness.failed(exc)
        if self.liveness.failures == 1:
            logger.warning(
                "%s: lost the database (%s): %s",
                self._name,
                self._target.display,
                self._describe(exc),
            )

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self.facts = None
        self.liveness.unwatch()
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                logger.debug("%s: error while closing", self._name, exc_info=True)
