"""A hung network path, a terminated session and a restarted server, for real: the exporter says so
at once and is back at once, every check run again long before its interval comes round.

Every check here runs each 60 s unless the test says otherwise, and every wait is a bounded poll of
at most 30 s: a check that ran again within the poll ran again before its interval, whatever the
machine's speed. The hung path is ``tests/support/proxy.py``, a proxy that stops relaying and keeps
its sockets open.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from pg_runbook_exporter.config import Config
from pg_runbook_exporter.database_url import parse_database_url
from pg_runbook_exporter.errors import CheckError, FailureReason
from pg_runbook_exporter.pgserver.throwaway import ThrowawayServer
from pg_runbook_exporter.session import APPLICATION_NAME, Session
from tests.conftest import PortalDb, Server, Servers
from tests.support.collect import Scrape, Serving, configured, serving, wait_for
from tests.support.proxy import HangingProxy

CHECKS = ("server", "connections", "locks")
SESSION_LOGGER = "pg_runbook_exporter.session"


def every_minute(*, interval: float = 60.0, timeout: float = 2.0) -> Config:
    return configured(only=CHECKS, interval=interval, timeout=timeout)


@contextlib.contextmanager
def proxied(db: PortalDb, *, connect_timeout: str = "2") -> Iterator[tuple[HangingProxy, str]]:
    """A proxy in front of ``db``'s server and the exporter's URL through it."""
    proxy = HangingProxy(db.server.tcp_address())
    host, port = db.server.tcp_address()
    dsn = db.monitor_dsn.replace(f"@{host}:{port}/", f"@127.0.0.1:{proxy.port}/")
    assert dsn != db.monitor_dsn
    try:
        yield proxy, f"{dsn}?connect_timeout={connect_timeout}"
    finally:
        proxy.close()


def exporter_pids(server: Server, dbname: str) -> list[int]:
    rows = server.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = %s",
        (APPLICATION_NAME, dbname),
    )
    return [int(row[0]) for row in rows]


def last_successes(served: Serving) -> dict[str, float | None]:
    return {name: served.state(name).last_success_monotonic for name in CHECKS}


def all_ran_again(served: Serving, before: dict[str, float | None]) -> Callable[[], bool]:
    """Every check succeeded since ``before`` (its last success moved) and the database is up."""

    def holds() -> bool:
        now = last_successes(served)
        return served.cache.snapshot().up is True and all(
            now[name] is not None and now[name] != before[name] for name in CHECKS
        )

    return holds


def until(served: Serving, predicate: Callable[[Scrape], bool], *, what: str) -> Scrape:
    """Scrape until ``predicate`` holds for a scrape (at most 30 s); return that scrape."""
    found: list[Scrape] = []

    def holds() -> bool:
        scrape = served.scrape()
        found[:] = [scrape]
        return predicate(scrape)

    wait_for(holds, timeout=30, what=what)
    return found[0]


def healthy(served: Serving) -> dict[str, float | None]:
    wait_for(lambda: all(served.state(name).success for name in CHECKS), what="a first collection")
    return last_successes(served)


def session_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == SESSION_LOGGER]


def assert_lost_once_and_back_once(caplog: pytest.LogCaptureFixture) -> None:
    """Since ``caplog.clear()``: one line when the session was lost, one when it was back; and no
    traceback anywhere."""
    lines = session_lines(caplog)
    assert len(lines) == 2, lines
    assert "lost the database" in lines[0], lines
    assert lines[1].endswith(" again"), lines
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks"


# --- a hung network path -------------------------------------------------------------------


def test_a_hung_connection_fails_by_timeout_and_pgrb_up_says_0(
    portal_db: PortalDb, caplog: pytest.LogCaptureFixture
) -> None:
    """Fails without a client-side deadline: the run waits forever, pgrb_up stays 1 and the check
    keeps its last success (the poll gives up after 30 s)."""
    caplog.set_level(logging.INFO)
    config = every_minute(interval=1.0, timeout=1.0)  # deadline: 1 s + 2 s grace
    with proxied(portal_db) as (proxy, dsn), serving(dsn, config) as served:
        healthy(served)
        assert served.scrape().value("pgrb_up") == 1
        proxy.hang()

        def down(scrape: Scrape) -> bool:
            return scrape.value("pgrb_up") == 0 and all(
                scrape.value("pgrb_check_success", check=name) == 0 for name in CHECKS
            )

        failed = until(served, down, what="pgrb_up 0 and every check failed")
        timeouts = sum(
            failed.value("pgrb_check_errors_total", check=name, reason="timeout") for name in CHECKS
        )
        # The one run that hung; the others failed for want of a connection, since reconnecting
        # through the hung path gives up too (connect_timeout).
        assert timeouts == 1

        before = last_successes(served)
        proxy.relay()
        wait_for(all_ran_again(served, before), timeout=30, what="recovery once the path relays")
    assert "lost the database" in session_lines(caplog)[-2]
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks"


def test_the_facts_query_on_a_hung_path_ends_at_its_deadline(portal_db: PortalDb) -> None:
    """Fails without the deadline on the facts query: ensure_facts waits forever."""
    with proxied(portal_db) as (proxy, dsn):
        session = Session(target=parse_database_url(dsn), default_timeout=0.5)
        try:
            session.connect()
            proxy.hang()
            with pytest.raises(CheckError) as raised:
                session.ensure_facts(max_age=0)
            assert raised.value.reason is FailureReason.TIMEOUT
            assert "2.5s" in raised.value.message  # 0.5 s statement timeout + 2 s grace
            assert not session.connected
        finally:
            session.close()


@pytest.mark.parametrize("connect_timeout", ["2", "0"])
def test_connecting_through_a_hung_path_gives_up(portal_db: PortalDb, connect_timeout: str) -> None:
    """Fails if a connection attempt is unbounded: with ``connect_timeout=0`` libpq would wait
    forever, and the exporter replaces it by its default (5 s)."""
    with proxied(portal_db, connect_timeout=connect_timeout) as (proxy, dsn):
        proxy.hang()
        session = Session(target=parse_database_url(dsn))
        with pytest.raises(CheckError) as raised:
            session.connect()
        assert raised.value.reason is FailureReason.CONNECTION
        assert "timeout" in raised.value.message
        assert proxy.accepted == 1


# --- the session ended by the server -------------------------------------------------------


def test_a_terminated_session_is_back_and_every_check_ran_again_at_once(
    portal_db: PortalDb, caplog: pytest.LogCaptureFixture
) -> None:
    """Fails when the loss is noticed only at the next run (60 s away): the poll gives up."""
    caplog.set_level(logging.INFO)
    with serving(portal_db.monitor_dsn, every_minute()) as served:
        before = healthy(served)
        caplog.clear()
        (old,) = exporter_pids(portal_db.server, portal_db.name)
        portal_db.server.execute("SELECT pg_terminate_backend(%s)", (old,))
        wait_for(all_ran_again(served, before), timeout=30, what="every check to run again")
        (new,) = exporter_pids(portal_db.server, portal_db.name)
        assert new != old
    assert_lost_once_and_back_once(caplog)


def test_a_session_terminated_mid_statement_costs_exactly_one_log_line(
    portal_db: PortalDb, caplog: pytest.LogCaptureFixture
) -> None:
    """The backend is ended while a statement is in flight (in pipeline mode). Fails when psycopg
    logs a warning of its own besides the exporter's line (``error ignored terminating
    <psycopg.Pipeline …>``), or when the loss is logged more than once."""
    caplog.set_level(logging.DEBUG)
    target = parse_database_url(portal_db.monitor_dsn)
    session = Session(target=target, name="session 1")
    failures: list[CheckError] = []

    def run() -> None:
        try:
            session.run("SELECT pg_sleep(60)", {}, timeout=120, lock_timeout=1, max_rows=1)
        except CheckError as error:
            failures.append(error)

    try:
        session.connect()
        worker = threading.Thread(target=run)
        worker.start()

        def sleeping() -> list[tuple[object, ...]]:
            return portal_db.server.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = %s"
                " AND wait_event = 'PgSleep'",
                (APPLICATION_NAME, portal_db.name),
            )

        wait_for(lambda: bool(sleeping()), timeout=30, what="the statement to be running")
        caplog.clear()
        portal_db.server.execute("SELECT pg_terminate_backend(%s)", (sleeping()[0][0],))
        worker.join(30)
        assert not worker.is_alive()
    finally:
        session.close()
    assert [f.reason for f in failures] == [FailureReason.CONNECTION]
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            SESSION_LOGGER,
            "WARNING",
            f"session 1: lost the database ({target.display}): "
            "consuming input failed: server closed the connection unexpectedly",
        )
    ]


@pytest.mark.fault
def test_after_a_restart_the_session_is_back_and_every_check_ran_again_at_once(
    own_server: Callable[..., ThrowawayServer], caplog: pytest.LogCaptureFixture
) -> None:
    """Fails when the restart is noticed only at the next run (60 s away): the poll gives up."""
    caplog.set_level(logging.INFO)
    server = own_server()
    db = Servers().portal_db(server)
    with serving(db.monitor_dsn, every_minute()) as served:
        before = healthy(served)
        caplog.clear()
        server.stop("fast")
        wait_for(lambda: served.cache.snapshot().up is False, timeout=30, what="pgrb_up 0")
        server.start()
        wait_for(all_ran_again(served, before), timeout=30, what="every check to run again")
    assert_lost_once_and_back_once(caplog)


# --- too many connections ------------------------------------------------------------------


def refusals(server: ThrowawayServer) -> int:
    """Connection attempts the server refused for want of slots (SQLSTATE 53300), from its log."""
    return server.log_file.read_text(encoding="utf-8", errors="replace").count(
        "too many connections for role"
    )


@contextlib.contextmanager
def no_slot_left(db: PortalDb) -> Iterator[None]:
    """No new session for the monitoring role; those open stay. (Filling max_connections would
    not do: the terminated session's slot is free again the moment it ends.) The refusal is the
    same SQLSTATE 53300, too_many_connections."""
    role = sql.Identifier(db.monitor_role)
    db.server.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT 0").format(role))
    try:
        yield
    finally:
        db.server.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT -1").format(role))


@pytest.mark.fault
def test_a_session_refused_for_too_many_connections_backs_off_with_one_log_line(
    own_server: Callable[..., ThrowawayServer], caplog: pytest.LogCaptureFixture
) -> None:
    """Fails if a refusal for want of slots is retried at once (a second refusal right after the
    first) or logged per retry; and if the exporter does not come back once slots are free."""
    caplog.set_level(logging.INFO)
    server = own_server()
    db = Servers().portal_db(server)
    with serving(db.monitor_dsn, every_minute()) as served:
        before = healthy(served)
        caplog.clear()
        (old,) = exporter_pids(server, db.name)
        with no_slot_left(db):
            refused = refusals(server)
            server.execute("SELECT pg_terminate_backend(%s)", (old,))
            # the loss is noticed and the reconnection refused; the session backs off from there
            wait_for(lambda: refusals(server) > refused, timeout=30, what="a refused reconnection")
            wait_for(lambda: refusals(server) >= refused + 3, timeout=30, what="two more retries")
            assert served.scrape().value("pgrb_up") == 0
        wait_for(all_ran_again(served, before), timeout=30, what="every check to run again")
    assert_lost_once_and_back_once(caplog)


@pytest.mark.fault
def test_only_too_many_connections_backs_off_the_first_retry(
    own_server: Callable[..., ThrowawayServer],
) -> None:
    """Fails if the first retry after a lost session waits (no backoff on one failure), or if the
    first retry after SQLSTATE 53300 does not (it reaches the server again: a second refusal)."""
    server = own_server()
    db = Servers().portal_db(server)
    session = Session(target=parse_database_url(db.monitor_dsn), max_backoff=60)
    try:
        session.connect()
        server.execute("SELECT pg_terminate_backend(%s)", (exporter_pids(server, db.name)[0],))
        with pytest.raises(CheckError):
            session.ensure_facts(max_age=0)
        assert session.lost
        assert session.liveness.retry_in() == 0  # one failure: reconnect at once
        session.connect()
        with no_slot_left(db):
            refused = refusals(server)
            server.execute("SELECT pg_terminate_backend(%s)", (exporter_pids(server, db.name)[0],))
            with pytest.raises(CheckError):
                session.ensure_facts(max_age=0)
            assert session.liveness.retry_in() == 0
            with pytest.raises(CheckError) as first:
                session.connect()  # refused: 53300
            assert "too many connections for role" in first.value.message
            with pytest.raises(CheckError) as second:
                session.connect()
            assert "next attempt in" in second.value.message
            assert refusals(server) == refused + 1
            assert session.liveness.retry_in() > 0
    finally:
        session.close()


@pytest.mark.fault
def test_a_server_with_every_slot_taken_is_retried_only_after_a_backoff(
    own_server: Callable[..., ThrowawayServer],
) -> None:
    """max_connections used up, as in the runbook's saturation: fails if the refusal ("remaining
    connection slots are reserved", 53300) is retried at once, as a first failure would be."""
    server = own_server(max_connections=6)
    db = Servers().portal_db(server)
    held: list[psycopg.Connection[tuple[object, ...]]] = []
    session = Session(target=parse_database_url(db.monitor_dsn), max_backoff=60)
    try:
        with pytest.raises(psycopg.OperationalError, match="reserved"):
            while True:
                held.append(psycopg.connect(db.monitor_dsn, autocommit=True))
        with pytest.raises(CheckError) as first:
            session.connect()
        assert "remaining connection slots are reserved" in first.value.message
        with pytest.raises(CheckError) as second:
            session.connect()
        assert "next attempt in" in second.value.message
    finally:
        session.close()
        for conn in held:
            conn.close()
