"""A check's state over time on a real PostgreSQL: a failure keeps its last values for a while, and
readiness waits for every check's first collection.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from pg_runbook_exporter.config import Config
from tests.conftest import PortalDb
from tests.support.collect import Scrape, pipeline_for, serving, wait_for
from tests.support.unvetted import unvetted_config


def config_of(text: str) -> Config:
    """Checks that sleep or read tables the test made: past the vetting (test_sqlvet.py)."""
    return unvetted_config(text, source="test.yaml")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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
