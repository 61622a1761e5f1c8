"""Background collection and the cached scrape, against a real PostgreSQL."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from typing import Any

import psycopg

from pg_runbook_exporter.config import Config, SqlVariant
from pg_runbook_exporter.errors import FailureReason
from pg_runbook_exporter.session import APPLICATION_NAME
from tests.conftest import PortalDb
from tests.support.collect import Scrape, collect, pipeline_for, serving, wait_for
from tests.support.unvetted import unvetted_config


def config_of(text: str) -> Config:
    """Checks that sleep or read tables the test made: past the vetting (test_sqlvet.py)."""
    return unvetted_config(text, source="test.yaml")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def exporter_backends(db: PortalDb) -> list[tuple[Any, ...]]:
    return db.server.execute(
        "SELECT pid, state, query FROM pg_stat_activity WHERE application_name = %s",
        (APPLICATION_NAME,),
    )


SLOW_AND_FAST = """
checks:
  slow:
    help: A check that takes a while.
    interval: 1h
    timeout: 30s
    sql: SELECT 1 AS done FROM pg_sleep(20)
    metrics: {done: {name: slow_done, type: gauge, help: Set when the sleep ended.}}
  fast:
    help: A quick check.
    interval: 1h
    timeout: 5s
    sql: SELECT 42 AS answer
    metrics: {answer: {name: answer, type: gauge, help: The answer.}}
"""


def test_a_scrape_is_served_while_a_check_is_still_running(portal_db: PortalDb) -> None:
    config = config_of(SLOW_AND_FAST)
    with serving(portal_db.monitor_dsn, config, connections=2) as exporter:
        wait_for(lambda: exporter.state("fast").success is True, what="the fast check")

        def slow_is_running() -> bool:
            return any(
                "pg_sleep(20)" in row[2] and row[1] == "active"
                for row in exporter_backends(portal_db)
            )

        wait_for(slow_is_running, what="the slow check to be running on the server")
        scrape = exporter.scrape()
        assert slow_is_running()  # the scrape above was answered while the query still ran
        assert scrape.value("pgrb_answer") == 42
        assert scrape.get("pgrb_slow_done") is None
        assert scrape.get("pgrb_check_success", check="slow") is None


def test_more_scrapers_never_mean_more_queries(portal_db: PortalDb) -> None:
    portal_db.server.execute(
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements", dbname=portal_db.name
    )
    config = config_of("""
checks:
  marker:
    help: A check whose statement is easy to find.
    interval: 1h
    sql: SELECT 7 AS pgrb_scrape_marker
    metrics: {pgrb_scrape_marker: {name: marker, type: gauge, help: Seven.}}
""")
    with serving(portal_db.monitor_dsn, config) as exporter:
        wait_for(lambda: exporter.state("marker").success is True, what="the first run")
        threads = [
            threading.Thread(target=lambda: [exporter.scrape() for _ in range(25)])
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert exporter.scrape().value("pgrb_marker") == 7
    calls = portal_db.server.execute(
        "SELECT sum(calls) FROM pg_stat_statements WHERE query LIKE '%%pgrb_scrape_marker%%'",
        dbname=portal_db.name,
    )
    assert calls[0][0] == 1  # 201 scrapes, one query


def test_rows_that_disappear_from_a_result_disappear_from_the_output(portal_db: PortalDb) -> None:
    portal_db.server.execute(
        "CREATE TABLE items (name text, n int); INSERT INTO items VALUES ('a', 1), ('b', 2);"
        "GRANT SELECT ON items TO pgrb_exporter;",
        dbname=portal_db.name,
    )
    config = config_of("""
checks:
  items:
    help: Items.
    interval: 100ms
    timeout: 100ms
    lock_timeout: 50ms
    sql: SELECT name, n FROM items
    labels: [name]
    metrics: {n: {name: item, type: gauge, help: An item.}}
""")
    with serving(portal_db.monitor_dsn, config) as exporter:
        wait_for(lambda: exporter.scrape().get("pgrb_item", name="b") == 2, what="item b")
        portal_db.server.execute("DELETE FROM items WHERE name = 'b'", dbname=portal_db.name)
        wait_for(lambda: exporter.scrape().get("pgrb_item", name="b") is None, what="b to go")
        assert exporter.scrape().value("pgrb_item", name="a") == 1


def test_a_failed_check_serves_its_last_values_for_three_intervals_then_drops_them(
    portal_db: PortalDb,
) -> None:
    portal_db.server.execute(
        "CREATE TABLE flaky (n int); INSERT INTO flaky VALUES (5);"
        "GRANT SELECT ON flaky TO pgrb_exporter;",
        dbname=portal_db.name,
    )
    config = config_of("""
checks:
  flaky:
    help: Reads a table the test drops.
    interval: 10s
    sql: SELECT n FROM flaky
    metrics: {n: {name: flaky, type: gauge, help: Five.}}
