"""A check's chapter, status rules and offenders kind: from queries.yaml, refused when wrong."""

from __future__ import annotations

import pytest

from pg_runbook_exporter.config import load_config, parse_config
from pg_runbook_exporter.errors import ConfigError
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
