"""The scheduler on a real PostgreSQL: scrapes never wait on a check nor add queries, and the runs
stay within their sessions, one run of a check at a time."""

from __future__ import annotations

import threading
from typing import Any

from pg_runbook_exporter.config import Config
from pg_runbook_exporter.session import APPLICATION_NAME
from tests.conftest import PortalDb
from tests.support.collect import Scrape, pipeline_for, serving, state_of, wait_for
from tests.support.proxy import HangingProxy
from tests.support.unvetted import unvetted_config


def config_of(text: str) -> Config:
    """Checks that sleep or read tables the test made: past the vetting (test_sqlvet.py)."""
    return unvetted_config(text, source="test.yaml")


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


def test_checks_due_together_are_published_once_not_once_per_run(portal_db: PortalDb) -> None:
    """Ten quick checks due at one moment: publishing after every run would make ten or more
    snapshots (generations) out of their first cycle, and the second cycle as many again."""
    checks = "\n".join(
        f"""
  quick_{i}:
    help: Answers at once.
    interval: 2s
    timeout: 1s
    sql: SELECT {i} AS quick_{i}
    metrics: {{quick_{i}: {{name: quick_{i}, type: gauge, help: A number.}}}}"""
        for i in range(10)
    )
    pipeline = pipeline_for(portal_db.monitor_dsn, config_of("checks:" + checks))
    renderer, cache = pipeline.renderer, pipeline.cache
    pipeline.scheduler.start()
    try:

        def runs() -> list[int]:
            return [state_of(cache, f"quick_{i}").runs for i in range(10)]

        wait_for(lambda: min(runs()) >= 2, what="two runs of every check")
        generations = renderer.generation
        wait_for(lambda: min(runs()) >= 3, what="a third run of every check")
        assert renderer.generation - generations < 10
        scrape = Scrape.parse(renderer.exposition.text.decode())
        assert [scrape.value(f"pgrb_quick_{i}") for i in range(10)] == list(range(10))
    finally:
        pipeline.scheduler.stop()


def test_a_result_is_published_before_a_check_of_unknown_length_runs(portal_db: PortalDb) -> None:
    """One session, the quick check first and a 20 s one due with it: held for its sibling,
    the quick result would reach /metrics only after the sleep."""
    config = config_of("""
checks:
  a_fast:
    help: A quick check, first in the queue.
    interval: 1h
    sql: SELECT 42 AS answer
    metrics: {answer: {name: answer, type: gauge, help: The answer.}}
  b_slow:
    help: A check that takes a while, due with it.
    interval: 1h
    timeout: 30s
    sql: SELECT 1 AS done FROM pg_sleep(20)
    metrics: {done: {name: slow_done, type: gauge, help: Set when the sleep ended.}}
""")
    with serving(portal_db.monitor_dsn, config, connections=1) as exporter:

        def slow_is_running() -> bool:
            return any(
                "pg_sleep(20)" in row[2] and row[1] == "active"
                for row in exporter_backends(portal_db)
            )

        wait_for(slow_is_running, what="the slow check to be running on the server")
        assert exporter.scrape().value("pgrb_answer") == 42
        assert slow_is_running()


def test_stop_returns_with_a_statement_hung_on_a_dead_path_and_opens_no_connection(
    portal_db: PortalDb,
) -> None:
    """A statement is in flight when the path to the server stops relaying. Fails when stopping
    sends a cancel request: it needs a new connection through the same path (the proxy accepts
    a second one) that never completes, and the worker, still waiting far from its deadline
    (30 s and the grace), is not done when stop() gives up joining it."""
    config = config_of(SLOW_AND_FAST.replace("interval: 1h\n    timeout: 5s", "interval: 1h"))
    host, port = portal_db.server.tcp_address()
    proxy = HangingProxy((host, port))
    dsn = portal_db.monitor_dsn.replace(f"@{host}:{port}/", f"@127.0.0.1:{proxy.port}/")
    assert dsn != portal_db.monitor_dsn
    pipeline = pipeline_for(dsn, config)
    others = set(threading.enumerate())
    try:
        pipeline.scheduler.start()

        def slow_is_running() -> bool:
            rows = exporter_backends(portal_db)
            return any("pg_sleep(20)" in row[2] and row[1] == "active" for row in rows)

        wait_for(slow_is_running, what="the slow check to be running on the server")
        proxy.hang()
        pipeline.scheduler.stop()
        workers = [t for t in set(threading.enumerate()) - others if t.name.startswith("collector")]
        assert workers == []
        assert proxy.accepted == 1  # the session's own connection, no cancel request
    finally:
        proxy.close()
