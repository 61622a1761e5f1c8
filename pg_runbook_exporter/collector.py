"""A prometheus_client collector over the result cache: the checks' metrics and the exporter's own.

It is called once per render (after a check run), never per scrape, and never raises: a check's
problems are already in the cache as state.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pg_runbook_exporter import __version__, selfmetrics
from pg_runbook_exporter.state import CheckState, ResultCache, Snapshot

logger = logging.getLogger(__name__)

Family = GaugeMetricFamily | CounterMetricFamily


class RunbookCollector(Collector):
    def __init__(self, cache: ResultCache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        snap = self._cache.snapshot()
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
        skipped.add_metric([*check, state.skipped], 1.0)
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
