"""The renderer without a database: a check is rendered again when its state changes, only then."""

from __future__ import annotations

from pg_runbook_exporter.collector import Renderer
from pg_runbook_exporter.errors import CheckError, FailureReason
from pg_runbook_exporter.samples import Row, Samples
from pg_runbook_exporter.state import ResultCache
from tests.support.collect import Scrape
from tests.support.unvetted import unvetted_config

CONFIG = unvetted_config("""
checks:
  first:
    help: One value.
    interval: 10s
    stale_intervals: 1
    sql: SELECT 5 AS n
    metrics: {n: {name: first_n, type: gauge, help: Five.}}
  second:
    help: Another.
    interval: 10s
    sql: SELECT 6 AS n
    metrics: {n: {name: second_n, type: gauge, help: Six.}}
""")


def test_values_going_stale_between_runs_are_rendered_away_at_the_next_snapshot() -> None:
    """Fails if a check's fragment were kept until its own next run: its stale values would be
    served after their time, unlike a whole render of the same snapshot."""
    now = [0.0]
    cache = ResultCache(config=CONFIG, clock=lambda: now[0], wall_clock=lambda: 1_000.0)
    renderer = Renderer()

    cache.record_success("first", Samples((Row((), (5.0,)),)), 0.01)
    renderer.publish(cache.snapshot())
    now[0] = 5.0
    cache.record_failure("first", CheckError(FailureReason.TIMEOUT, "timed out"), 0.01)
    renderer.publish(cache.snapshot())
    assert Scrape.parse(renderer.exposition.text.decode()).value("pgrb_first_n") == 5
    now[0] = 11.0  # past first's stale_after (10 s) since its success, before its next run
    cache.record_success("second", Samples((Row((), (6.0,)),)), 0.01)
    renderer.publish(cache.snapshot())

    scrape = Scrape.parse(renderer.exposition.text.decode())
    assert scrape.get("pgrb_first_n") is None
    assert scrape.value("pgrb_check_series", check="first") == 0
    assert scrape.value("pgrb_second_n") == 6
    assert renderer.renders == {"first": 3, "second": 2}
    assert scrape.value("pgrb_check_runs_total", check="first") == 2
    assert renderer.generation == renderer.exposition.generation == 3


def test_a_snapshot_without_changes_renders_no_check() -> None:
    """Fails if publishing re-rendered checks whose state is the one last rendered."""
    cache = ResultCache(config=CONFIG)
    renderer = Renderer()
    cache.record_success("first", Samples((Row((), (5.0,)),)), 0.01)
    first = renderer.publish(cache.snapshot())
    second = renderer.publish(cache.snapshot())
    assert renderer.renders == {"first": 1, "second": 1}
    assert second.text == first.text
    assert (first.generation, second.generation) == (1, 2)
