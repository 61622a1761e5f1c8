"""The status document: a snapshot's checks by runbook chapter, judged at the alerts' thresholds.

One plain, JSON-ready mapping that ``/status.json`` serves as it is and ``/status`` draws. Values
are the samples ``/metrics`` serves from the same snapshot (a timestamp stays a timestamp; its age
is given beside it). States are instantaneous: an alert's ``for`` and the conditions that need
history are the alerts' to judge, and the rows say which.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pg_runbook_exporter.config import Check, Config
from pg_runbook_exporter.samples import Row
from pg_runbook_exporter.state import CheckState, Snapshot
from pg_runbook_exporter.status import offenders
from pg_runbook_exporter.status.rules import Condition, Rule
from pg_runbook_exporter.status.units import Unit, compared, shown, unit_of

SCHEMA_VERSION = 1
OTHER_CHAPTER = "Other checks"


class RowState(StrEnum):
    """A row's state, worst first; the page sorts by it within a chapter."""

    CRITICAL = "critical"
    WARNING = "warning"
    FAILING = "failing"
    STALE = "stale"
    INFO = "info"
    OK = "ok"
    SKIPPED = "skipped"
    PENDING = "pending"


RANK = {state: index for index, state in enumerate(RowState)}
# The exporter's own conditions and the playbooks of the alerts that page on them.
SELF_PLAYBOOKS = {
    RowState.FAILING: "PgRunbookCheckFailing",
    RowState.STALE: "PgRunbookCheckStale",
    "down": "PostgresDown",
}


def number(value: float | None) -> float | str | None:
    """A sample value for JSON: non-finite ones spelled as Prometheus does (JSON has no NaN)."""
    if value is None or math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


