"""The runbook's emergencies, caused for real: the exporter stays up, answers scrapes, shows the
fault as a metric and recovers by itself.

Each test runs the real pipeline (scheduler, cache, collector, web server) in-process with every
check on a 1 s interval, and scrapes it over HTTP with a 1 s client timeout: a scrape that waited
for the database would fail the test. Recovery "within one interval" is asserted by counting
failed runs, not by timing: after the fault ends, no check fails more than once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pg_runbook_exporter.config import Check, Config, load_config, parse_config
from pg_runbook_exporter.pgserver.throwaway import ThrowawayServer, scram_verifier
from pg_runbook_exporter.scheduler import Scheduler
from pg_runbook_exporter.session import APPLICATION_NAME
from tests.conftest import MONITOR_PASSWORD, MONITOR_ROLE, PortalDb, Server, Servers
from tests.support.collect import FILE_CHECKS, Scrape, serving, wait_for
from tests.support.unvetted import unvetted_config

pytestmark = pytest.mark.fault

SCRAPE_TIMEOUT = 1.0
# Skipped on the servers tests start: their logging_collector is off (Debian's default).
OFF_HERE = ("server_logs", *FILE_CHECKS)


# Left out on the session's shared server: pg_stat_statements is cluster-wide there, and keeps the
# statements of databases other tests created and dropped.
SHARED = ("statements",)


def every_second(config: Config, *, extra: str = "", drop: tuple[str, ...] = ()) -> Config:
    """``config`` with every check due each second, ``extra`` checks added, ``drop`` left out."""
    checks: list[Check] = [
        dataclasses.replace(
            c,
            interval=1.0,
            timeout=min(c.timeout, 1.0),
            lock_timeout=min(c.lock_timeout, 1.0),
        )
        for c in config.checks
        if c.name not in drop
    ]
    if extra:
        checks += parse_config(extra, source="extra.yaml").checks
    return dataclasses.replace(config, checks=tuple(checks))


@dataclass
class Running:
    config: Config
    scheduler: Scheduler
    port: int

    def scrape(self) -> Scrape:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as reply:
            assert reply.status == 200
            return Scrape.parse(reply.read().decode())

    def until(
        self, predicate: Callable[[Scrape], bool], *, what: str, timeout: float = 30
    ) -> Scrape:
        """Scrape until ``predicate`` holds for a scrape; return that scrape."""
        found: list[Scrape] = []

        def holds() -> bool:
            scrape = self.scrape()
            if predicate(scrape):
                found.append(scrape)
                return True
            return False

        wait_for(holds, timeout=timeout, what=what)
        return found[0]

    def names(self) -> list[str]:
        return [c.name for c in self.config.checks if c.name not in OFF_HERE]

    def all_succeeded(self, scrape: Scrape, *, but: tuple[str, ...] = ()) -> bool:
        return scrape.get("pgrb_up") == 1 and all(
            scrape.get("pgrb_check_success", check=name) == 1
            for name in self.names()
            if name not in but
        )

    def errors(self, scrape: Scrape) -> dict[str, float]:
        """Failed runs per check, whatever the reason."""
        totals = dict.fromkeys(self.names(), 0.0)
        for labels, value in scrape.series("pgrb_check_errors_total").items():
            if dict(labels)["check"] in totals:
                totals[dict(labels)["check"]] += value
        return totals


@contextlib.contextmanager
def exporter(dsn: str, config: Config, *, connections: int = 1) -> Iterator[Running]:
    """The exporter's pipeline and web server, as ``run`` wires them."""
    with serving(dsn, config, connections=connections) as served:
        yield Running(config=config, scheduler=served.scheduler, port=served.port)


def exporter_backends(server: Server, *, dbname: str = "postgres") -> list[tuple[Any, ...]]:
    return server.execute(
        "SELECT pid, state, query FROM pg_stat_activity WHERE application_name = %s",
        (APPLICATION_NAME,),
        dbname=dbname,
    )


def portal(server: ThrowawayServer) -> PortalDb:
    """A portal database on a server of the test's own, with pg_stat_statements: no check skips."""
    return with_statements(Servers().portal_db(server))


def with_statements(db: PortalDb) -> PortalDb:
    db.server.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", dbname=db.name)
    return db


def assert_recovered_within_one_interval(
    running: Running, at_fault_end: Scrape, recovered: Scrape
) -> None:
    before, after = running.errors(at_fault_end), running.errors(recovered)
    again = {name: after[name] - before[name] for name in before}
    assert all(n <= 1 for n in again.values()), again


# --- the database goes away ----------------------------------------------------------------


