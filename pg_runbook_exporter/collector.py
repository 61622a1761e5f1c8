"""The renderer: each check's metrics rendered when it completes a run, and the exposition joined.

The renderer is handed a snapshot of the result cache after each check run and never reads the
cache back. A check whose state is the one it rendered last (states are replaced, never mutated)
keeps its fragment: a run renders its own check's series, in both formats and as gzip members, and
the exposition is those fragments joined with one small last part rendered per snapshot (the
series every run changes: up, the per-check self-metrics already rendered per check, the process
metrics) — the same bytes as rendering the whole snapshot at once. A check's problems are already
in the snapshot as state, so rendering never raises for them.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pg_runbook_exporter import __version__, selfmetrics
from pg_runbook_exporter.config import Config
from pg_runbook_exporter.exposition import EMPTY, Exposition, Fragment, assemble, formats
from pg_runbook_exporter.state import CheckState, Snapshot

Family = GaugeMetricFamily | CounterMetricFamily
Lines = tuple[bytes, bytes]  # text format, OpenMetrics


Listener = Callable[[Snapshot, int], None]
"""Also renders each snapshot (the status page), given it and its generation."""


class Renderer:
    """Renders snapshots into the exposition the web server serves; ``exposition`` is the last.

    Each snapshot has a generation (1, 2, …); listeners render the same snapshot under the same
    generation before the new exposition is published. ``extra`` collectors (the process metrics)
    are collected for every snapshot, after everything else.
    """

    def __init__(self, *extra: Collector, listeners: tuple[Listener, ...] = ()) -> None:
        self._extra = extra
        self._lock = threading.Lock()
        self._listeners = listeners
        self._frame: _Frame | None = None
        self._parts: dict[str, _CheckPart] = {}
        self.generation = 0
        self.exposition: Exposition = EMPTY

    @property
    def renders(self) -> dict[str, int]:
        """How often each check's series were rendered so far."""
        with self._lock:
            return {name: part.renders for name, part in self._parts.items()}

    def publish(self, snapshot: Snapshot) -> Exposition:
        """Render what changed in ``snapshot`` and join the exposition; serialised."""
        with self._lock:
            generation = self.generation + 1
            frame = self._frame_of(snapshot.config)
            parts = [self._part(frame, state, snapshot.taken_at) for state in snapshot.states]
            text, openmetrics = frame.last(snapshot, parts, self._extra)
            exposition = assemble([p.fragment for p in parts], text, openmetrics, generation)
            exposition.prepare_like(self.exposition)
            for listener in self._listeners:
                listener(snapshot, generation)
            self.generation, self.exposition = generation, exposition
            return exposition

    def _frame_of(self, config: Config) -> _Frame:
        if self._frame is None or self._frame.config is not config:
            self._frame, self._parts = _Frame(config), {}
        return self._frame

    def _part(self, frame: _Frame, state: CheckState, now: float) -> _CheckPart:
        fresh = state.serving(now) is not None
        old = self._parts.get(state.check.name)
        if old is not None and old.state is state and old.fresh == fresh:
            return old
        renders = (old.renders if old is not None else 0) + 1
        part = _CheckPart(
            state=state,
            fresh=fresh,
            renders=renders,
            fragment=Fragment(*formats(_Families(check_families(state, now)))),
            lines=tuple(
                frame.lines(index, family)
                for index, family in enumerate(
                    check_self_families(frame.config, state, now, renders)
                )
            ),
        )
        self._parts[state.check.name] = part
        return part


@dataclass(frozen=True)
class _CheckPart:
    """One check as last rendered: its own families, and its lines of the per-check families."""

    state: CheckState
    fresh: bool  # its samples were served (not stale) when rendered
    renders: int
    fragment: Fragment
    lines: tuple[Lines, ...]  # by selfmetrics.PER_CHECK


