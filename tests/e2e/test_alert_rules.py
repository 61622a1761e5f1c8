"""``promtool test rules`` on the committed rule tests (alerts/tests/): every alert fires above its
threshold after its ``for`` and stays silent just below it.

The tests are generated with the rules (pg_runbook_exporter/mixin/ruletests.py) from the examples
of pg_runbook_exporter/mixin/ruleexamples.py, whose numbers come from queries.yaml ``settings``;
their expected annotations are rendered from the rules' own templates, so a broken description
or runbook link fails too. Drift between them and the generator fails ``generate --check``.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import yaml

from pg_runbook_exporter.config import load_config
from pg_runbook_exporter.mixin import alertgen, ruletests
from pg_runbook_exporter.mixin.alertrules import RULES_FILE, rules
from pg_runbook_exporter.mixin.options import MixinOptions
from pg_runbook_exporter.mixin.ruleexamples import examples
from tests.support.stack import require_tool

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "alerts" / ruletests.TESTS_DIR
CONFIG = load_config()
EXAMPLES = examples(CONFIG, MixinOptions())


def _promtool_test(*files: Path) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool")
    return subprocess.run(
        [promtool, "test", "rules", *map(str, files)], capture_output=True, text=True, check=False
    )


def test_every_rule_has_a_firing_and_a_silent_example() -> None:
    for rule in rules():
        mine = [e for e in EXAMPLES if e.alert == rule.name]
        firing = [e for e in mine if any(f.severity == rule.severity for f in e.fires)]
        silent = [e for e in mine if all(f.severity != rule.severity for f in e.fires)]
        assert firing, f"{rule.name} ({rule.severity}) has no example where it fires"
        assert silent, f"{rule.name} ({rule.severity}) has no example where it stays silent"


def test_committed_rule_tests_are_the_generators_output() -> None:
    generated = {
        Path(path).name: text for path, text in ruletests.generate(CONFIG, MixinOptions()).items()
    }
    committed = {p.name: p.read_text(encoding="utf-8") for p in TESTS.glob("*.yml")}
    assert set(committed) == set(generated), "run `pg-runbook-exporter generate`"
    assert committed == generated, "alerts/tests/ differs: run `pg-runbook-exporter generate`"
    assert sum(text.count("- name: ") for text in committed.values()) == len(EXAMPLES)


def test_every_alert_fires_above_and_stays_silent_below_its_threshold() -> None:
    files = sorted(TESTS.glob("*.test.yml"))
    assert files
    done = _promtool_test(*files)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(files), done.stdout


def test_the_rule_tests_fail_on_rules_with_another_threshold(tmp_path: Path) -> None:
    """Rules regenerated with another threshold but the old tests: promtool says which alert."""
    changed = dataclasses.replace(
        CONFIG,
        settings=tuple(
            dataclasses.replace(s, value=0.71) if s.name == "connections_usage_warning_ratio" else s
            for s in CONFIG.settings
        ),
    )
    (tmp_path / RULES_FILE).write_text(alertgen.generate(changed)[RULES_FILE], encoding="utf-8")
    # the committed tests of that alert only: the others would pass, and take seconds
    committed = yaml.safe_load((TESTS / "every-1m.test.yml").read_text(encoding="utf-8"))
    committed["tests"] = [
        test for test in committed["tests"] if test["name"].startswith("PostgresConnectionsHigh:")
    ]
    assert len(committed["tests"]) == 5  # 4 around the thresholds, 1 naming the culprits
    (tmp_path / "tests").mkdir()
    subset = tmp_path / "tests" / "connections.test.yml"
    subset.write_text(yaml.safe_dump(committed, sort_keys=False), encoding="utf-8")
    done = _promtool_test(subset)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    # 0.71 ≤ the "below warning" example's 0.79: the warning fires where the test expects none;
    # where it is expected, its description now says 71% instead of 80%
    assert "PostgresConnectionsHigh: below warning" in output
    assert "threshold 71%" in output and "threshold 80%" in output