""")
    clock = FakeClock()
    pipeline = pipeline_for(
        portal_db.monitor_dsn, config, clock=clock, wall_clock=lambda: 1_700_000_000.0
    )

    def run_once() -> Scrape:
        pipeline.scheduler.run_once()
        return Scrape.parse(pipeline.renderer.exposition.text.decode())

    try:
        assert run_once().value("pgrb_flaky") == 5
        portal_db.server.execute("DROP TABLE flaky", dbname=portal_db.name)
        clock.now += 10
        failed = run_once()
        assert failed.value("pgrb_check_success", check="flaky") == 0
        assert failed.value("pgrb_check_errors_total", check="flaky", reason="other") == 1
        assert failed.value("pgrb_flaky") == 5  # one timeout must not resolve an alert
        clock.now += 20  # 30 s after the last success: still within 3 intervals
        assert run_once().value("pgrb_flaky") == 5
        clock.now += 0.5
        gone = run_once()
        assert gone.get("pgrb_flaky") is None
        assert gone.value("pgrb_check_last_success_timestamp_seconds", check="flaky") == (
            1_700_000_000.0
        )
        assert gone.value("pgrb_check_errors_total", check="flaky", reason="other") == 3
    finally:
        pipeline.scheduler.stop()


def test_never_more_connections_than_configured_nor_two_runs_of_one_check(
    portal_db: PortalDb,
) -> None:
    checks = "\n".join(
        f"""
  sleeper_{i}:
    help: Sleeps a little.
    interval: 100ms
    timeout: 100ms
    lock_timeout: 50ms
    sql: SELECT 1 AS slept_{i} FROM pg_sleep(0.05)
    metrics: {{slept_{i}: {{name: slept_{i}, type: gauge, help: Slept.}}}}"""
        for i in range(6)
    )
    config = config_of("checks:" + checks)
    most = 0
    with serving(portal_db.monitor_dsn, config, connections=2) as exporter:
        wait_for(
            lambda: all(exporter.state(f"sleeper_{i}").success for i in range(6)),
            what="every check to run",
        )
        for _ in range(100):
            backends = exporter_backends(portal_db)
            most = max(most, len(backends))
            queries = [row[2] for row in backends if row[1] == "active"]
            assert len(queries) == len(set(queries)), queries
    assert most == 2


def test_readiness_waits_for_the_first_collection(portal_db: PortalDb) -> None:
    config = config_of(SLOW_AND_FAST)
    with serving(portal_db.monitor_dsn, config, connections=2) as exporter:

        def readyz() -> tuple[int, bytes]:
            try:
                url = f"http://127.0.0.1:{exporter.port}/readyz"
                with urllib.request.urlopen(url, timeout=5) as reply:
                    return reply.status, reply.read()
            except urllib.error.HTTPError as error:
                return error.code, error.read()

        wait_for(
            lambda: readyz() == (503, b"first collection not finished: slow\n"),
            what="the slow check alone to hold readiness back",
        )
        exporter.scheduler.stop()  # cancels the slow check: it has run once, and failed
        assert readyz()[0] == 200


def test_check_command_accepts_the_apps_prisma_url_and_never_prints_the_password(
    portal_db: PortalDb,
) -> None:
    url = portal_db.monitor_dsn + "?connection_limit=10&pool_timeout=10&schema=public"
    result = subprocess.run(
        [sys.executable, "-m", "pg_runbook_exporter", "check"],
        env={"DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "id_mappings_orphans" in output
    assert " failed" in output and "0 failed" in output
    assert "monitor-test-password" not in output


def test_check_command_names_the_grant_a_permission_error_needs(portal_db: PortalDb) -> None:
    portal_db.server.execute(
        "REVOKE SELECT ON id_mappings FROM pgrb_exporter;"
        "REVOKE SELECT (user_id, whmcs_client_id, sf_account_id) "
        "ON id_mappings FROM pgrb_exporter",
        dbname=portal_db.name,
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pg_runbook_exporter",
            "check",
            "--database.url",
            portal_db.monitor_dsn,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "FAILED (permission)" in result.stdout
    assert (
        "psql -d <portal database> -v role=pgrb_exporter"
        " -f pg_runbook_exporter/sql/monitoring-role.sql"
        "  # SELECT on the columns of id_mappings the checks read" in result.stdout
    )
    assert "GRANT SELECT ON" not in result.stdout
    assert "monitor-test-password" not in result.stdout + result.stderr


def test_the_exporter_session_is_read_only(portal_db: PortalDb) -> None:
    with psycopg.connect(portal_db.monitor_dsn) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
    config = config_of("""
checks:
  writer:
    help: Tries to write.
    sql: SELECT 0 AS n
    metrics: {n: {name: deleted, type: gauge, help: Deleted rows.}}
""")
    # Past the SQL vetting done at load: the session itself must refuse the write.
    writer = dataclasses.replace(
        config.checks[0],
        variants=(
            SqlVariant(sql="WITH d AS (DELETE FROM users RETURNING 1) SELECT count(*) AS n FROM d"),
        ),
    )
    config = dataclasses.replace(config, checks=(writer,))
    portal_db.server.execute(
        "INSERT INTO users (id, email, updated_at) VALUES ('x', 'x', now());"
        "GRANT DELETE ON users TO pgrb_exporter",
        dbname=portal_db.name,
    )
    error = collect(portal_db.monitor_dsn, config).state("writer").last_error
    assert error is not None
    assert "read-only transaction" in error.message
    assert error.reason is FailureReason.OTHER
    assert error.sqlstate == "25006"  # read_only_sql_transaction
    assert portal_db.server.execute("SELECT count(*) FROM users", dbname=portal_db.name) == [(1,)]


def test_a_percent_escaped_as_double_percent_reaches_the_server_as_one(portal_db: PortalDb) -> None:
    # No settings: the statement is still bound, so "%%" arrives as "%" (else LIKE matches none).
    config = config_of("""
checks:
  percent:
    help: Counts the words that start with a.
    sql: |
      SELECT count(*) AS n FROM (VALUES ('apple'), ('avocado'), ('pear')) w(s) WHERE s LIKE 'a%%'
    metrics: {n: {name: a_words, type: gauge, help: Words starting with a.}}
""")
    assert config.settings == ()
    assert collect(portal_db.monitor_dsn, config).scrape.value("pgrb_a_words") == 2
