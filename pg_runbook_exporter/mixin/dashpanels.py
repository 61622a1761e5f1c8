"""What the generated Grafana dashboards are made of: queries, panels, rows and boards.

A panel is described once as a frozen dataclass (what it shows, its unit, its thresholds and the
settings they come from, the alerts it mirrors, when it may be empty) and rendered into Grafana's
JSON model by ``pg_runbook_exporter.mixin.dashrender``. Keeping the description apart from the
JSON lets the tests ask the model why a panel looks the way it does instead of reverse-engineering
the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pg_runbook_exporter.config import Config
from pg_runbook_exporter.mixin.alertrules import rules
from pg_runbook_exporter.mixin.options import MixinOptions
from pg_runbook_exporter.selfmetrics import NAMES as SELF_METRICS

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SCOPE = 'job=~"$job", instance=~"$instance"'

PanelKind = Literal["stat", "timeseries", "table", "bargauge"]
Colour = Literal["green", "orange", "red", "blue"]


@dataclass(frozen=True)
class Step:
    """One threshold step: ``colour`` from ``value`` up; ``setting`` names its source number."""

    colour: Colour
    value: float | None = None
    setting: str | None = None


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False


@dataclass(frozen=True)
class Mapping:
    """A value shown as text (``value`` exact, e.g. 1 → "on")."""

    value: float
    text: str
    colour: Colour


@dataclass(frozen=True)
class Panel:
    kind: PanelKind
    title: str
    what: str
    runbook: str
    unit: str
    queries: tuple[Query, ...]
    width: int = 8
    height: int = 8
    steps: tuple[Step, ...] = (Step("green"),)
    mirrors: tuple[str, ...] = ()
    empty_when: str | None = None
    link: str | None = None
    mappings: tuple[Mapping, ...] = ()
    stacked: bool = False
    max_value: float | None = None
    column_units: tuple[tuple[str, str], ...] = ()
    column_names: tuple[tuple[str, str], ...] = ()
    ascending: bool = False

    @property
    def settings(self) -> tuple[str, ...]:
        return tuple(s.setting for s in self.steps if s.setting is not None)

    @property
    def description(self) -> str:
        """What the panel shows, its runbook section, the alerts it mirrors and at what values."""
        parts = [self.what, f"Runbook: {self.runbook}."]
        if self.mirrors:
            coloured = [s for s in self.steps[1:] if s.colour in SEVERITY_COLOURS.values()]
            levels = "; ".join(
                [
                    f"{s.colour} from {human(s.value or 0.0, self.unit)}"
                    + (f" ({s.setting})" if s.setting else "")
                    for s in coloured
                ]
                # a state shown as text (archiving off) in an alert's colour is a level too
                + [f'"{m.text}" {m.colour}' for m in self.mappings if m.colour in ALERT_COLOURS]
            )
            parts.append(f"Alert: {', '.join(self.mirrors)}" + (f" — {levels}." if levels else "."))
        if self.empty_when is not None:
            parts.append(f"Empty while healthy: {self.empty_when}.")
        return " ".join(parts)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Board:
    uid: str
    title: str
    answers: str
    rows: tuple[Row, ...]
    refresh: str = "1m"
    time_from: str = "now-6h"

    @property
    def panels(self) -> tuple[Panel, ...]:
        return tuple(p for row in self.rows for p in row.panels)


@dataclass(frozen=True)
class Metrics:
    """Metric names of one config: ``m("connections")`` → ``pgrb_connections``, checked to exist."""

    config: Config
    selector: str = ""  # the extra matchers of every query (``generate --mixin.selector``)
    node: str = MixinOptions().node_matchers  # node_exporter's series of the data volume
    known: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        prefix = self.config.metric_name("")
        names = {
            metric.name.removeprefix(prefix)
            for check in self.config.checks
            for metric in check.metrics
        }
        names |= {s.metric for s in self.config.settings if s.metric is not None}
        names |= set(SELF_METRICS)
        object.__setattr__(self, "known", frozenset(names))

    def __call__(self, name: str) -> str:
        if name not in self.known:
            raise KeyError(f"no metric {name!r} in {self.config.path}")
        return self.config.metric_name(name)

    @property
    def scope(self) -> str:
        """The matchers every query of the boards carries: job, instance and the selector."""
        return f"{SCOPE}, {self.selector}" if self.selector else SCOPE

    def sel(self, name: str, *matchers: str, db: bool = False) -> str:
        """``pgrb_<name>{job=~"$job", instance=~"$instance"[, datname=~"$datname"], …}``."""
        parts = [self.scope, *(['datname=~"$datname"'] if db else []), *matchers]
        return f"{self(name)}{{{', '.join(parts)}}}"

    def check_of(self, name: str) -> str:
        for check in self.config.checks:
            if any(metric.name == self(name) for metric in check.metrics):
                return check.name
        raise KeyError(f"no check exports {name!r}")

    def or_zero(self, expr: str, metric: str) -> str:
        """``expr``, or 0 while the check behind ``metric`` succeeds with nothing to report.

        A tile then reads 0 on a healthy database yet "No data" when the check fails, instead of
        a reassuring 0 from ``vector(0)``.
        """
        ok = self.sel("check_success", f'check="{self.check_of(metric)}"')
        return f"{expr} or 0 * max({ok} == 1)"

    def setting(self, name: str) -> float:
        value = self.config.setting(name)
        if not isinstance(value, int | float):
            raise TypeError(f"setting {name} is not a number")
        return float(value)

    def step(self, colour: Colour, setting: str) -> Step:
        return Step(colour, self.setting(setting), setting)

    def number(self, setting: str) -> str:
        """A setting as a PromQL number literal, for conditions an alert puts in its expression."""
        value = self.setting(setting)
        return str(int(value)) if value.is_integer() else repr(value)


# A count that is not zero: the alerts on counts fire on `> 0`, so the first coloured step is 1.
ANY = 1.0
OK = Step("green")
# The colour of each alert severity: a tile turns this colour exactly where the alert fires.
SEVERITY_COLOURS: dict[str, Colour] = {"warning": "orange", "critical": "red", "info": "blue"}
WARN, CRIT, INFO = (
    SEVERITY_COLOURS["warning"],
    SEVERITY_COLOURS["critical"],
    SEVERITY_COLOURS["info"],
)
# Colours that mean an alert fires; blue (info) doubles as "informational, nothing to do".
ALERT_COLOURS = frozenset({WARN, CRIT})
RATE = "[$__rate_interval]"
# On/off states that no alert watches: informational, never a warning colour.
ON_OFF = (Mapping(1, "on", "green"), Mapping(0, "off", "blue"))


def alert_colour(alert: str) -> Colour:
    """The colour of ``alert``'s severity, for a state only that alert watches."""
    severities = {rule.severity for rule in rules() if rule.name == alert}
    if len(severities) != 1:
        raise ValueError(f"{alert} has severities {sorted(severities)}, not exactly one")
    return SEVERITY_COLOURS[severities.pop()]


