"""A check's ``chapter``, ``status`` rules and ``offenders`` kind in queries.yaml, checked at load.

A rule names a metric column of its check and the thresholds at which the status page colours it,
each an operator and a number or the name of a setting, so the page and the alerts read the one
number. Conditions the page cannot judge from one snapshot (a count that rose within 30 minutes, a
forecast, a compound rule) are named in ``judged_by_alerts`` and shown as judged by the alerts.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from pg_runbook_exporter.validation import Problems


class Severity(StrEnum):
    """A threshold's severity, as the alerts name theirs; worst first."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class Offenders(StrEnum):
    """What a check's rows name, for the status page's offender sections (CONTRACT.md 1–3)."""

    BLOCKERS = "blockers"
    IDLE_IN_TRANSACTION = "idle_in_transaction"
    LONG_RUNNING = "long_running"


OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_CONDITION = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Condition:
    severity: Severity
    op: str
    threshold: float
    setting: str | None = None  # the setting the number is read from, if any

    def met(self, value: float) -> bool:
        return OPERATORS[self.op](value, self.threshold)

    @property
    def text(self) -> str:
        """``> 300 (idle_in_transaction_warning_seconds)``, for people."""
        number = f"{self.threshold:g}"
        return f"{self.op} {number} ({self.setting})" if self.setting else f"{self.op} {number}"


@dataclass(frozen=True)
class Rule:
    """One metric of a check and the thresholds the status page colours it at."""

    value: str  # a metric column of the check
    conditions: tuple[Condition, ...] = ()
    alert: str | None = None  # the playbook (alert name) the row links to
    only: tuple[tuple[str, str], ...] = ()  # series whose labels have these values
    exclude: tuple[tuple[str, str], ...] = ()  # series whose labels have these values are left out
    judged_by_alerts: tuple[str, ...] = ()

    def selects(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.only):
            return False
        return not any(labels.get(k) == v for k, v in self.exclude)

    @property
    def worst_is_low(self) -> bool:
        """True when the thresholds look downwards (``<``): the smallest value is the worst."""
        return bool(self.conditions) and all(c.op in ("<", "<=") for c in self.conditions)


Numbers = Mapping[str, object]  # setting name → value


def load_chapter(raw: object, path: str, chapters: tuple[str, ...], problems: Problems) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str) or not raw.strip():
        problems.add(path, "expected the runbook chapter's name")
        return ""
    if chapters and raw not in chapters:
        problems.add(path, f"{raw!r} is not among the chapters: {', '.join(chapters)}")
    return raw


def load_chapters(raw: object, problems: Problems) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(c, str) and c.strip() for c in raw):
        problems.add("chapters", "expected a list of the runbook's chapter names, in order")
        return ()
    if len(set(raw)) != len(raw):
        problems.add("chapters", "a chapter is listed twice")
    return tuple(raw)


def load_offenders(
    raw: object, path: str, labels: tuple[str, ...], problems: Problems
) -> Offenders | None:
    if raw is None:
        return None
    try:
        kind = Offenders(str(raw))
    except ValueError:
        problems.add(path, f"expected one of {', '.join(Offenders)}, got {raw!r}")
        return None
    for label in ("pid", "backend_start"):
        if label not in labels:
            problems.add(path, f"offender rows need the label {label!r}")
    return kind


def _condition(
    raw: object, severity: Severity, path: str, settings: Numbers, problems: Problems
) -> Condition | None:
    match = _CONDITION.match(raw) if isinstance(raw, str) else None
    if match is None:
        problems.add(path, f"expected an operator and a number or setting, e.g. '> 0', got {raw!r}")
        return None
    op, operand = match.groups()
    try:
        return Condition(severity, op, float(operand))
    except ValueError:
        pass
    value = settings.get(operand)
    if operand not in settings:
        problems.add(path, f"{operand!r} is neither a number nor a setting")
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        problems.add(path, f"setting {operand} is not a number")
        return None
    return Condition(severity, op, float(value), setting=operand)


def _pairs(
    raw: object, path: str, labels: tuple[str, ...], problems: Problems
) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        problems.add(path, "expected a mapping of label to value")
        return ()
    for label in raw:
        if label not in labels:
            problems.add(f"{path}.{label}", "not a label of the check")
    return tuple((str(k), v) for k, v in raw.items())


def load_rules(
    raw: object, path: str, *, columns: tuple[str, ...], labels: tuple[str, ...],
    settings: Numbers, problems: Problems,
) -> tuple[Rule, ...]:  # fmt: skip
    """The ``status`` list of a check: ``{value, alert, warning|critical|info, only, exclude,
    judged_by_alerts}`` each."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.add(path, "expected a list of {value, alert, warning, critical, …}")
        return ()
    keys = {"value", "alert", "only", "exclude", "judged_by_alerts", *Severity}
    rules = []
    for index, item in enumerate(raw):
        where = f"{path}[{index}]"
        data = problems.mapping(item, where, keys, {"value"})
        value = data.get("value")
        if not isinstance(value, str) or value not in columns:
            if "value" in data:
                problems.add(f"{where}.value", f"{value!r} is not a metric column of the check")
            continue
        conditions = []
        for severity in Severity:
            if severity in data:
                found = _condition(data[severity], severity, f"{where}.{severity}", settings,
                                   problems)  # fmt: skip
                if found is not None:
                    conditions.append(found)
        alert = data.get("alert")
        if alert is not None and (not isinstance(alert, str) or not re.match(r"^\w+$", alert)):
            problems.add(f"{where}.alert", "expected an alert name")
            alert = None
        judged = data.get("judged_by_alerts", [])
        if isinstance(judged, str):
            judged = [judged]
        if not isinstance(judged, list) or not all(isinstance(j, str) for j in judged):
            problems.add(f"{where}.judged_by_alerts", "expected a list of conditions, as text")
            judged = []
        rules.append(
            Rule(
                value=value,
                conditions=tuple(conditions),
                alert=alert,
                only=_pairs(data.get("only"), f"{where}.only", labels, problems),
                exclude=_pairs(data.get("exclude"), f"{where}.exclude", labels, problems),
                judged_by_alerts=tuple(judged),
            )
        )
    return tuple(rules)
