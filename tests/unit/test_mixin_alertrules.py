"""alerts.yaml, the alert rules as data: its schema refuses what it does not declare, naming the
file and the key, and a warning/critical pair is one entry rendered as two rules."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from pg_runbook_exporter.config import load_config
from pg_runbook_exporter.errors import ConfigError
from pg_runbook_exporter.mixin import alertgen, alertrules
from pg_runbook_exporter.mixin.options import MixinOptions

GOOD = """\
groups:
  connections: pgrb-connections
alerts:
  - alert: PostgresConnectionsHigh
    group: connections
    expr: pgrb_connections_usage_ratio >= ${threshold}
    condition: usage ≥ ${threshold:percent}
    summary: Connection slots {{ $value | humanizePercentage }} used
    description: over ${threshold:percent} on {{ $labels.instance }}
    runbook_section: Connection Pool Monitoring
    severities:
      warning: {for: 5m, threshold: connections_usage_warning_ratio}
      critical: {for: 2m, threshold: connections_usage_critical_ratio}
"""


def _load(tmp_path: Path, text: str) -> tuple[alertrules.AlertRule, ...]:
    path = tmp_path / "alerts.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return alertrules.rules(path)


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, text)
    return raised.value.problems


def test_a_pair_is_one_entry_and_two_rules_each_with_its_own_setting(tmp_path: Path) -> None:
    warning, critical = _load(tmp_path, GOOD)
    assert (warning.name, warning.severity, warning.for_) == (
        "PostgresConnectionsHigh",
        "warning",
        "5m",
    )
    assert warning.expr == "pgrb_connections_usage_ratio >= ${connections_usage_warning_ratio}"
    assert critical.condition == "usage ≥ ${connections_usage_critical_ratio:percent}"
    assert critical.dashboard == "pgrb-connections"  # the group's board
    config = load_config()
    assert alertgen.fill(critical.description, config) == "over 95% on {{ $labels.instance }}"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("    group:", "    grop:"), "alerts.PostgresConnectionsHigh.grop: unknown key"),
        (("    group:", "    dashbord: x\n    group:"), "High.dashbord: unknown key"),
        (("{for: 5m,", "{fr: 5m,"), "severities.warning.fr: unknown key"),
        (("", ""), None),  # the file as it stands loads
        (("      warning:", "      page:"), "severities.page: unknown severity"),
        (("for: 2m, threshold: connections_usage_critical_ratio", "for: 2m"),
         "severities.critical.threshold: names the setting of ${threshold}"),
        (("{threshold:percent}\n    summary", "{threshold:percnt}\n    summary"),
         "severities.warning.condition: ${threshold:percnt}: no such format"),
        (("    group: connections", "    group: wal"), "High.group: no such group"),
        (("    expr: pgrb_connections_usage_ratio >= ${threshold}\n", ""),
         "severities.warning: no expr: neither the alert nor the severity has one"),
        (("{for: 5m,", "{for: soon,"), "severities.warning.for: expected a duration"),
        (("alert: PostgresConnectionsHigh", "alert: postgres-high"), "an alert name is CamelCase"),
    ],
)  # fmt: skip
def test_the_schema_names_the_file_and_the_key(
    tmp_path: Path, change: tuple[str, str], problem: str | None
) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD or problem is None
    if problem is None:
        assert len(_load(tmp_path, text)) == 2
        return
    problems = _problems(tmp_path, text)
    assert any(p.startswith(f"{tmp_path / 'alerts.yaml'}: ") and problem in p for p in problems), (
        problems
    )


def test_a_second_entry_of_one_name_is_refused(tmp_path: Path) -> None:
    entry = GOOD.split("alerts:\n", 1)[1]
    problems = _problems(tmp_path, GOOD + entry)
    assert any("alerts.PostgresConnectionsHigh: a second entry of this name" in p for p in problems)


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        GOOD.replace("    group: connections\n", "    group: connections\n    group: wal\n"),
    )
    assert "duplicate key 'group'" in problems[0]


def test_a_setting_the_rules_need_missing_from_queries_yaml_names_the_rule() -> None:
    config = load_config()
    without = dataclasses.replace(
        config, settings=tuple(s for s in config.settings if s.name != "app_pool_size")
    )
    with pytest.raises(ConfigError) as raised:
        alertgen.generate(without)
    assert any(
        "alerts.yaml: alerts.PortalAppPoolSaturated.severities.warning.expr: ${app_pool_size} "
        "names no numeric setting of" in p
        for p in raised.value.problems
    ), raised.value.problems


def test_the_bundled_file_holds_every_pair_as_one_entry() -> None:
    data = alertrules.load()
    names = [alert.alert for alert in data.alerts]
    assert len(names) == len(set(names))
    pairs = [a for a in data.alerts if len(a.severities) == 2]
    assert {a.alert for a in pairs} >= {"PostgresConnectionsHigh", "PostgresXidWraparound"}
    assert len(alertrules.rules()) == sum(len(a.severities) for a in data.alerts)


def test_placeholders_never_collide_with_prometheus_templating() -> None:
    rendered = alertgen.document(load_config(), MixinOptions())
    for group in rendered["groups"]:
        for rule in group["rules"]:
            texts = [rule["expr"], rule["for"], *rule["annotations"].values()]
            assert not any("${" in text for text in texts), rule["alert"]
