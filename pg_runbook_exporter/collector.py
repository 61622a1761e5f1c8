"""The renderer: a registry of the checks' metrics and the exporter's own, rendered from snapshots.

The renderer owns its registry and is handed a snapshot of the result cache after each check run;
it renders once per run, never per scrape, and never reads the cache back. A check's problems are
already in the snapshot as state, so rendering never raises for them.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from pg_runbook_exporter import __version__, selfmetrics
from pg_runbook_exporter.exposition import EMPTY, Exposition, render
from pg_runbook_exporter.state import CheckState, Snapshot

Family = GaugeMetricFamily | CounterMetricFamily


Listener = Callable[[Snapshot, int], None]
"""Also renders each snapshot (the status page), given it and its generation."""


class Renderer:
    """Renders snapshots into the exposition the web server serves; ``exposition`` is the last.

    Each render has a generation (1, 2, …); listeners render the same snapshot under the same
    generation before the new exposition is published.
    """

    def __init__(self, *extra: Collector, listeners: tuple[Listener, ...] = ()) -> None:
        self._checks = SnapshotCollector()
        self._registry = CollectorRegistry(auto_describe=False)
        for collector in (self._checks, *extra):
            self._registry.register(collector)
        self._lock = threading.Lock()
        self._listeners = listeners
        self.generation = 0
        self.exposition: Exposition = EMPTY

    def publish(self, snapshot: Snapshot) -> Exposition:
        """Render ``snapshot``; serialised, so renders never interleave."""
        with self._lock:
            generation = self.generation + 1
            self._checks.snapshot = snapshot
            try:
                exposition = render(self._registry, generation)
            finally:
                self._checks.snapshot = None
            for listener in self._listeners:
                listener(snapshot, generation)
            self.generation, self.exposition = generation, exposition
            return exposition


class SnapshotCollector(Collector):
    """Yields the metric families of the snapshot it is given for one render."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        if snap is None:  # outside a render (e.g. a registry describing itself)
            return
        yield from self._check_metrics(snap)
        yield from self._setting_metrics(snap)
        yield from self._self_metrics(snap)

    def _check_metrics(self, snap: Snapshot) -> Iterator[Metric]:
        for state in snap.states:
            samples = state.serving(snap.taken_at)
            check = state.check
            for index, metric in enumerate(check.metrics):
                family: GaugeMetricFamily | CounterMetricFamily
                if metric.type == "counter":
                    family = CounterMetricFamily(metric.name, metric.help, labels=check.labels)
                else:
                    family = GaugeMetricFamily(metric.name, metric.help, labels=check.labels)
                for row in samples.rows if samples else ():
                    value = row.values[index]
                    if value is not None:
                        family.add_metric(list(row.labels), value)
                yield family

    def _setting_metrics(self, snap: Snapshot) -> Iterator[Metric]:
        for setting in snap.config.settings:
            if setting.metric is not None and isinstance(setting.value, int | float):
                yield GaugeMetricFamily(
                    snap.config.metric_name(setting.metric),
                    f"Setting {setting.name}: {setting.help}",
                    value=float(setting.value),
                )

    def _self_metrics(self, snap: Snapshot) -> Iterator[Metric]:
        up = family(snap, selfmetrics.UP)
        if snap.up is not None:
            up.add_metric([], 1.0 if snap.up else 0.0)
        yield up
        info = family(snap, selfmetrics.BUILD_INFO)
        info.add_metric([__version__, platform.python_version()], 1.0)
        yield info
        yield from _per_check(snap)


def family(
    snap: Snapshot, metric: selfmetrics.SelfMetric
) -> GaugeMetricFamily | CounterMetricFamily:
    kind = CounterMetricFamily if metric.type == "counter" else GaugeMetricFamily
    return kind(snap.config.metric_name(metric.name), metric.help, labels=list(metric.labels))


def _per_check(snap: Snapshot) -> Iterator[Metric]:
    success = family(snap, selfmetrics.CHECK_SUCCESS)
    skipped = family(snap, selfmetrics.CHECK_SKIPPED)
    duration = family(snap, selfmetrics.CHECK_DURATION)
    last = family(snap, selfmetrics.CHECK_LAST_SUCCESS)
    interval = family(snap, selfmetrics.CHECK_INTERVAL)
    errors = family(snap, selfmetrics.CHECK_ERRORS)
    series = family(snap, selfmetrics.CHECK_SERIES)
    truncated = family(snap, selfmetrics.CHECK_TRUNCATED)
    for state in snap.states:
        check = state.check.name
        interval.add_metric([check], state.check.interval)
        for reason, count in state.errors:
            errors.add_metric([check, str(reason)], float(count))
        _add_state(
            state,
            snap.taken_at,
            success=success,
            skipped=skipped,
            duration=duration,
            last=last,
            series=series,
            truncated=truncated,
        )
    yield from (success, skipped, duration, last, interval, errors, series, truncated)


def _add_state(
    state: CheckState,
    now: float,
    *,
    success: Family,
    skipped: Family,
    duration: Family,
    last: Family,
    series: Family,
    truncated: Family,
) -> None:
    check = [state.check.name]
    if state.skipped is not None:
        skipped.add_metric([*check, str(state.skipped)], 1.0)
        return
    if state.success is not None:
        success.add_metric(check, 1.0 if state.success else 0.0)
    if state.duration is not None:
        duration.add_metric(check, state.duration)
    if state.last_success is not None:
        last.add_metric(check, state.last_success)
    serving = state.serving(now)
    series.add_metric(check, float(serving.series if serving else 0))
    if state.samples is not None:
        truncated.add_metric(check, 1.0 if state.samples.truncated else 0.0)
