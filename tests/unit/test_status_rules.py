"""A check's chapter, status rules and offenders kind: from queries.yaml, refused when wrong."""

from __future__ import annotations

import pytest

from pg_runbook_exporter.config import load_config, parse_config
from pg_runbook_exporter.errors import ConfigError
from pg_runbook_exporter.mixin.alertrules import rules
from pg_runbook_exporter.status import playbooks
from pg_runbook_exporter.status.rules import Offenders, Severity

BASE = """
settings:
  limit_seconds: {value: 300, help: A limit.}
  name_setting: {value: abc, help: Text.}
chapters: [Connections]
checks:
  c:
    help: A check.
    sql: SELECT 1::int AS n, now() AS since_ts, '1' AS pid, '' AS backend_start
    labels: [pid, backend_start]
    metrics:
      n: {name: n, type: gauge, help: N.}
      since_ts: {name: since_timestamp_seconds, type: gauge, help: Since.}
"""


def problems(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + extra)
    return caught.value.problems


def test_a_threshold_reads_the_setting_it_names() -> None:
    config = parse_config(
        BASE
        + """    chapter: Connections
    offenders: long_running
    status:
      - {value: since_ts, warning: "> limit_seconds", critical: ">= 900", alert: SomeAlert}
"""
    )
    (check,) = config.checks
    (rule,) = check.status
    assert (check.chapter, check.offenders) == ("Connections", Offenders.LONG_RUNNING)
    assert [(c.severity, c.op, c.threshold, c.setting) for c in rule.conditions] == [
        (Severity.CRITICAL, ">=", 900.0, None),
        (Severity.WARNING, ">", 300.0, "limit_seconds"),
    ]
    assert rule.conditions[1].met(301) and not rule.conditions[1].met(300)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("    chapter: Nowhere\n", "checks.c.chapter: 'Nowhere' is not among the chapters"),
        ("    status: [{value: missing}]\n", "checks.c.status[0].value: 'missing' is not a metric"),
        ('    status: [{value: n, warning: "> no_such"}]\n', "'no_such' is neither a number"),
        ('    status: [{value: n, warning: "> name_setting"}]\n', "name_setting is not a number"),
        ('    status: [{value: n, warning: "about 3"}]\n', "expected an operator and a number"),
        ("    status: [{value: n, only: {datname: x}}]\n", "only.datname: not a label"),
        ("    offenders: everything\n", "checks.c.offenders: expected one of"),
    ],
)
def test_a_wrong_status_key_is_refused_naming_its_path(extra: str, expected: str) -> None:
    found = problems(extra)
    assert any(expected in p for p in found), found


def test_every_shipped_check_has_a_chapter_and_every_rule_a_playbook() -> None:
    config = load_config()
    books = playbooks.load()
    assert [c.name for c in config.checks if not c.chapter] == []
    named = {r.alert for c in config.checks for r in c.status if r.alert}
    assert sorted(n for n in named if not books.has(n)) == []
    kinds = sorted(str(c.offenders) for c in config.checks if c.offenders)
    assert kinds == sorted(str(k) for k in Offenders)  # CONTRACT.md 1–3, one check each


def test_a_blocker_listed_turns_the_lock_blockers_row_to_warning() -> None:
    """Fails when lock_blockers' status rule has no threshold: the row then reads OK while the
    page names a blocker above it (every blocker series means a wait past its threshold)."""
    (check,) = [c for c in load_config().checks if c.name == "lock_blockers"]
    (rule,) = check.status
    assert [(c.severity, c.op, c.threshold) for c in rule.conditions] == [
        (Severity.WARNING, ">", 0.0)
    ]
    assert rule.conditions[0].met(1) and not rule.conditions[0].met(0)


def test_every_status_threshold_is_its_alerts_setting_and_severity() -> None:
    """One source of truth: a status condition linked to an alert names a severity that alert
    has, and its number is the setting the alert's expression reads (``${setting}``), or the
    literal the expression compares the same metric with. A bare 0 or 1 is allowed for an
    offender series the alert does not read (its presence is the fault). Fails when a threshold
    or severity is changed on one side only, or a status rule names an alert it does not judge."""
    alerts = {(r.name, str(r.severity)): r.expr for r in rules()}
    checked = 0
    drift = []
    for check in load_config().checks:
        for rule in check.status:
            metric = next(m.name for m in check.metrics if m.column == rule.value)
            for cond in rule.conditions:
                where = f"{check.name}.{rule.value} {cond.severity} {cond.text}"
                expr = alerts.get((str(rule.alert), str(cond.severity)))
                if expr is None:
                    drift.append(f"{where}: {rule.alert} has no {cond.severity} rule")
                elif cond.setting is not None:
                    if f"${{{cond.setting}}}" not in expr:
                        drift.append(f"{where}: {rule.alert} does not read {cond.setting}")
                elif metric in expr:
                    if f"{cond.op} {cond.threshold:g}" not in expr:
                        drift.append(f"{where}: {rule.alert} compares {metric} otherwise")
                elif cond.threshold not in (0, 1):
                    drift.append(f"{where}: a literal the alert {rule.alert} never reads")
                checked += 1
    assert drift == []
    assert checked >= 30  # the shipped rules were read, not an empty list