def iso(wall: float | None) -> str | None:
    if wall is None:
        return None
    return (
        dt.datetime.fromtimestamp(wall, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


@dataclass(frozen=True)
class Judged:
    """One rule's verdict over the series it selects: the worst series and what it met."""

    rule: Rule | None
    metric: str
    unit: Unit
    value: float | None
    labels: dict[str, str]
    series: int
    met: Condition | None


def _judge(check: Check, rule: Rule | None, rows: tuple[Row, ...], now: float) -> Judged:
    column = rule.value if rule else check.metrics[0].column
    index = next(i for i, m in enumerate(check.metrics) if m.column == column)
    metric = check.metrics[index].name
    unit = unit_of(metric)
    low = rule.worst_is_low if rule else False
    best: tuple[int, float, float, dict[str, str], Condition | None] | None = None
    series = 0
    for row in rows:
        labels = dict(zip(check.labels, row.labels, strict=True))
        value = row.values[index]
        if value is None or (rule is not None and not rule.selects(labels)):
            continue
        series += 1
        against = compared(value, unit, now)
        met = next((c for c in rule.conditions if c.met(against)), None) if rule else None
        rank = RANK[RowState(met.severity)] if met else len(RANK)
        key = (rank, against if low else -against, value, labels, met)
        if best is None or key[:2] < best[:2]:
            best = key
    if best is None:
        return Judged(rule, metric, unit, None, {}, 0, None)
    return Judged(rule, metric, unit, best[2], best[3], series, best[4])


def _threshold(condition: Condition, unit: Unit) -> dict[str, Any]:
    as_unit = Unit.SECONDS if unit is Unit.TIMESTAMP else unit
    return {
        "severity": str(condition.severity),
        "op": condition.op,
        "threshold": condition.threshold,
        "setting": condition.setting,
        "text": f"{condition.op} {shown(condition.threshold, as_unit, 0)}"
        + (" (age)" if unit is Unit.TIMESTAMP else ""),
    }


def _stale(state: CheckState, config: Config, wall: float) -> bool:
    try:
        intervals = float(config.setting("check_stale_intervals"))  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        intervals = state.check.stale_intervals
    if state.last_success is None:
        return False
    return wall - state.last_success > intervals * state.check.interval


def row(state: CheckState, snap: Snapshot, wall: float) -> dict[str, Any]:
    """The row of one check."""
    check = state.check
    samples = state.serving(snap.taken_at)
    rows = samples.rows if samples else ()
    verdicts = [_judge(check, rule, rows, wall) for rule in check.status] or [
        _judge(check, None, rows, wall)
    ]
    met = [(RowState(v.met.severity), v) for v in verdicts if v.met is not None]
    shown_verdict = min(met, key=lambda m: RANK[m[0]])[1] if met else verdicts[0]
    if state.skipped is not None:
        status = RowState.SKIPPED
    elif not state.ran:
        status = RowState.PENDING
    else:
        candidates = [severity for severity, _ in met]
        if state.success is False:
            candidates.append(RowState.FAILING)
        if _stale(state, snap.config, wall):
            candidates.append(RowState.STALE)
        status = min(candidates, key=RANK.__getitem__, default=RowState.OK)
    playbook = shown_verdict.rule.alert if shown_verdict.rule else None
    if status in (RowState.FAILING, RowState.STALE) and not met:
        playbook = SELF_PLAYBOOKS[status]
    value = shown_verdict.value
    error = state.last_error
    return {
        "check": check.name,
        "help": check.help,
        "state": str(status),
        "metric": shown_verdict.metric,
        "unit": str(shown_verdict.unit),
        "value": number(value),
        "value_text": shown(value, shown_verdict.unit, wall) if value is not None else None,
        "labels": shown_verdict.labels,
        "series": shown_verdict.series,
        "met": _threshold(shown_verdict.met, shown_verdict.unit) if shown_verdict.met else None,
        "thresholds": [
            {"metric": v.metric, **_threshold(c, v.unit)}
            for v in verdicts
            if v.rule
            for c in v.rule.conditions
        ],
        "judged_by_alerts": [j for v in verdicts if v.rule for j in v.rule.judged_by_alerts],
        "playbook": playbook,
        "interval_seconds": check.interval,
        "last_success": iso(state.last_success),
        "last_success_age_seconds": (
            round(wall - state.last_success, 3) if state.last_success is not None else None
        ),
        "error": {"reason": str(error.reason), "message": error.message} if error else None,
        "skipped": str(state.skipped) if state.skipped is not None else None,
    }


def _chapters(snap: Snapshot, wall: float) -> Iterator[dict[str, Any]]:
    order = [*snap.config.chapters, OTHER_CHAPTER]
    grouped: dict[str, list[dict[str, Any]]] = {}
    for state in snap.states:
        grouped.setdefault(state.check.chapter or OTHER_CHAPTER, []).append(row(state, snap, wall))
    for name in sorted(grouped, key=lambda c: order.index(c) if c in order else len(order)):
        rows = sorted(grouped[name], key=lambda r: RANK[RowState(r["state"])])  # stable
        yield {"name": name, "rows": rows}


def _health(snap: Snapshot, chapters: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [r for c in chapters for r in c["rows"]]
    states = [RowState(r["state"]) for r in rows]
    return {
        "database": "unknown" if snap.up is None else ("up" if snap.up else "down"),
        "database_playbook": SELF_PLAYBOOKS["down"] if snap.up is False else None,
        "checks": len(rows),
        **{str(s): states.count(s) for s in RowState},
    }


def document(snap: Snapshot, generation: int, wall: float) -> dict[str, Any]:
    """The whole status document of ``snap``, rendered at wall-clock time ``wall``."""
    chapters = list(_chapters(snap, wall))
    return {
        "schema_version": SCHEMA_VERSION,
        "generation": generation,
        "rendered_at": iso(wall),
        "instantaneous": True,
        "health": _health(snap, chapters),
        "offenders": offenders.sections(snap, wall),
        "chapters": chapters,
    }


def worst(doc: dict[str, Any]) -> RowState:
    states = [RowState(r["state"]) for c in doc["chapters"] for r in c["rows"]]
    return min(states, key=RANK.__getitem__, default=RowState.OK)
