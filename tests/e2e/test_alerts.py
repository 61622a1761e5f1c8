"""The alert rules and the Alertmanager example: generated from queries.yaml, valid for promtool and
amtool, built on metrics the exporter really exports, and delivered end to end.

The end-to-end test runs the real chain on loopback — PostgreSQL, the exporter, Prometheus with the
generated rules (``for`` overridden to 0s, 1 s scrape and evaluation) and Alertmanager with the
example configuration, its receivers pointed at the test's webhook — and proves that the
orphaned-mapping page arrives with its runbook link, that a primary without WAL archiving opens a
ticket, and that a database that stops pages once while every other alert of that instance is
inhibited.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from pg_runbook_exporter.config import Setting, load_config
from pg_runbook_exporter.mixin import alertgen
from pg_runbook_exporter.mixin.alertrules import RULES_FILE, rules
from pg_runbook_exporter.mixin.dashcapacity import NODE_METRICS
from pg_runbook_exporter.mixin.options import DEFAULT_RUNBOOK_BASE_URL, MixinOptions
from tests.support.rules import rules_firing_at_once
from tests.support.stack import (
    JOB,
    ExporterProcess,
    PrometheusStack,
    example_alertmanager_config,
    fast_config,
    prometheus_stack,
    require_tool,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "alerts"
PLAYBOOKS = REPO / "docs" / "alerts"
DASHBOARDS = REPO / "dashboards"
ALERTMANAGER = ALERTS / "alertmanager.yml"
CONFIG = load_config()
# Functions whose input must be a counter, and those a counter makes meaningless.
COUNTER_ONLY = {"rate", "irate", "increase", "resets"}
GAUGE_ONLY = {"delta", "idelta", "deriv", "predict_linear"}
SYNTHETIC = {"up"}  # made by Prometheus for every target, not exported
NODE = set(NODE_METRICS)  # node_exporter's, for the data volume
ALERT_NAMES = list(dict.fromkeys(rule.name for rule in rules()))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False)


def _rules(text: str) -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(text)["groups"] for r in g["rules"]]


# -- generated, and from one source of truth ---------------------------------------------------


def test_committed_rules_are_the_generators_output() -> None:
    generated = alertgen.generate(CONFIG)
    for path, content in generated.items():
        committed = ALERTS / path
        assert committed.is_file(), f"alerts/{path} is missing: run `pg-runbook-exporter generate`"
        assert committed.read_text(encoding="utf-8") == content, (
            f"alerts/{path} differs from what mixin/alertgen.py renders: regenerate it"
        )
    stray = {p.name for p in ALERTS.glob("*.rules.yml")} - set(generated)
    assert not stray, f"rule files no generator writes: {stray}"


def test_a_threshold_changed_in_queries_yaml_moves_the_rule() -> None:
    changed = dataclasses.replace(
        CONFIG,
        settings=tuple(
            dataclasses.replace(s, value=0.71) if s.name == "connections_usage_warning_ratio" else s
            for s in CONFIG.settings
        ),
    )
    before = _rules(alertgen.generate(CONFIG)[RULES_FILE])
    after = _rules(alertgen.generate(changed)[RULES_FILE])
    moved = [(b["expr"], a["expr"]) for b, a in zip(before, after, strict=True) if b != a]
    ratio = "pgrb_connections_usage_ratio >="
    assert moved == [(f"{ratio} 0.8", f"{ratio} 0.71")]
    assert "| usage ≥ 71% |" in alertgen.alerts_markdown(changed)


def test_every_rule_threshold_is_a_setting() -> None:
    settings = {s.name: s for s in CONFIG.settings}
    used = {settings[name].value for r in rules() for name in alertgen.settings_used(r)}
    thresholds = {float(v) for v in used if isinstance(v, int | float)}
    for rule in rules():
        for name in alertgen.settings_used(rule):
            setting: Setting = settings[name]
            assert isinstance(setting.value, int | float), name
        # any number left in an expression must be structural (0, 1, a window), not a threshold
        expr = alertgen.fill(rule.expr, CONFIG)
        literals = {float(n) for n in re.findall(r"(?<![\w.\[])(\d+(?:\.\d+)?)(?![\w\]])", expr)}
        assert literals <= {0.0, 1.0} | thresholds, (
            f"{rule.name}: a number in the expression is not from queries.yaml: {expr}"
        )


def test_rules_firing_at_once_replace_every_for_and_nothing_else() -> None:
    generated = _rules(alertgen.generate(CONFIG)[RULES_FILE])
    fast = _rules(rules_firing_at_once(CONFIG))
    assert {r["for"] for r in fast} == {"0s"}
    assert [{**r, "for": "0s"} for r in generated] == fast


def test_base_urls_are_configurable() -> None:
    options = MixinOptions(
        runbook_base_url="https://wiki.internal/pg/", dashboard_base_url="https://g/d/"
    )
    text = alertgen.generate(CONFIG, options)[RULES_FILE]
    for rule in _rules(text):
        annotations = rule["annotations"]
        assert annotations["runbook_url"] == f"https://wiki.internal/pg/{rule['alert']}.md"
        assert re.fullmatch(r"https://g/d/pgrb-[a-z]+\?var-job=.*", annotations["dashboard_url"])


def test_every_dashboard_link_opens_a_board_that_shows_the_alert() -> None:
    boards = {
        board["uid"]: board
        for board in (json.loads(p.read_text(encoding="utf-8")) for p in DASHBOARDS.glob("*.json"))
    }
    for rule in rules():
        board = boards.get(rule.dashboard)
        assert board is not None, f"{rule.name}: no dashboards/{rule.dashboard}.json"
        variables = {v["name"] for v in board.get("templating", {}).get("list", [])}
        wanted = {"job", "instance", *rule.dashboard_vars}
        assert wanted <= variables, (
            f"{rule.name}: board {rule.dashboard} lacks {wanted - variables}"
        )
        used = set(re.findall(r"\bpgrb_\w+", alertgen.fill(rule.expr, CONFIG)))
        panels = json.dumps(board.get("panels", []))
        assert not used or used & set(re.findall(r"\bpgrb_\w+", panels)), (
            f"{rule.name}: board {rule.dashboard} has no panel on {sorted(used)}"
        )


def test_alerts_markdown_lists_every_rule() -> None:
    table = alertgen.alerts_markdown(CONFIG)
    rows = [line for line in table.splitlines() if line.startswith("| [")]
    assert len(rows) == len(rules())
    assert (
        "| [PostgresLongRunningQuery](docs/alerts/PostgresLongRunningQuery.md) | warning | "
        "client query > 5 min | 1m |" in table
    )


# -- valid for the tools, and documented -------------------------------------------------------


def _matchings(node: Any) -> Iterator[Any]:
    """The vector matching (``on``/``ignoring`` labels) of every binary operation in an AST."""
    if isinstance(node, promql_parser.BinaryExpr):
        if node.modifier is not None and node.modifier.matching is not None:
            yield node.modifier.matching
        yield from _matchings(node.lhs)
        yield from _matchings(node.rhs)
    for attr in ("expr", "param"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, str | int | float):
            yield from _matchings(child)
    for arg in getattr(node, "args", None) or ():
        yield from _matchings(arg)


def test_documented_threshold_gauge_example_matches_each_exporter_on_its_own() -> None:
    text = (REPO / "docs" / "checks.md").read_text(encoding="utf-8")
    examples = [e for e in re.findall(r"`([^`]+)`", text) if "group_left" in e]
    assert examples, "docs/checks.md has no group_left example"
    for example in examples:
        matchings = list(_matchings(promql_parser.parse(example)))
        assert matchings, example
        for matching in matchings:
            # on() joins every exporter's threshold to every series: many-to-many with two
            assert {"instance", "job"} <= set(matching.labels), f"{matching} in {example}"


def test_promtool_accepts_every_rule_file(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    files = sorted(ALERTS.glob("*.rules.yml"))
    assert files
    overridden = tmp_path / "overridden.rules.yml"
    overridden.write_text(rules_firing_at_once(CONFIG))
    done = _run(promtool, "check", "rules", *map(str, files), str(overridden))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_amtool_accepts_the_alertmanager_example() -> None:
    amtool = require_tool("amtool")
    done = _run(amtool, "check-config", str(ALERTMANAGER))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=PortalIdMappingsOrphaned"], "pager"),
        (["severity=critical", "alertname=PostgresLockWait"], "pager"),
        (["severity=warning", "alertname=PortalIdMappingsOrphaned"], "ticket"),
        (["severity=warning", "alertname=PostgresLockWait"], "ticket"),
        (["severity=info", "alertname=PostgresUnusedIndexes"], "null"),
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receiver: str) -> None:
    amtool = require_tool("amtool")
    done = _run(
        amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}",
        f"--verify.receivers={receiver}", *labels,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == receiver


def test_info_reaches_nobody() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text(encoding="utf-8"))
    (null,) = [r for r in config["receivers"] if r["name"] == "null"]
    assert set(null) == {"name"}, "the null receiver must have no integrations"


def test_every_alert_has_a_playbook_and_every_playbook_an_alert() -> None:
    names = set(ALERT_NAMES)
    for name in sorted(names):
        path = PLAYBOOKS / f"{name}.md"
        assert path.is_file(), f"{name} has no playbook docs/alerts/{name}.md"
        text = path.read_text(encoding="utf-8")
        assert text.startswith(f"# {name}\n"), path
        for heading in ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation"):
            assert heading in text, f"{path.name} lacks {heading}"
    playbooks = {p.stem for p in PLAYBOOKS.glob("*.md")} - {"README"}
    assert playbooks == names, f"playbooks without an alert: {playbooks - names}"


def test_playbook_sql_avoids_the_runbooks_mistakes() -> None:
    blocks = 0
    for path in PLAYBOOKS.glob("*.md"):
        for sql in re.findall(r"```sql\n(.*?)```", path.read_text(encoding="utf-8"), re.DOTALL):
            blocks += 1
            where = f"{path.name}:\n{sql}"
            assert not re.search(r"\b(tablename|indexname|mean_time|total_time)\b", sql), where
            assert not re.search(r"NOT\s+IN\s*\(\s*SELECT", sql, re.IGNORECASE), where
            for statement in sql.split(";"):
                if "pg_stat_activity" in statement and "count(*)" in statement:
                    assert "backend_type" in statement, f"counts every backend: {where}"
    assert blocks >= len(ALERT_NAMES)


def _diagnosis_statements() -> Iterator[tuple[str, str]]:
    """(playbook, statement) for every SQL statement under a playbook's "## Diagnosis"."""
    for path in sorted(PLAYBOOKS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        section = text.partition("## Diagnosis")[2].partition("\n## ")[0]
        for sql in re.findall(r"```sql\n(.*?)```", section, re.DOTALL):
            for statement in sql.split(";"):
                lines = [ln for ln in statement.splitlines() if not ln.strip().startswith("--")]
                if "".join(lines).strip():
                    yield path.name, "\n".join(lines)


def test_playbook_diagnosis_sql_runs_on_postgresql(portal_db: Any) -> None:
    server = portal_db.server
    server.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", dbname=portal_db.name)
    ran = 0
    for playbook, text in _diagnosis_statements():
        # placeholders such as '<client_addr>' are for people to fill in
        statement = text.replace("'<client_addr>'", "'127.0.0.1'")
        assert not re.search(r"<[a-z_]+>", statement), f"{playbook}: placeholder in {statement}"
        try:
            server.execute(f"BEGIN READ ONLY; {statement}; ROLLBACK", dbname=portal_db.name)
        except Exception as exc:
            pytest.fail(f"{playbook}: {exc}\n{statement}")
        ran += 1
    assert ran >= len(ALERT_NAMES)


# -- built on metrics the exporter exports -----------------------------------------------------


def _selectors(node: Any, inside: str | None = None) -> Iterator[tuple[str, str | None]]:
    """(metric name, enclosing range function) for every selector in a PromQL AST."""
    if isinstance(node, promql_parser.VectorSelector):
        assert node.name, f"selector without a metric name: {node}"
        yield node.name, inside
    elif isinstance(node, promql_parser.MatrixSelector):
        yield from _selectors(node.vector_selector, inside)
    elif isinstance(node, promql_parser.Call):
        for arg in node.args:
            yield from _selectors(arg, node.func.name)
    else:
        for attr in ("lhs", "rhs", "expr", "param"):
            child = getattr(node, attr, None)
            if child is not None and not isinstance(child, str | int | float):
                yield from _selectors(child, inside)


def _exported_types(exposition: str) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", exposition, flags=re.MULTILINE))


def test_every_metric_an_alert_uses_is_exported_with_the_right_type(
    portal_db: Any, tmp_path: Path
) -> None:
    exporter = ExporterProcess(
        tmp_path, database_url=portal_db.monitor_dsn, config=fast_config(tmp_path / "q.yaml")
    )
    try:
        exporter.wait_ready()
        types = _exported_types(exporter.scrape())
    finally:
        exporter.stop()
    used: dict[str, set[str | None]] = {}
    for rule in rules():
        for name, function in _selectors(promql_parser.parse(alertgen.fill(rule.expr, CONFIG))):
            used.setdefault(name, set()).add(function)
    missing = sorted(set(used) - set(types) - SYNTHETIC - NODE)
    assert not missing, f"alerts use metrics the exporter does not export: {missing}"
    for name, functions in used.items():
        if name in SYNTHETIC | NODE:
            continue
        if functions & COUNTER_ONLY:
            assert types[name] == "counter", f"{functions & COUNTER_ONLY} on gauge {name}"
        if functions & GAUGE_ONLY:
            assert types[name] == "gauge", f"{functions & GAUGE_ONLY} on counter {name}"


# -- end to end ---------------------------------------------------------------------------------


def _inhibited(stack: PrometheusStack, alertname: str) -> list[dict[str, Any]]:
    assert stack.alertmanager is not None
    return [
        a
        for a in stack.alertmanager.alerts()
        if a["labels"]["alertname"] == alertname and a["status"]["inhibitedBy"]
    ]


def test_orphaned_mappings_page_then_database_down_silences_the_rest(
    own_server: Callable[..., Any], pg_servers: Any, tmp_path: Path
) -> None:
    server = own_server()
    db = pg_servers.portal_db(server)
    rule_file = tmp_path / RULES_FILE
    rule_file.write_text(rules_firing_at_once(CONFIG))
    with prometheus_stack(
        tmp_path / "stack",
        database_url=db.monitor_dsn,
        rule_files=[rule_file],
        alertmanager_config=example_alertmanager_config,
    ) as stack:
        assert stack.webhook is not None
        instance = stack.exporter.address
        stack.wait_for(f'pgrb_id_mappings_orphaned{{job="{JOB}"}} == 0')

        server.execute(
            "INSERT INTO id_mappings (id, user_id, whmcs_client_id, updated_at) "
            "SELECT 'orphan-' || g, 'deleted-user-' || g, 90000 + g, now() "
            "FROM generate_series(1, 3) g",
            dbname=db.name,
        )
        page = stack.wait_for_notification(
            "PortalIdMappingsOrphaned", labels={"severity": "critical"}
        )
        assert page["path"] == "/pager"
        assert page["labels"] == {
            "alertname": "PortalIdMappingsOrphaned",
            "severity": "critical",
            "instance": instance,
            "job": JOB,
        }
        annotations = page["annotations"]
        assert annotations["runbook_url"] == (
            f"{DEFAULT_RUNBOOK_BASE_URL}PortalIdMappingsOrphaned.md"
        )
        assert annotations["description"].startswith(
            f"id_mappings on {instance} now has 3 rows whose portal user no longer exists"
        )
        # the server of this test does not archive WAL: a ticket, matched to its role
        ticket = stack.wait_for_notification("PostgresWalArchivingDisabled")
        assert ticket["path"] == "/ticket"
        assert ticket["labels"] == {
            "alertname": "PostgresWalArchivingDisabled",
            "severity": "warning",
            "instance": instance,
            "job": JOB,
        }
        # the standing-fault ticket fires too, but the page inhibits it
        wait_until(
            lambda: _inhibited(stack, "PortalIdMappingsOrphaned"),
            what="the orphaned-mappings warning inhibited by its page",
            logs=stack.logs,
        )

        before_stop = len(stack.webhook.alerts())
        server.stop()
        down = stack.wait_for_notification("PostgresDown")
        assert down["path"] == "/pager"
        assert down["labels"]["instance"] == instance
        wait_until(
            lambda: _inhibited(stack, "PgRunbookCheckFailing"),
            what="failing checks inhibited by PostgresDown",
            logs=stack.logs,
        )
        # Alertmanager's status says "inhibited" as soon as the page is there; give the failing
        # checks' group its flush (group_wait + group_interval = 2 s) before looking for absence.
        time.sleep(3)
        after_stop = stack.webhook.alerts()[before_stop:]
        firing = {a["labels"]["alertname"] for a in after_stop if a["status"] == "firing"}
        assert firing == {"PostgresDown"}, f"notified although PostgresDown inhibits: {firing}"
        warnings = [
            a
            for a in stack.webhook.alerts()
            if a["labels"]["alertname"] == "PortalIdMappingsOrphaned"
            and a["labels"]["severity"] == "warning"
        ]
        assert warnings == [], "the orphaned-mappings ticket was sent while its page fired"