def test_database_stopped_then_started_shows_up_0_then_recovers_by_itself(
    own_server: Callable[..., ThrowawayServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = own_server()
    db = portal(server)
    running: Running
    with exporter(db.monitor_dsn, every_second(load_config())) as running:
        healthy = running.until(running.all_succeeded, what="a first healthy collection")
        started = healthy.value("pgrb_postmaster_start_time_seconds")

        server.stop("fast")
        down = running.until(
            lambda s: s.get("pgrb_up") == 0 and s.get("pgrb_check_success", check="server") == 0,
            what="pgrb_up 0 while the database is stopped",
        )
        assert down.get("pgrb_check_errors_total", check="server", reason="other") == 0
        # Down long enough for reconnection attempts to back off as far as they go.
        running.until(
            lambda s: s.value("pgrb_check_errors_total", check="server", reason="connection") >= 8,
            what="eight failed runs of the server check",
        )
        for _ in range(10):  # scrapes keep answering (each within SCRAPE_TIMEOUT)
            assert running.scrape().get("pgrb_up") == 0

        server.start()
        at_start = running.scrape()
        recovered = running.until(running.all_succeeded, what="recovery after the restart")
        assert_recovered_within_one_interval(running, at_start, recovered)
        assert recovered.value("pgrb_postmaster_start_time_seconds") > started
    lost = [r for r in caplog.records if "lost the database" in r.getMessage()]
    assert len(lost) == 1, [r.getMessage() for r in lost]  # once, not once per retry
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks"


def test_terminating_every_connection_kills_the_exporters_session_and_it_reconnects(
    portal_db: PortalDb, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with exporter(portal_db.monitor_dsn, every_second(load_config(), drop=SHARED)) as running:
        healthy = running.until(running.all_succeeded, what="a first healthy collection")
        (old_pid,) = [row[0] for row in exporter_backends(portal_db.server, dbname=portal_db.name)]
        # The runbook's "Kill Stuck Connections" › "Terminate all connections except current".
        killed = portal_db.server.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname = current_database()",
            dbname=portal_db.name,
        )
        assert (True,) in killed
        recovered = running.until(
            lambda s: (
                running.all_succeeded(s)
                and [r[0] for r in exporter_backends(portal_db.server, dbname=portal_db.name)]
                not in ([], [old_pid])
            ),
            what="a new session and every check succeeding again",
        )
        assert_recovered_within_one_interval(running, healthy, recovered)
        # The killed session was noticed, whether by a run it broke (then counted in that check's
        # errors) or idle, by its socket (then no run failed: every check ran again at once).
        lost = [r for r in caplog.records if "lost the database" in r.getMessage()]
        assert len(lost) == 1, [r.getMessage() for r in lost]
        assert len(exporter_backends(portal_db.server, dbname=portal_db.name)) == 1


# --- locks ---------------------------------------------------------------------------------


@contextlib.contextmanager
def access_exclusive_lock(db: PortalDb, how: str) -> Iterator[None]:
    """id_mappings under an ACCESS EXCLUSIVE lock: held by LOCK TABLE, or queued by VACUUM FULL."""
    holder = psycopg.connect(db.dsn, autocommit=False)
    vacuum: psycopg.Connection[Any] | None = None
    thread: threading.Thread | None = None
    try:
        if how == "lock table":
            holder.execute("LOCK TABLE id_mappings IN ACCESS EXCLUSIVE MODE")
        else:
            # A reader keeps VACUUM FULL waiting for its ACCESS EXCLUSIVE lock, as a long app
            # transaction does in a maintenance window; everyone after it queues behind.
            holder.execute("SELECT count(*) FROM id_mappings")
            vacuum = psycopg.connect(db.dsn, autocommit=True)
            thread = threading.Thread(
                target=vacuum.execute, args=("VACUUM FULL id_mappings",), daemon=True
            )
            thread.start()
            wait_for(
                lambda: (
                    db.server.execute(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted "
                        "AND mode = 'AccessExclusiveLock' AND relation = 'id_mappings'::regclass",
                        dbname=db.name,
                    )
                    == [(1,)]
                ),
                what="VACUUM FULL to wait for its lock",
            )
        yield
    finally:
        holder.rollback()
        holder.close()
        if thread is not None and vacuum is not None:
            thread.join(30)
            vacuum.close()


@pytest.mark.parametrize("how", ["lock table", "vacuum full"])
def test_an_access_exclusive_lock_costs_only_the_checks_that_read_the_table(
    portal_db: PortalDb, how: str
) -> None:
    config = every_second(load_config(), drop=SHARED)
    readers = {c.name: c for c in config.checks if "id_mappings" in c.requires.relations}
    assert readers, "some check reads id_mappings"
    longest = max(c.timeout for c in readers.values())
    with exporter(portal_db.monitor_dsn, config) as running:
        running.until(running.all_succeeded, what="a first healthy collection")
        with access_exclusive_lock(portal_db, how):

            def gave_up_repeatedly(scrape: Scrape) -> bool:
                return all(
                    (scrape.get("pgrb_check_errors_total", check=name, reason="lock_timeout") or 0)
                    >= 1 + longest
                    for name in readers
                )

            # Held past the statement timeout of every check that reads the table.
            locked = running.until(gave_up_repeatedly, what="the table's readers to give up")
            for name in running.names():
                if name in readers:
                    # The lock timeout ended every wait; none ran into its statement timeout.
                    errors = locked.value("pgrb_check_errors_total", check=name, reason="timeout")
                    assert errors == 0, name
                    assert locked.value("pgrb_check_success", check=name) == 0, name
                else:
                    assert locked.value("pgrb_check_success", check=name) == 1, name
            assert locked.get("pgrb_table_size_bytes", relname="id_mappings") is None
            assert locked.value("pgrb_table_size_bytes", relname="users") > 0
            assert locked.value("pgrb_table_live_rows", relname="id_mappings") == 0
            if how == "vacuum full":  # the VACUUM waits, and the locks check says so
                assert locked.value("pgrb_lock_waiting_sessions") == 1
                assert locked.value("pgrb_blocked_sessions") == 1
            at_release = running.scrape()
        recovered = running.until(running.all_succeeded, what="recovery once the lock is gone")
        assert_recovered_within_one_interval(running, at_release, recovered)
        assert recovered.value("pgrb_table_size_bytes", relname="id_mappings") > 0


# --- too many connections --------------------------------------------------------------------


def test_max_connections_exhausted_by_others_the_exporter_keeps_its_sessions(
    own_server: Callable[..., ThrowawayServer],
) -> None:
    server = own_server(max_connections=10)  # 3 reserved for superusers: 7 usable
    db = portal(server)
    server.execute(
        sql.SQL("CREATE ROLE app LOGIN PASSWORD {}").format(sql.Literal(scram_verifier("app")))
    )
    server.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO app").format(sql.Identifier(db.name)))
    app_dsn = server.dsn(user="app", password="app", dbname=db.name)
    clients: list[psycopg.Connection[Any]] = []
    most = 0
    try:
        with exporter(db.monitor_dsn, every_second(load_config()), connections=2) as running:
            running.until(running.all_succeeded, what="a first healthy collection")
            wait_for(lambda: len(exporter_backends(server)) == 2, what="both exporter sessions")
            pids = sorted(row[0] for row in exporter_backends(server))
            refused = None
            while refused is None:
                try:
                    clients.append(psycopg.connect(app_dsn, autocommit=True))
                except psycopg.OperationalError as exc:
                    refused = str(exc)
            assert len(clients) == 5  # 7 usable slots, 2 of them the exporter's
            assert "remaining connection slots are reserved" in refused
            at_saturation = running.scrape()
            # two checks report it, each on its own run: wait for both to have run since
            saturated = running.until(
                lambda s: (
                    running.all_succeeded(s)
                    and s.get("pgrb_connections_usage_ratio") == 7 / 7
                    and sum(s.series("pgrb_connections").values()) == 6
                ),
                what="the saturation to be reported",
            )
            for _ in range(20):
                most = max(most, len(exporter_backends(server)))
            assert sorted(row[0] for row in exporter_backends(server)) == pids
            assert running.errors(saturated) == running.errors(at_saturation)
            assert saturated.value("pgrb_connections_usable") == 7
            assert saturated.value("pgrb_max_connections") == 10
            # every slot is used (the exporter's two sessions count); by state, each session does
            # not count itself: the other exporter session and the five app clients (waited for
            # above: a wrong count times out there)
    finally:
        for client in clients:
            client.close()
    assert most == 2


# --- timeouts --------------------------------------------------------------------------------

SLOW = """
checks:
  slow:
    help: Runs past its timeout.
    interval: 1h
    timeout: 500ms
    sql: SELECT 1 AS slept FROM pg_sleep(30)
    metrics: {slept: {name: slept, type: gauge, help: Never set.}}
"""


def active_sleeps(db: PortalDb) -> list[tuple[Any, ...]]:
    return db.server.execute(
        "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s "
        "AND pid <> pg_backend_pid()",
        ("%pg_sleep(30)%",),
        dbname=db.name,
    )


def test_a_check_past_its_timeout_is_cancelled_on_the_server(portal_db: PortalDb) -> None:
    config = unvetted_config(SLOW, source="slow.yaml")  # pg_sleep() is refused at load
    with exporter(portal_db.monitor_dsn, config) as running:
        failed = running.until(
            lambda s: s.get("pgrb_check_success", check="slow") == 0, what="the slow check to fail"
        )
        assert failed.value("pgrb_check_errors_total", check="slow", reason="timeout") == 1
        # The server ended the statement itself: no backend is left running it, and the
        # exporter's one session is idle and kept for the next run.
        assert active_sleeps(portal_db) == []
        backends = exporter_backends(portal_db.server, dbname=portal_db.name)
        assert [row[1] for row in backends] == ["idle"]


def test_stopping_the_exporter_cancels_a_running_check(portal_db: PortalDb) -> None:
    config = unvetted_config(SLOW.replace("timeout: 500ms", "timeout: 1m"), source="slow.yaml")
    with exporter(portal_db.monitor_dsn, config):
        wait_for(lambda: len(active_sleeps(portal_db)) == 1, what="the slow check to run")
    wait_for(
        lambda: (
            active_sleeps(portal_db) == []
            and exporter_backends(portal_db.server, dbname=portal_db.name) == []
        ),
        what="the statement cancelled and the session closed",
    )


# --- a hot standby ---------------------------------------------------------------------------

PRIMARY_ONLY = """
checks:
  primary_only:
    help: Only meaningful on a primary.
    requires: {primary: true}
    sql: SELECT pg_current_wal_lsn() - '0/0'::pg_lsn AS wal_position_bytes
    metrics:
      wal_position_bytes: {name: wal_position_bytes, type: gauge, help: WAL written.}
"""


def test_on_a_hot_standby_primary_only_checks_skip_and_the_rest_work(
    own_server: Callable[..., ThrowawayServer],
) -> None:
    primary = own_server()
    db = portal(primary)
    replica = own_server(standby_of=primary)
    wait_for(
        lambda: (
            replica.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (db.name,))
            == [(1,)]
        ),
        what="the standby to replay the portal database",
    )
    dsn = replica.dsn(user=MONITOR_ROLE, password=MONITOR_PASSWORD, dbname=db.name)
    config = every_second(load_config(), extra=PRIMARY_ONLY)
    with exporter(dsn, config) as running:
        scrape = running.until(
            lambda s: (
                running.all_succeeded(s, but=("primary_only",))
                and s.get("pgrb_check_skipped", check="primary_only") is not None
            ),
            what="every other check to succeed on the standby",
        )
    assert scrape.value("pgrb_in_recovery") == 1
    assert scrape.value("pgrb_check_skipped", check="primary_only", reason="standby") == 1
    assert scrape.get("pgrb_check_success", check="primary_only") is None
    assert scrape.get("pgrb_wal_position_bytes") is None
    assert scrape.series("pgrb_check_skipped").keys() == {
        frozenset({("check", "primary_only"), ("reason", "standby")}),
        frozenset({("check", "server_logs"), ("reason", "setting")}),
        *(frozenset({("check", name), ("reason", "unconfigured")}) for name in FILE_CHECKS),
    }
    assert scrape.value("pgrb_wal_archiving_enabled") == 0


# --- a role without pg_monitor ---------------------------------------------------------------


def test_without_pg_monitor_checks_fail_with_permission_and_check_names_the_grant(
    own_server: Callable[..., ThrowawayServer],
) -> None:
    server = own_server()
    db = portal(server)
    server.execute(sql.SQL("REVOKE pg_monitor FROM {}").format(sql.Identifier(MONITOR_ROLE)))
    config = every_second(load_config())
    with exporter(db.monitor_dsn, config) as running:
        scrape = running.until(
            lambda s: all(
                s.get("pgrb_check_success", check=n) is not None for n in running.names()
            ),
            what="every check to run once",
        )
    failed = {dict(k)["check"]: v for k, v in scrape.series("pgrb_check_success").items() if v == 0}
    assert failed, "pg_monitor grants something the checks need"
    for name in failed:
        assert scrape.value("pgrb_check_errors_total", check=name, reason="permission") >= 1, name
    result = subprocess.run(
        [sys.executable, "-m", "pg_runbook_exporter", "check", "--database.url", db.monitor_dsn],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    for name in failed:
        assert any(
            line.startswith(name + " ") and "FAILED (permission)" in line
            for line in result.stdout.splitlines()
        ), result.stdout
    assert f"GRANT pg_monitor TO {MONITOR_ROLE};" in result.stdout
    assert MONITOR_PASSWORD not in result.stdout + result.stderr