class _Frame:
    """What a config's exposition holds besides the checks' fragments, rendered once."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.settings = formats(_Families(setting_families(config)))
        self.build_info = formats(_Families([build_info(config)]))
        self.headers = [formats(_Families([family(config, m)])) for m in selfmetrics.PER_CHECK]

    def lines(self, index: int, one: Family) -> Lines:
        """The sample lines of a per-check family ``one``: its rendering without its header."""
        text, openmetrics = formats(_Families([one]))
        head_text, head_openmetrics = self.headers[index]
        return text.removeprefix(head_text), openmetrics.removeprefix(head_openmetrics)

    def last(
        self, snap: Snapshot, parts: Iterable[_CheckPart], extra: Iterable[Collector]
    ) -> Lines:
        """The part after the checks' fragments: settings, up, build info, self-metrics, extras."""
        parts = list(parts)
        up = formats(_Families([up_family(snap)]))
        pieces = [self.settings, up, self.build_info]
        for index, header in enumerate(self.headers):
            pieces.append(header)
            pieces.extend(part.lines[index] for part in parts)
        pieces.extend(formats(collector) for collector in extra)
        return b"".join(p[0] for p in pieces), b"".join(p[1] for p in pieces)


class _Families(Collector):
    """A collector of metric families already built."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def check_families(state: CheckState, now: float) -> list[Family]:
    """The families of a check's own metrics: what it serves at ``now``, in config order."""
    samples = state.serving(now)
    check = state.check
    out: list[Family] = []
    for index, metric in enumerate(check.metrics):
        one: Family
        if metric.type == "counter":
            one = CounterMetricFamily(metric.name, metric.help, labels=check.labels)
        else:
            one = GaugeMetricFamily(metric.name, metric.help, labels=check.labels)
        for row in samples.rows if samples else ():
            value = row.values[index]
            if value is not None:
                one.add_metric(list(row.labels), value)
        out.append(one)
    return out


def setting_families(config: Config) -> list[Family]:
    return [
        GaugeMetricFamily(
            config.metric_name(setting.metric),
            f"Setting {setting.name}: {setting.help}",
            value=float(setting.value),
        )
        for setting in config.settings
        if setting.metric is not None and isinstance(setting.value, int | float)
    ]


def up_family(snap: Snapshot) -> Family:
    up = family(snap.config, selfmetrics.UP)
    if snap.up is not None:
        up.add_metric([], 1.0 if snap.up else 0.0)
    return up


def build_info(config: Config) -> Family:
    info = family(config, selfmetrics.BUILD_INFO)
    info.add_metric([__version__, platform.python_version()], 1.0)
    return info


def family(config: Config, metric: selfmetrics.SelfMetric) -> Family:
    kind = CounterMetricFamily if metric.type == "counter" else GaugeMetricFamily
    return kind(config.metric_name(metric.name), metric.help, labels=list(metric.labels))


def check_self_families(
    config: Config, state: CheckState, now: float, renders: int
) -> list[Family]:
    """One check's series of the per-check self-metrics, a family each (``PER_CHECK`` order)."""
    by_metric: Mapping[selfmetrics.SelfMetric, Family] = {
        m: family(config, m) for m in selfmetrics.PER_CHECK
    }
    name = state.check.name
    check = [name]
    by_metric[selfmetrics.CHECK_INTERVAL].add_metric(check, state.check.interval)
    for reason, count in state.errors:
        by_metric[selfmetrics.CHECK_ERRORS].add_metric([name, str(reason)], float(count))
    by_metric[selfmetrics.CHECK_RUNS].add_metric(check, float(state.runs))
    by_metric[selfmetrics.CHECK_RENDERS].add_metric(check, float(renders))
    if state.skipped is not None:
        by_metric[selfmetrics.CHECK_SKIPPED].add_metric([name, str(state.skipped)], 1.0)
        return list(by_metric.values())
    if state.success is not None:
        by_metric[selfmetrics.CHECK_SUCCESS].add_metric(check, 1.0 if state.success else 0.0)
    if state.duration is not None:
        by_metric[selfmetrics.CHECK_DURATION].add_metric(check, state.duration)
    if state.last_success is not None:
        by_metric[selfmetrics.CHECK_LAST_SUCCESS].add_metric(check, state.last_success)
    serving = state.serving(now)
    by_metric[selfmetrics.CHECK_SERIES].add_metric(check, float(serving.series if serving else 0))
    if state.samples is not None:
        by_metric[selfmetrics.CHECK_TRUNCATED].add_metric(
            check, 1.0 if state.samples.truncated else 0.0
        )
    return list(by_metric.values())