def human(value: float, unit: str) -> str:
    """A threshold for people, in the panel's unit."""
    if unit == "percentunit":
        return f"{value * 100:g} %"
    if unit == "bytes":
        for name, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if value >= scale:
                return f"{value / scale:g} {name}"
        return f"{value:g} B"
    if unit == "s":
        for name, scale in (("h", 3600), ("min", 60)):
            if value >= scale and value % scale == 0:
                return f"{value / scale:g} {name}"
        return f"{value:g} s"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:g}"


def ago(m: Metrics, metric: str, *matchers: str, db: bool = False) -> str:
    return f"time() - {m.sel(metric, *matchers, db=db)}"


def timeseries(
    title: str,
    queries: tuple[Query, ...],
    *,
    unit: str,
    what: str,
    runbook: str,
    alerts: tuple[str, ...] = (),
    empty: str | None = None,
    steps: tuple[Step, ...] = (OK,),
    width: int = 12,
    stacked: bool = False,
) -> Panel:
    return Panel(
        "timeseries", title, what, runbook, unit, queries, width=width, steps=steps,
        mirrors=alerts, empty_when=empty, stacked=stacked,
    )  # fmt: skip


def stat(title: str, query: Query, *, unit: str, what: str, runbook: str,
          steps: tuple[Step, ...] = (Step("blue"),), alerts: tuple[str, ...] = (),
          on_off: bool = False, mappings: tuple[Mapping, ...] = (),
          width: int = 4) -> Panel:  # fmt: skip
    return Panel(
        "stat", title, what, runbook, unit, (Query(query.expr, query.legend, instant=True),),
        width=width, height=8, steps=steps, mirrors=alerts,
        mappings=ON_OFF if on_off else mappings,
    )  # fmt: skip


def table(title: str, queries: tuple[str, ...], names: tuple[str, ...], *, what: str,
           runbook: str, units: tuple[tuple[str, str], ...] = (), alerts: tuple[str, ...] = (),
           width: int = 24, height: int = 9, ascending: bool = False,
           empty: str | None = None) -> Panel:  # fmt: skip
    """An instant table: a column per query (``Value #A``… renamed ``names``), merged by labels,
    sorted by the first (descending unless ``ascending``)."""
    # Grafana names the value column of a lone query "Value", of several "Value #<refId>"
    refs = [f"Value #{chr(ord('A') + i)}" for i in range(len(queries))]
    refs = ["Value"] if len(refs) == 1 else refs
    return Panel(
        "table", title, what, runbook, "short",
        tuple(Query(e, instant=True, table=True) for e in queries), width=width, height=height,
        column_units=units, column_names=tuple(zip(refs, names, strict=True)), mirrors=alerts,
        ascending=ascending, empty_when=empty,
    )  # fmt: skip
