"""The schema of alerts.yaml (the alert rules as data), its loader, and one record per rule.

The schema is the dataclasses below: a key the file may hold is a field (``for`` is ``for_``),
a key without a default is required, and anything else is refused with the file and key named.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, cast, get_args

import yaml

from pg_runbook_exporter import playbook
from pg_runbook_exporter.errors import ConfigError
from pg_runbook_exporter.mixin import offenders
from pg_runbook_exporter.mixin.offenders import Culprit
from pg_runbook_exporter.playbook import Diagnosis
from pg_runbook_exporter.validation import Problems, UniqueKeyLoader

ALERTS_FILE = Path(__file__).with_name("alerts.yaml")
RULES_FILE = "pg-runbook-exporter.rules.yml"

Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[str, ...] = get_args(Severity)
# ${name} or ${name:format}; the names that are not settings of queries.yaml:
PLACEHOLDER = re.compile(r"\$\{(\w+)(?::(\w+))?\}")
THRESHOLD = "threshold"  # the setting the severity names as its threshold
JOB = "job"  # the job Prometheus scrapes the exporter as
# placeholders filled from generate's options, not from settings: the job, node_exporter's
# job and the data volume's mountpoint (their names are MixinOptions' fields)
OPTIONS = frozenset({JOB, "node_job", "node_mountpoint"})
FORMATS = frozenset({"duration", "bytes", "percent", "count", "for"})
TEXTS = ("expr", "condition", "summary", "description")  # what a severity may word differently
_NAME = re.compile(r"[A-Z][A-Za-z0-9]+")
_FOR = re.compile(r"(\d+[smhdwy])+|\$\{\w+:for\}")


@dataclass(frozen=True)
class Tier:
    """One severity of an alert: how long it must hold, its threshold, its own wording if any."""

    for_: str = field(metadata={"key": "for"})
    threshold: str | None = None
    expr: str | None = None
    condition: str | None = None
    summary: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class Alert:
    """One entry of alerts.yaml: an alert name and the rules of its severities."""

    alert: str
    group: str
    runbook_section: str
    severities: Mapping[str, Tier]
    expr: str | None = None
    condition: str | None = None
    summary: str | None = None
    description: str | None = None
    dashboard: str | None = None
    dashboard_vars: tuple[str, ...] = ()
    culprit: Culprit | None = None  # the offender series its page names (offenders.py)
    diagnosis: object = None  # read by playbook.py, the runtime's reader of this file


@dataclass(frozen=True)
class AlertFile:
    groups: Mapping[str, str]  # rule group → uid of the board showing its alerts
    alerts: tuple[Alert, ...]


@dataclass(frozen=True)
class AlertRule:
    """One Prometheus rule: an alert at one severity, its ``${threshold}`` named."""

    name: str
    severity: Severity
    group: str
    expr: str
    for_: str
    condition: str  # the threshold for people
    summary: str
    description: str
    runbook_section: str
    dashboard: str  # uid of the board in dashboards/ that its dashboard_url opens
    dashboard_vars: tuple[str, ...]  # labels passed besides job and instance, as var-<label>
    source: str  # where alerts.yaml declares it: alerts.<name>.severities.<severity>
    culprit: Culprit | None = None
    diagnosis: Diagnosis | None = None


def placeholders(text: str) -> Iterator[tuple[str, str | None]]:
    """(name, format or None) of every ``${…}`` in ``text``."""
    for match in PLACEHOLDER.finditer(text):
        yield match.group(1), match.group(2)


def _keys(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.metadata.get("key", f.name): f for f in dataclasses.fields(cls)}


def _required(cls: type) -> set[str]:
    return {
        key
        for key, f in _keys(cls).items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }


def _value(kind: str, raw: object, path: str, problems: Problems) -> Any:
    if kind.startswith("str"):
        if not isinstance(raw, str) or not raw.strip():
            problems.add(path, f"expected a non-empty string, got {raw!r}")
        return raw
    if kind == "tuple[str, ...]":
        if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
            problems.add(path, f"expected a list of names, got {raw!r}")
            return ()
        return tuple(raw)
    raise TypeError(f"{path}: no reader for {kind}")


def _record(cls: type, raw: object, path: str, problems: Problems, **built: Any) -> Any:
    """``cls`` from the mapping ``raw``; the fields in ``built`` are read by the caller."""
    keys = _keys(cls)
    data = problems.mapping(raw, path, set(keys), _required(cls))
    values = dict(built)
    for key, item in data.items():
        f = keys[key]
        if f.name not in built:
            values[f.name] = _value(str(f.type), item, f"{path}.{key}", problems)
    try:
        return cls(**values)
    except TypeError:  # a required key is missing: already reported
        return None


def _tiers(raw: object, path: str, problems: Problems) -> dict[str, Tier]:
    if not isinstance(raw, dict) or not raw:
        problems.add(path, f"expected a mapping of severities ({', '.join(SEVERITIES)})")
        return {}
    tiers = {}
    for severity, item in raw.items():
        if severity not in SEVERITIES:
            problems.add(f"{path}.{severity}", f"unknown severity (one of {', '.join(SEVERITIES)})")
        elif (tier := _record(Tier, item, f"{path}.{severity}", problems)) is not None:
            tiers[severity] = tier
    return tiers


def _check(alert: Alert, path: str, groups: Mapping[str, str], problems: Problems) -> None:
    if not _NAME.fullmatch(alert.alert):
        problems.add(f"{path}.alert", "an alert name is CamelCase letters and digits")
    if alert.group not in groups:
        problems.add(f"{path}.group", f"no such group (groups: {', '.join(groups)})")
    for severity, tier in alert.severities.items():
        where = f"{path}.severities.{severity}"
        if not _FOR.fullmatch(tier.for_):
            problems.add(f"{where}.for", f"expected a duration such as 5m, got {tier.for_!r}")
        uses_threshold = False
        for key in TEXTS:
            text = getattr(tier, key) or getattr(alert, key)
            if text is None:
                problems.add(where, f"no {key}: neither the alert nor the severity has one")
                continue
            for name, fmt in placeholders(text):
                uses_threshold |= name == THRESHOLD
                if fmt is not None and (fmt not in FORMATS or name in OPTIONS):
                    problems.add(f"{where}.{key}", f"${{{name}:{fmt}}}: no such format here")
        if uses_threshold != (tier.threshold is not None):
            problems.add(
                f"{where}.threshold",
                "names the setting of ${threshold}: give it exactly when the texts use it",
            )


def load(path: Path = ALERTS_FILE) -> AlertFile:
    """Read and check alerts.yaml; every problem at once, as a ConfigError naming file and key."""
    problems = Problems(str(path))
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)  # noqa: S506
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError([f"{path}: {exc}"]) from exc
    top = problems.mapping(raw, "", {"groups", "alerts"}, {"groups", "alerts"})
    groups = top.get("groups") or {}
    if not isinstance(groups, dict) or not all(isinstance(v, str) for v in groups.values()):
        problems.add("groups", "expected a mapping of group name → board uid")
        groups = {}
    alerts: list[Alert] = []
    entries = top.get("alerts")
    if not isinstance(entries, list):
        problems.add("alerts", "expected a list of alerts")
        entries = []
    for index, entry in enumerate(entries):
        name = entry.get("alert") if isinstance(entry, dict) else None
        where = f"alerts.{name}" if isinstance(name, str) else f"alerts[{index}]"
        if any(a.alert == name for a in alerts):
            problems.add(where, "a second entry of this name: give it one entry, its severities")
        known = len(problems.items)
        tiers, built = {}, {}
        if isinstance(entry, dict) and "severities" in entry:
            tiers = _tiers(entry["severities"], f"{where}.severities", problems)
        if isinstance(entry, dict) and "culprit" in entry:
            built["culprit"] = offenders.parse(entry["culprit"], f"{where}.culprit", problems)
        if isinstance(entry, dict):
            built["diagnosis"] = entry.get("diagnosis")
        alert = _record(Alert, entry, where, problems, severities=tiers, **built)
        if alert is not None and len(problems.items) == known:  # well-formed: check the meaning
            _check(alert, where, groups, problems)
            alerts.append(alert)
    if problems.items:
        raise ConfigError(problems.items)
    return AlertFile(groups=groups, alerts=tuple(alerts))


def _named(text: str, threshold: str | None) -> str:
    """``text`` with ``${threshold…}`` turned into the setting it stands for."""
    if threshold is None:
        return text

    def name(match: re.Match[str]) -> str:
        whole = match.group(0)
        return whole.replace(THRESHOLD, threshold, 1) if match.group(1) == THRESHOLD else whole

    return PLACEHOLDER.sub(name, text)


@cache
def rules(path: Path = ALERTS_FILE) -> tuple[AlertRule, ...]:
    """Every rule of alerts.yaml in file order, a pair's severities in the order written."""
    data = load(path)
    diagnoses = playbook.load(path)
    flat = []
    for alert in data.alerts:
        for severity, tier in alert.severities.items():
            texts = {
                key: _named(getattr(tier, key) or getattr(alert, key), tier.threshold)
                for key in TEXTS
            }
            flat.append(
                AlertRule(
                    name=alert.alert,
                    severity=cast(Severity, severity),
                    group=alert.group,
                    for_=_named(tier.for_, tier.threshold),
                    runbook_section=alert.runbook_section,
                    dashboard=alert.dashboard or data.groups[alert.group],
                    dashboard_vars=alert.dashboard_vars,
                    source=f"alerts.{alert.alert}.severities.{severity}",
                    culprit=alert.culprit,
                    diagnosis=diagnoses.get(alert.alert),
                    **texts,
                )
            )
    return tuple(flat)
