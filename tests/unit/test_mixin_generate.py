"""Files derived from queries.yaml are committed exactly as the generators produce them, and
``generate``'s options (links, job, selector) reach every file that depends on them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import promql_parser
import yaml

from pg_runbook_exporter.config import load_config
from pg_runbook_exporter.mixin.alertrules import RULES_FILE, rules
from pg_runbook_exporter.mixin.dashcapacity import NODE_METRICS
from pg_runbook_exporter.mixin.generate import drift
from tests.support.stack import require_tool
from tests.unit.test_mixin_dashgen import STATIC_VALUES, all_queries, substitute, walk

REPO = Path(__file__).resolve().parents[2]


def test_generated_files_match_queries_yaml() -> None:
    stale = drift(load_config(), root=REPO)
    assert stale == [], "run `pg-runbook-exporter generate` and commit the result"


def test_generate_check_fails_on_a_hand_edited_file(tmp_path: Path) -> None:
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    shutil.copy(REPO / "pg_runbook_exporter" / "queries.yaml", tmp_path / "queries.yaml")
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copytree(REPO / "alerts", tmp_path / "alerts", dirs_exist_ok=True)
    shutil.copytree(REPO / "dashboards", tmp_path / "dashboards", dirs_exist_ok=True)
    metrics = tmp_path / "docs" / "metrics.md"
    metrics.write_text(metrics.read_text() + "\nA line someone added by hand.\n")
    command = [
        sys.executable,
        "-m",
        "pg_runbook_exporter",
        "generate",
        "--root",
        str(tmp_path),
        "--config",
        str(tmp_path / "queries.yaml"),
    ]
    result = subprocess.run([*command, "--check"], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "docs/metrics.md: differs from the generator's output" in result.stderr
    subprocess.run(command, check=True, capture_output=True)
    again = subprocess.run([*command, "--check"], capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr


def test_alert_links_point_where_the_deployment_says(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pg_runbook_exporter", "generate", "--root", str(tmp_path),
         "--alerts.runbook-base-url", "https://wiki.portal.internal/db/",
         "--alerts.dashboard-base-url", "https://grafana.portal.internal/d/"],
        check=True, capture_output=True,
    )  # fmt: skip
    rules = (tmp_path / "alerts" / "pg-runbook-exporter.rules.yml").read_text()
    assert "runbook_url: https://wiki.portal.internal/db/PostgresDown.md" in rules
    assert "dashboard_url: https://grafana.portal.internal/d/pgrb-health" in rules
    assert "example.com" not in rules
    assert not (tmp_path / "README.md").exists()  # no checkout here: only the generated files


def _generate(root: Path, *options: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pg_runbook_exporter", "generate", "--root", str(root)]
    return subprocess.run([*command, *options], capture_output=True, text=True, check=False)


def _selectors(expr: str) -> list[Any]:
    return [
        n for n in walk(promql_parser.parse(expr)) if isinstance(n, promql_parser.VectorSelector)
    ]


def _equalities(selector: Any) -> dict[str, str]:
    return {
        m.name: m.value for m in selector.matchers.matchers if m.op == promql_parser.MatchOp.Equal
    }


SELECTOR = {"cluster": "eu1", "env": "prod"}
# node_exporter's series carry its own job and the data volume's mountpoint, not the selector
NODE = {"job": "hosts", "mountpoint": "/srv/pgdata"}


def _wanted(selector: Any) -> dict[str, str]:
    return NODE if selector.name in NODE_METRICS else SELECTOR


def test_job_and_selector_reach_the_rules_their_tests_and_the_boards(tmp_path: Path) -> None:
    done = _generate(
        tmp_path, "--mixin.job", "portal-db", "--mixin.selector", 'cluster="eu1", env="prod"',
        "--mixin.node-job", NODE["job"], "--mixin.node-mountpoint", NODE["mountpoint"],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    alerts = tmp_path / "alerts"
    promtool = require_tool("promtool")
    checked = subprocess.run(
        [promtool, "check", "rules", str(alerts / RULES_FILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout
    tests = sorted((alerts / "tests").glob("*.test.yml"))
    assert len(tests) == 3
    tested = subprocess.run(
        [promtool, "test", "rules", *map(str, tests)], capture_output=True, text=True, check=False
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr

    document = yaml.safe_load((alerts / RULES_FILE).read_text(encoding="utf-8"))
    exprs = [rule["expr"] for group in document["groups"] for rule in group["rules"]]
    assert len(exprs) == len(rules())
    ups = 0
    for expr in exprs:
        for selector in _selectors(expr):
            labels = _equalities(selector)
            assert _wanted(selector).items() <= labels.items(), f"{selector} in {expr}"
            if selector.name == "up":
                ups += 1
                assert labels["job"] == "portal-db", expr
    assert ups == 2  # PgRunbookExporterDown and PgRunbookExporterAbsent
    for path in sorted(tests):
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for series in test["input_series"]:
                (selector,) = _selectors(series["series"])
                labels = _equalities(selector)
                assert _wanted(selector).items() <= labels.items(), series
                # one example adds a target of another job that must not count as the exporter
                assert labels["job"] in ("portal-db", NODE["job"]) or test["name"].startswith(
                    "PgRunbookExporterAbsent"
                ), series

    queries = 0
    for board_path in sorted((tmp_path / "dashboards").glob("*.json")):
        board = json.loads(board_path.read_text(encoding="utf-8"))
        variables = [
            v["query"]["query"]
            for v in board["templating"]["list"]
            if "query" in v and isinstance(v["query"], dict)
        ]
        expressions = [target["expr"] for _, target in all_queries(board)]
        expressions += [q.removeprefix("label_values(").rpartition(",")[0] for q in variables]
        for expr in expressions:
            queries += 1
            for selector in _selectors(substitute(expr, STATIC_VALUES)):
                wanted = _wanted(selector).items()
                assert wanted <= _equalities(selector).items(), (board_path.name, expr)
    assert queries > 100


def test_committed_files_keep_the_default_job_and_no_selector() -> None:
    text = (REPO / "alerts" / RULES_FILE).read_text(encoding="utf-8")
    assert 'expr: up{job="pg-runbook-exporter"} == 0\n' in text
    assert "expr: pgrb_up == 0\n" in text  # no extra matcher


def test_a_selector_that_tests_cannot_reproduce_is_refused(tmp_path: Path) -> None:
    for selector, message in (
        ('cluster=~"eu.*"', 'only label="value" matchers'),
        ('job="other"', "use --mixin.job"),
        ("cluster=eu1", 'expected label="value"'),
    ):
        done = _generate(tmp_path, "--mixin.selector", selector)
        assert done.returncode == 2, (selector, done.stderr)
        assert "--mixin.selector" in done.stderr and message in done.stderr, done.stderr
    assert not (tmp_path / "alerts").exists()
