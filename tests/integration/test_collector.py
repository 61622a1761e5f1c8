"""The renderer on a real PostgreSQL: what a result no longer holds is no longer served, and a run
renders its own check's series alone, into bodies equal to a whole render."""

from __future__ import annotations

import dataclasses
import gzip
import subprocess
from collections.abc import Callable, Iterator

from prometheus_client.core import Metric
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.registry import Collector

from pg_runbook_exporter import collector, selfmetrics
from pg_runbook_exporter.config import Config
from pg_runbook_exporter.exposition import render
from pg_runbook_exporter.state import Snapshot
from tests.conftest import PortalDb
from tests.support.collect import Scrape, configured, pipeline_for, serving, state_of, wait_for
from tests.support.unvetted import unvetted_config

# The OpenMetrics parser carries no annotations; this binding gives it a type.
parse_openmetrics: Callable[[str], Iterator[Metric]] = (
    openmetrics_parser.text_string_to_metric_families
)


def config_of(text: str) -> Config:
    """Checks that sleep or read tables the test made: past the vetting (test_sqlvet.py)."""
    return unvetted_config(text, source="test.yaml")


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


# -- rendering what changed --------------------------------------------------------------------


def whole(snap: Snapshot, renders: dict[str, int]) -> Collector:
    """The snapshot's families collected at once, as a registry of them all would yield them.

    The per-check self-metrics are one family each with every check's series, so rendering this
    is a whole re-render of the snapshot: what the renderer's joined fragments must equal.
    """
    config, now = snap.config, snap.taken_at
    families: list[Metric] = []
    for state in snap.states:
        families.extend(collector.check_families(state, now))
    families.extend(collector.setting_families(config))
    families += [collector.up_family(snap), collector.build_info(config)]
    merged = [collector.family(config, m) for m in selfmetrics.PER_CHECK]
    for state in snap.states:
        own = collector.check_self_families(config, state, now, renders[state.check.name])
        for into, one in zip(merged, own, strict=True):
            into.samples.extend(one.samples)
    families.extend(merged)

    class Whole(Collector):
        def collect(self) -> Iterator[Metric]:
            return iter(families)

    return Whole()


def test_the_joined_fragments_are_a_whole_render_byte_for_byte(portal_db: PortalDb) -> None:
    """Fails if a fragment is rendered from a stale state, a shared family repeats its HELP and
    TYPE or splits, `# EOF` is not last, series move, or a gzip body is not its plain body."""
    portal_db.server.execute(
        "CREATE TABLE flaky (n int); INSERT INTO flaky VALUES (7);"
        "GRANT SELECT ON flaky TO pgrb_exporter;",
        dbname=portal_db.name,
    )
    extra = config_of("""
checks:
  broken:
    help: Always fails.
    interval: 100ms
    timeout: 100ms
    lock_timeout: 50ms
    sql: SELECT 1 / 0 AS n
    metrics: {n: {name: broken_n, type: gauge, help: Never served.}}
  flaky:
    help: Succeeds, then its table goes and its values go stale.
    interval: 100ms
    timeout: 100ms
    lock_timeout: 50ms
    stale_intervals: 1
    sql: SELECT n FROM flaky
    metrics: {n: {name: flaky_total, type: counter, help: A count.}}
""")
    shipped = configured(interval=0.2)
    config = dataclasses.replace(shipped, checks=shipped.checks + extra.checks)
    published: list[tuple[Snapshot, int]] = []
    pipeline = pipeline_for(
        portal_db.monitor_dsn,
        config,
        process_metrics=False,
        listeners=(lambda snap, generation: published.append((snap, generation)),),
    )
    cache = pipeline.cache
    pipeline.scheduler.start()
    try:
        wait_for(lambda: state_of(cache, "flaky").runs >= 2, what="flaky's runs")
        portal_db.server.execute("DROP TABLE flaky", dbname=portal_db.name)
        wait_for(
            lambda: (
                all(s.runs >= 3 for s in cache.snapshot().states)
                and pipeline.renderer.exposition.text.count(b"\npgrb_flaky_total ") == 0
            ),
            what="three runs of every check and flaky's values to go stale",
        )
    finally:
        pipeline.scheduler.stop()
    snap, generation = published[-1]
    served = pipeline.renderer.exposition
    reference = render(whole(snap, pipeline.renderer.renders), generation)
    assert served.generation == generation == len(published)
    assert served.text == reference.text
    assert served.openmetrics == reference.openmetrics
    assert served.openmetrics.endswith(b"\n# EOF\n") and served.openmetrics.count(b"# EOF") == 1
    assert gzip.decompress(served.text_gzip) == served.text
    assert gzip.decompress(served.openmetrics_gzip) == served.openmetrics
    assert served.text.count(b"# TYPE pgrb_check_success gauge\n") == 1
    scrape = Scrape.parse(served.text.decode())
    assert scrape.value("pgrb_check_errors_total", check="broken", reason="other") >= 3
    assert scrape.value("pgrb_check_series", check="flaky") == 0
    assert scrape.value("pgrb_check_success", check="flaky") == 0
    families = list(parse_openmetrics(served.openmetrics.decode()))
    assert len(families) == len({f.name for f in families})
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=served.text, capture_output=True, check=False
    )
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, b"")


def test_a_check_run_renders_that_check_alone(portal_db: PortalDb) -> None:
    """Fails if a run re-renders any other check's series (as rendering the whole exposition after
    every run did), or if a run of a check is not rendered exactly once."""
    config = config_of("""
checks:
  often:
    help: Runs every 100 ms.
    interval: 100ms
    timeout: 100ms
    lock_timeout: 50ms
    sql: SELECT 1 AS n
    metrics: {n: {name: often_n, type: gauge, help: One.}}
  seldom:
    help: Runs once an hour.
    interval: 1h
    sql: SELECT 2 AS n
    metrics: {n: {name: seldom_n, type: gauge, help: Two.}}
""")
    pipeline = pipeline_for(portal_db.monitor_dsn, config, process_metrics=False)
    pipeline.scheduler.start()
    try:
        wait_for(lambda: state_of(pipeline.cache, "often").runs >= 6, what="six runs of often")
    finally:
        pipeline.scheduler.stop()
    runs = {s.check.name: s.runs for s in pipeline.cache.snapshot().states}
    # One render each when collection starts (nothing ran yet), then one per run of that check.
    assert runs["seldom"] == 1
    assert pipeline.renderer.renders == {"often": runs["often"] + 1, "seldom": 2}
    scrape = Scrape.parse(pipeline.renderer.exposition.text.decode())
    assert scrape.value("pgrb_check_renders_total", check="seldom") == 2
    assert scrape.value("pgrb_check_renders_total", check="often") == runs["often"] + 1
    assert scrape.value("pgrb_check_runs_total", check="often") == runs["often"]
    assert scrape.value("pgrb_seldom_n") == 2
