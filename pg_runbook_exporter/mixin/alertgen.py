"""Prometheus alert rules generated from one table and the thresholds in queries.yaml ``settings``.

Each rule below is a template: ``%(setting)s`` is replaced by the setting's value (``%(name:fmt)s``
formats it for people: ``duration``, ``bytes``, ``percent``, ``count``), ``{{ … }}`` is Prometheus
templating, left as is. A warning and a critical rule about the same fault share an alert name, so
Alertmanager's ``equal: [alertname, …]`` inhibition lets the page silence its ticket.

Assumptions the rules make (docs/alerts/README.md): Prometheus scrapes the exporter as job ``JOB``
and one exporter watches one database server, so ``instance`` names the server.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from pg_runbook_exporter.config import Config
from pg_runbook_exporter.mixin.alertrules import (
    DEFAULT_DASHBOARD_BASE_URL,
    DEFAULT_RUNBOOK_BASE_URL,
    JOB,
    RULES,
    RULES_FILE,
    AlertRule,
)

logger = logging.getLogger(__name__)

_SETTING = re.compile(r"%\((\w+)(?::(\w+))?\)s")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _bytes(value: float) -> str:
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = 1024 ** (("KiB", "MiB", "GiB", "TiB").index(unit) + 1)
        if value >= scale:
            return f"{value / scale:g} {unit}"
    return f"{value:g} B"


def _prometheus_duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{_number(seconds)}s"


_FORMATS: dict[str | None, Callable[[float], str]] = {
    None: _number,
    "duration": _duration,
    "bytes": _bytes,
    "percent": lambda v: f"{v * 100:g}%",
    "count": lambda v: f"{int(v):,}",
    "for": _prometheus_duration,
}


def fill(template: str, config: Config) -> str:
    """Replace every ``%(setting[:format])s`` by the setting's value."""

    def value(match: re.Match[str]) -> str:
        name, fmt = match.group(1), match.group(2)
        setting = config.setting(name)
        if not isinstance(setting, int | float) or isinstance(setting, bool):
            raise ValueError(f"setting {name} is not a number: {setting!r}")
        if fmt not in _FORMATS:
            raise ValueError(f"unknown format {fmt!r} in %({name}:{fmt})s")
        return _FORMATS[fmt](setting)

    text = _SETTING.sub(value, template)
    # rules are written for the default namespace
    return re.sub(r"\bpgrb_", f"{config.namespace}_", text) if config.namespace != "pgrb" else text


def settings_used(rule: AlertRule) -> set[str]:
    """Names of the settings a rule's expression, threshold or text uses."""
    texts = (rule.expr, rule.for_, rule.threshold, rule.summary, rule.description)
    return {m.group(1) for text in texts for m in _SETTING.finditer(text)}


def alert_names() -> list[str]:
    """Every alert name once, in table order."""
    return list(dict.fromkeys(rule.name for rule in RULES))


def _dashboard_url(rule: AlertRule, base: str) -> str:
    labels = ("job", "instance", *rule.dashboard_vars)
    params = "&".join(f"var-{label}={{{{ $labels.{label} | urlquery }}}}" for label in labels)
    return f"{base}{rule.dashboard}?{params}"


def _rendered(
    rule: AlertRule, config: Config, *, runbook: str, dashboard: str, for_: str | None
) -> dict[str, Any]:
    return {
        "alert": rule.name,
        "expr": fill(rule.expr, config) + "\n" if "\n" in rule.expr else fill(rule.expr, config),
        "for": for_ if for_ is not None else fill(rule.for_, config),
        "labels": {"severity": rule.severity},
        "annotations": {
            "summary": fill(rule.summary, config),
            "description": fill(rule.description, config),
            "runbook_url": f"{runbook}{rule.name}.md",
            "dashboard_url": _dashboard_url(rule, dashboard),
            "runbook_section": rule.runbook_section,
        },
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the expressions) as literal blocks, for readable diffs."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def generate(
    config: Config,
    *,
    runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL,
    dashboard_base_url: str = DEFAULT_DASHBOARD_BASE_URL,
    for_override: str | None = None,
) -> dict[str, str]:
    """Relative path (under alerts/) → content of the generated rule file(s)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for rule in RULES:
        rendered = _rendered(
            rule, config, runbook=runbook_base_url, dashboard=dashboard_base_url, for_=for_override
        )
        groups.setdefault(f"{JOB}.{rule.group}", []).append(rendered)
    document = {"groups": [{"name": name, "rules": rules} for name, rules in groups.items()]}
    header = (
        "# Generated from pg_runbook_exporter/mixin/alertrules.py and the settings of\n"
        "# pg_runbook_exporter/queries.yaml by"
        " `pg-runbook-exporter generate`; edit those, not this file. Playbooks: docs/alerts/.\n"
    )
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)
    return {RULES_FILE: header + body}


def alerts_markdown(config: Config) -> str:
    """A Markdown table of every rule: alert (linked to its playbook), severity, threshold, for."""
    lines = ["| alert | severity | threshold | for |", "|---|---|---|---|"]
    for rule in RULES:
        link = f"[{rule.name}](docs/alerts/{rule.name}.md)"
        threshold = fill(rule.threshold, config).replace("|", "\\|")
        lines.append(f"| {link} | {rule.severity} | {threshold} | {fill(rule.for_, config)} |")
    return "\n".join(lines) + "\n"


def thresholds(config: Config) -> Mapping[str, float]:
    """Every numeric setting some rule uses, by name (what tests derive their examples from)."""
    used = sorted({name for rule in RULES for name in settings_used(rule)})
    values = {name: config.setting(name) for name in used}
    return {name: float(v) for name, v in values.items() if isinstance(v, int | float)}
