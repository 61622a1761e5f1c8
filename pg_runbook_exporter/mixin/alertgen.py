"""Prometheus alert rules rendered from alerts.yaml and the thresholds in queries.yaml ``settings``.

Assumptions the rules make (docs/alerts/README.md): Prometheus scrapes the exporter as job
``--mixin.job`` (its series carry the ``--mixin.selector`` labels) and one exporter watches one
database server, so ``instance`` names the server.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml

from pg_runbook_exporter.config import Config
from pg_runbook_exporter.errors import ConfigError
from pg_runbook_exporter.mixin import offenders
from pg_runbook_exporter.mixin.alertrules import (
    ALERTS_FILE,
    OPTIONS,
    PLACEHOLDER,
    RULES_FILE,
    TEXTS,
    AlertRule,
    placeholders,
    rules,
)
from pg_runbook_exporter.mixin.options import MixinOptions

DEFAULTS = MixinOptions()


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
GROUP_PREFIX = "pg-runbook-exporter."  # rule groups keep the project's name, whatever the job


def _numeric(config: Config, name: str) -> float | None:
    try:
        value = config.setting(name)
    except KeyError:
        return None
    return None if isinstance(value, bool) or not isinstance(value, int | float) else value


def fill(template: str, config: Config, options: MixinOptions = DEFAULTS) -> str:
    """Replace every ``${setting[:format]}`` by the setting's value, and ``${job}``,
    ``${node_job}`` and ``${node_mountpoint}`` by generate's options."""

    def value(match: re.Match[str]) -> str:
        name, fmt = match.group(1), match.group(2)
        if name in OPTIONS:
            return str(getattr(options, name))
        number = _numeric(config, name)
        if number is None:
            raise ValueError(f"${{{name}}}: no numeric setting {name} in {config.path}")
        return _FORMATS[fmt](number)

    text = PLACEHOLDER.sub(value, template)
    # rules are written for the default namespace
    return re.sub(r"\bpgrb_", f"{config.namespace}_", text) if config.namespace != "pgrb" else text


def select(expr: str, config: Config, options: MixinOptions = DEFAULTS) -> str:
    """``expr`` with the extra selector added to every selector of ``up`` and of the exporter."""
    if not options.selector:
        return expr
    # a brace group on its own is skipped whole, so no label inside one is taken for a metric
    selector = re.compile(
        rf'(\{{[^}}]*\}})|(?<![\w:."$])(up|{re.escape(config.namespace)}_\w+)\b(\{{[^}}]*\}})?'
    )

    def add(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return match.group(0)
        inner = (match.group(3) or "{}")[1:-1].strip()
        return f"{match.group(2)}{{{inner + ', ' if inner else ''}{options.matchers}}}"

    return selector.sub(add, expr)


def settings_used(rule: AlertRule) -> set[str]:
    """Names of the settings a rule's expression, ``for`` or texts use."""
    texts = (rule.for_, *(getattr(rule, key) for key in TEXTS))
    return {name for text in texts for name, _ in placeholders(text) if name not in OPTIONS}


def check_settings(config: Config) -> None:
    """Every setting the rules name is a number in ``config``, or a ConfigError says where not."""
    problems = []
    for rule in rules():
        for key in ("for", *TEXTS):
            text = getattr(rule, "for_" if key == "for" else key)
            for name, _ in placeholders(text):
                if name not in OPTIONS and _numeric(config, name) is None:
                    problems.append(
                        f"{ALERTS_FILE}: {rule.source}.{key}: ${{{name}}} names no numeric "
                        f"setting of {config.path}"
                    )
        for name in rule.diagnosis.settings_used() if rule.diagnosis else ():
            if _numeric(config, name) is None:
                problems.append(
                    f"{ALERTS_FILE}: alerts.{rule.name}.diagnosis.sql: %({name})s is neither "
                    f"one of its labels nor a numeric setting of {config.path}"
                )
    if problems:
        raise ConfigError(sorted(set(problems)))


def setting_text(config: Config) -> Callable[[str], str]:
    """A setting's number as the SQL of a page's ``diagnose`` shows it."""

    def text(name: str) -> str:
        number = _numeric(config, name)
        if number is None:
            raise ValueError(f"%({name})s: no numeric setting {name} in {config.path}")
        return _number(number)

    return text


def _diagnosis_annotations(
    rule: AlertRule, config: Config, options: MixinOptions
) -> dict[str, str]:
    """culprit, diagnose, fix and do_not: what the page says about the cause and the way out."""
    found = {}
    if rule.culprit is not None:
        found["culprit"] = fill(offenders.go_culprit(rule.culprit), config, options)
    if rule.diagnosis is not None:
        found["diagnose"] = offenders.go_diagnose(rule.diagnosis, setting_text(config))
        found["fix"] = fill(offenders.go_fix(rule.diagnosis, rule.culprit), config, options)
        if rule.diagnosis.do_not is not None:
            found["do_not"] = fill(rule.diagnosis.do_not, config, options)
    return found


def _dashboard_url(rule: AlertRule, base: str) -> str:
    labels = ("job", "instance", *rule.dashboard_vars)
    params = "&".join(f"var-{label}={{{{ $labels.{label} | urlquery }}}}" for label in labels)
    return f"{base}{rule.dashboard}?{params}"


def render(rule: AlertRule, config: Config, options: MixinOptions = DEFAULTS) -> dict[str, Any]:
    """One rule as Prometheus reads it."""
    return {
        "alert": rule.name,
        "expr": select(fill(rule.expr, config, options), config, options),
        "for": fill(rule.for_, config, options),
        "labels": {"severity": rule.severity},
        "annotations": {
            "summary": fill(rule.summary, config, options),
            "description": fill(rule.description, config, options),
            **_diagnosis_annotations(rule, config, options),
            "runbook_url": f"{options.runbook_base_url}{rule.name}.md",
            "dashboard_url": _dashboard_url(rule, options.dashboard_base_url),
            "runbook_section": rule.runbook_section,
        },
    }


def document(config: Config, options: MixinOptions = DEFAULTS) -> dict[str, Any]:
    """The rule file's content: one rule group per group of alerts.yaml."""
    check_settings(config)
    groups: dict[str, list[dict[str, Any]]] = {}
    for rule in rules():
        groups.setdefault(GROUP_PREFIX + rule.group, []).append(render(rule, config, options))
    return {"groups": [{"name": name, "rules": items} for name, items in groups.items()]}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the expressions) as literal blocks, for readable diffs."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def dump(data: Any) -> str:
    """YAML as the generated files write it: keys in order, expressions as blocks."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)


def generate(config: Config, options: MixinOptions = DEFAULTS) -> dict[str, str]:
    """Relative path (under alerts/) → content of the generated rule file."""
    header = (
        "# Generated from pg_runbook_exporter/mixin/alerts.yaml and the settings of\n"
        "# pg_runbook_exporter/queries.yaml by"
        " `pg-runbook-exporter generate`; edit those, not this file. Playbooks: docs/alerts/.\n"
    )
    return {RULES_FILE: header + dump(document(config, options))}


def alerts_markdown(config: Config, options: MixinOptions = DEFAULTS) -> str:
    """A Markdown table of every rule: alert (linked to its playbook), severity, threshold, for."""
    lines = ["| alert | severity | threshold | for |", "|---|---|---|---|"]
    for rule in rules():
        link = f"[{rule.name}](docs/alerts/{rule.name}.md)"
        threshold = fill(rule.condition, config, options).replace("|", "\\|")
        lines.append(f"| {link} | {rule.severity} | {threshold} | {fill(rule.for_, config)} |")
    return "\n".join(lines) + "\n"
