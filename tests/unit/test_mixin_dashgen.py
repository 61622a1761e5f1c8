"""The generated Grafana boards as files: Grafana's JSON model, layout, queries and thresholds.

What a live Prometheus makes of every query is in test_dashboards_live.py; the helpers here
(walking panels, substituting variables, listing the metrics a query names) serve both.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from pg_runbook_exporter.config import Config, load_config
from pg_runbook_exporter.mixin import alertgen, alertrules, dashgen
from pg_runbook_exporter.mixin.dashcapacity import NODE_METRICS
from pg_runbook_exporter.mixin.dashdetail import ARCHIVING_OFF, STORAGE
from pg_runbook_exporter.mixin.dashpanels import (
    ALERT_COLOURS,
    ANY,
    DATASOURCE,
    SEVERITY_COLOURS,
    Metrics,
    Panel,
)
from pg_runbook_exporter.mixin.dashrender import GRID_WIDTH, SCHEMA_VERSION, TAG
from pg_runbook_exporter.mixin.options import DEFAULT_JOB
from tests.support.stack import require_tool

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
PANEL_TYPES = {"stat", "timeseries", "table", "bargauge", "text"}
VARIABLES = ["datasource", "job", "instance", "datname"]
# Grafana's unit ids (packages/grafana-data/src/valueFormats/categories.ts) these boards may use.
UNITS = {"none", "short", "percentunit", "s", "bytes", "ops", "cps"}
# A range no panel writes itself: what $__rate_interval becomes when checking its use.
SENTINEL = "7777s"
FRONT_TILES = {
    "Database up", "Connection slots used", "Longest running query", "Longest lock wait",
    "Worst dead-row ratio", "Largest database", "Oldest WAL not archived", "Orphaned mappings",
    "Duplicate mappings", "Failed migrations", "Checks failing / stale",
}  # fmt: skip


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config()


@pytest.fixture(scope="module")
def boards(config: Config) -> dict[str, dict[str, Any]]:
    """uid → the dashboard JSON generate() produces."""
    files = dashgen.generate(config)
    return {
        json.loads(text)["uid"]: json.loads(text)
        for path, text in files.items()
        if path.endswith(".json")
    }


def data_panels(board: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that queries (rows excluded), collapsed rows' panels included."""
    for panel in board["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with Grafana's variables replaced (longest names first: $__rate_interval)."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    return expr


STATIC_VALUES = {
    "job": "pg-runbook-exporter",
    "instance": "127.0.0.1:9187",
    "datname": "(portal|postgres)",
    "__rate_interval": SENTINEL,
}


def variable_selector(variable: Mapping[str, Any]) -> str:
    """The series selector inside a ``label_values(selector, label)`` variable query."""
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
    assert match, variable["query"]
    return match.group(1)


def walk(node: Any) -> Iterator[Any]:
    """Every node of a promql_parser expression tree."""
    yield node
    for attribute in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attribute, None)
        if child is not None and not isinstance(child, str | float | int):
            yield from walk(child)
    for arg in getattr(node, "args", None) or ():
        yield from walk(arg)


def metric_names(expr: str) -> set[str]:
    return {
        n.name
        for n in walk(promql_parser.parse(expr))
        if isinstance(n, promql_parser.VectorSelector) and n.name
    }


def all_queries(board: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in data_panels(board):
        for target in panel["targets"]:
            yield panel, target


def model_panels(config: Config) -> Iterator[tuple[str, Panel]]:
    for board in dashgen.boards(config):
        for panel in board.panels:
            yield board.uid, panel


def test_committed_boards_and_provisioning_equal_the_generator_output(config: Config) -> None:
    generated = dashgen.generate(config)
    committed = {
        str(p.relative_to(DASHBOARDS)): p.read_text(encoding="utf-8")
        for p in DASHBOARDS.rglob("*")
        if p.is_file()
    }
    assert sorted(committed) == sorted(generated), "run `pg-runbook-exporter generate`"
    for path, content in generated.items():
        assert committed[path] == content, f"dashboards/{path} differs from the generator"


def test_every_board_is_a_current_grafana_model_without_import_inputs(
    boards: dict[str, dict[str, Any]],
) -> None:
    assert SCHEMA_VERSION >= 39
    for uid, board in boards.items():
        text = json.dumps(board)
        assert "__inputs" not in board and "${DS_" not in text, uid
        assert board["schemaVersion"] == SCHEMA_VERSION
        assert board["id"] is None and re.fullmatch(r"[a-z0-9-]{1,40}", uid)
        assert isinstance(board["title"], str) and board["title"]
        assert TAG in board["tags"]
        assert isinstance(board["refresh"], str) and board["time"]["to"] == "now"
        assert "time_options" not in board["timepicker"]  # removed by schema version 41
        assert [v["name"] for v in board["templating"]["list"]] == VARIABLES
        assert board["links"][0]["type"] == "dashboards" and board["links"][0]["tags"] == [TAG]
        for panel in board["panels"]:
            assert panel["type"] in PANEL_TYPES | {"row"}, (uid, panel["title"])
            assert "graph" not in panel["type"] and "singlestat" not in panel["type"]


def test_board_uids_panel_ids_and_query_ref_ids_are_unique(
    boards: dict[str, dict[str, Any]],
) -> None:
    assert len(boards) == len(dashgen.boards(load_config()))
    for uid, board in boards.items():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), uid
        for panel in data_panels(board):
            refs = [target["refId"] for target in panel["targets"]]
            assert len(refs) == len(set(refs)), (uid, panel["title"])


def test_grid_positions_fit_the_grid_and_never_overlap(
    boards: dict[str, dict[str, Any]],
) -> None:
    for uid, board in boards.items():
        cells: dict[tuple[int, int], str] = {}
        for panel in board["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["w"] > 0 and pos["h"] > 0
            assert pos["x"] + pos["w"] <= GRID_WIDTH, (uid, panel["title"])
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    other = cells.setdefault((x, y), panel["title"])
                    assert other == panel["title"], f"{uid}: {panel['title']} overlaps {other}"


def test_every_panel_has_a_grafana_unit_and_a_description_naming_runbook_and_alerts(
    boards: dict[str, dict[str, Any]], config: Config
) -> None:
    described = {(uid, p.title): p for uid, p in model_panels(config)}
    for uid, board in boards.items():
        for panel in data_panels(board):
            assert panel["fieldConfig"]["defaults"]["unit"] in UNITS, (uid, panel["title"])
            description = panel["description"]
            assert "Runbook: " in description, (uid, panel["title"])
            for alert in described[uid, panel["title"]].mirrors:
                assert alert in description


def test_table_columns_are_renamed_from_the_names_grafana_gives_them(
    boards: dict[str, dict[str, Any]],
) -> None:
    tables = 0
    for uid, board in boards.items():
        for panel in data_panels(board):
            if panel["type"] != "table":
                continue
            tables += 1
            refs = [target["refId"] for target in panel["targets"]]
            # Grafana's Prometheus source: "Value" for a lone query, else "Value #<refId>"
            wanted = ["Value"] if len(refs) == 1 else [f"Value #{ref}" for ref in refs]
            (organize,) = [t for t in panel["transformations"] if t["id"] == "organize"]
            assert list(organize["options"]["renameByName"]) == wanted, (uid, panel["title"])
    assert tables >= 4


def test_every_panel_target_and_variable_reads_the_datasource_variable(
    boards: dict[str, dict[str, Any]],
) -> None:
    for uid, board in boards.items():
        source, *queried = board["templating"]["list"]
        assert source["type"] == "datasource" and source["query"] == "prometheus"
        for variable in queried:
            assert variable["datasource"] == DATASOURCE, (uid, variable["name"])
        for panel, target in all_queries(board):
            assert panel["datasource"] == DATASOURCE, (uid, panel["title"])
            assert target["datasource"] == DATASOURCE, (uid, panel["title"])


def test_variables_chain_job_then_instance_then_datname(
    boards: dict[str, dict[str, Any]],
) -> None:
    for board in boards.values():
        job, instance, datname = board["templating"]["list"][1:]
        assert "$" not in variable_selector(job)
        assert '"$job"' in variable_selector(instance)
        assert {'"$job"', '"$instance"'} <= set(re.findall(r'"[^"]*"', variable_selector(datname)))
        assert datname["multi"] and datname["includeAll"]


def test_every_query_parses_as_promql_and_names_only_metrics_of_the_config(
    boards: dict[str, dict[str, Any]], config: Config
) -> None:
    known = {config.metric_name(name) for name in Metrics(config).known}
    # prometheus_client's process collector, part of every scrape of the exporter
    known |= {"process_cpu_seconds_total", "process_resident_memory_bytes"}
    known |= set(NODE_METRICS)  # the data volume, from node_exporter
    for uid, board in boards.items():
        queries = [t["expr"] for _, t in all_queries(board)]
        queries += [variable_selector(v) for v in board["templating"]["list"][1:]]
        for query in queries:
            expr = substitute(query, STATIC_VALUES)
            assert "$" not in expr, (uid, query)
            assert metric_names(expr) <= known, (uid, query)


def test_every_rate_and_increase_spans_the_rate_interval_variable(
    boards: dict[str, dict[str, Any]],
) -> None:
    sentinel = timedelta(seconds=int(SENTINEL.removesuffix("s")))
    counted = 0
    for uid, board in boards.items():
        for panel, target in all_queries(board):
            for node in walk(promql_parser.parse(substitute(target["expr"], STATIC_VALUES))):
                if isinstance(node, promql_parser.Call) and node.func.name in (
                    "rate", "irate", "increase"
                ):  # fmt: skip
                    counted += 1
                    assert node.args[0].range == sentinel, (uid, panel["title"])
    assert counted >= 8


def test_generator_refuses_a_metric_the_config_does_not_export(config: Config) -> None:
    with pytest.raises(KeyError, match="no metric 'connection_count'"):
        Metrics(config).sel("connection_count")


def _rules() -> dict[str, list[alertrules.AlertRule]]:
    rules: dict[str, list[alertrules.AlertRule]] = {}
    for rule in alertrules.rules():
        rules.setdefault(rule.name, []).append(rule)
    return rules


def _numbers(panel: Panel) -> set[float]:
    return {
        node.val
        for query in panel.queries
        for node in walk(promql_parser.parse(substitute(query.expr, STATIC_VALUES)))
        if isinstance(node, promql_parser.NumberLiteral)
    }


def test_panel_thresholds_are_the_alert_thresholds_in_the_alert_severity_colour(
    config: Config, boards: dict[str, dict[str, Any]]
) -> None:
    rules = _rules()
    for uid, panel in model_panels(config):
        mirrored = [rule for name in panel.mirrors for rule in rules[name]]
        assert len(mirrored) >= len(panel.mirrors), (panel.title, panel.mirrors)
        for step in panel.steps[1:]:
            if step.colour not in SEVERITY_COLOURS.values():
                continue
            if step.setting is None:
                # a count: the first non-zero value is where `> 0` (or `== 0` for up) fires
                assert step.value == ANY
                using = [r for r in mirrored if re.search(r"(>|==) 0(?![\d.])", r.expr)]
            else:
                assert step.value == config.setting(step.setting)
                using = [r for r in mirrored if step.setting in alertgen.settings_used(r)]
            assert using, f"{uid}: {panel.title}: no mirrored alert uses step {step}"
            assert step.colour in {SEVERITY_COLOURS[r.severity] for r in using}, panel.title
        rendered = next(p for p in data_panels(boards[uid]) if p["title"] == panel.title)
        steps = rendered["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [s["value"] for s in steps] == [s.value for s in panel.steps]


def test_states_shown_in_an_alert_colour_stand_for_a_mirrored_alert_of_that_severity(
    config: Config,
) -> None:
    rules = _rules()
    shown = 0
    for uid, panel in model_panels(config):
        severities = {SEVERITY_COLOURS[r.severity] for name in panel.mirrors for r in rules[name]}
        for mapping in panel.mappings:
            if mapping.colour in ALERT_COLOURS:
                shown += 1
                assert mapping.colour in severities, (uid, panel.title, mapping.text)
                assert f'"{mapping.text}" {mapping.colour}' in panel.description
    assert shown >= 4  # database down, not scraped, and archiving off on two boards


# instance → (pgrb_wal_archiving_enabled, pgrb_in_recovery; None: the server check has no value)
ARCHIVING_ROLES: dict[str, tuple[int, int | None]] = {
    "primary-off": (0, 0),
    "standby-off": (0, 1),
    "primary-on": (1, 0),
    "role-unknown-off": (0, None),
}


def _archiving_series() -> list[dict[str, str]]:
    series = []
    for instance, (enabled, recovery) in ARCHIVING_ROLES.items():
        labels = f'instance="{instance}",job="{DEFAULT_JOB}"'
        series.append(
            {"series": f"pgrb_wal_archiving_enabled{{{labels}}}", "values": f"{enabled}x10"}
        )
        series.append(
            {"series": f'pgrb_check_success{{check="wal_archiving",{labels}}}', "values": "1x10"}
        )
        if recovery is not None:
            series.append({"series": f"pgrb_in_recovery{{{labels}}}", "values": f"{recovery}x10"})
    return series


def test_archiving_off_shows_in_its_alert_colour_on_a_primary_and_not_on_a_standby(
    config: Config, tmp_path: Path
) -> None:
    """The front tile and the storage board's state, evaluated by Prometheus for each role."""
    promtool = require_tool("promtool")
    models = {(uid, p.title): p for uid, p in model_panels(config)}
    tile = models[dashgen.HEALTH, "Oldest WAL not archived"]
    state = models[STORAGE, "WAL archiving"]
    (alert,) = [r for r in alertrules.rules() if r.name == ARCHIVING_OFF]
    assert ARCHIVING_OFF in tile.mirrors and ARCHIVING_OFF in state.mirrors

    def shown(panel: Panel, text: str) -> float:
        (mapping,) = [m for m in panel.mappings if m.text == text]
        return mapping.value

    expected = {  # instance → (tile value, storage board value)
        "primary-off": (shown(tile, "archiving off"), shown(state, "off")),
        "standby-off": (shown(tile, "standby, not archiving"), shown(state, "off (standby)")),
        "primary-on": (0.0, shown(state, "on")),  # no segment waits
        # the alert cannot tell a primary without the server check; the boards show what is known
        "role-unknown-off": (shown(tile, "archiving off"), shown(state, "off")),
    }
    tests: list[dict[str, Any]] = []
    for instance, (tile_value, state_value) in expected.items():
        values = {**STATIC_VALUES, "instance": instance}
        for panel, value in ((tile, tile_value), (state, state_value)):
            # `+ 0` fails on two series of one instance instead of hiding the second
            expr = f"({substitute(panel.queries[0].expr, values)}) + 0"
            labels = "{}" if panel is tile else f'{{instance="{instance}",job="{DEFAULT_JOB}"}}'
            tests.append(
                {
                    "expr": expr,
                    "eval_time": "5m",
                    "exp_samples": [{"labels": labels, "value": value}],
                }
            )
    primary_off = f'pgrb_wal_archiving_enabled{{instance="primary-off",job="{DEFAULT_JOB}"}}'
    alert_test = {"expr": alertgen.fill(alert.expr, config), "eval_time": "5m"}
    tests.append({**alert_test, "exp_samples": [{"labels": primary_off, "value": 0}]})
    document = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m", "input_series": _archiving_series(), "promql_expr_test": tests}
        ],
    }
    path = tmp_path / "archiving.test.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    done = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr

    def colour(panel: Panel, value: float) -> str:
        mapped = [m.colour for m in panel.mappings if m.value == value]
        return mapped[0] if mapped else panel.steps[0].colour

    for instance, (tile_value, state_value) in expected.items():
        colours = {colour(tile, tile_value), colour(state, state_value)}
        if instance in ("primary-off", "role-unknown-off"):
            assert colours == {SEVERITY_COLOURS[alert.severity]}, instance
        else:
            assert not colours & ALERT_COLOURS, instance


def test_front_tiles_cover_every_threshold_and_condition_of_their_alerts(config: Config) -> None:
    rules = _rules()
    health = next(b for b in dashgen.boards(config) if b.uid == dashgen.HEALTH)
    assert {p.title for p in health.panels} >= FRONT_TILES
    for panel in health.panels:
        assert panel.kind == "stat" and panel.mirrors and panel.link, panel.title
        for name in panel.mirrors:
            for rule in rules[name]:
                for setting in alertgen.settings_used(rule):
                    # a threshold colours the tile; a condition (a row floor, a forecast horizon,
                    # a number of intervals) sits in the tile's query, as in the alert's
                    value = float(config.setting(setting))  # type: ignore[arg-type]
                    assert setting in panel.settings or value in _numbers(panel), (
                        f"{panel.title}: {name} uses {setting}"
                    )


def test_front_tiles_link_to_boards_that_exist(boards: dict[str, dict[str, Any]]) -> None:
    for panel in data_panels(boards[dashgen.HEALTH]):
        (link,) = panel["links"]
        uid = re.fullmatch(r"/d/([a-z0-9-]+)\?.*", link["url"])
        assert uid and uid.group(1) in boards, panel["title"]
        assert "${instance:queryparam}" in link["url"]


def test_provisioning_files_point_grafana_at_the_boards_and_a_prometheus(config: Config) -> None:
    files = dashgen.generate(config)
    providers = yaml.safe_load(files["provisioning/dashboards/pg-runbook.yaml"])
    (provider,) = providers["providers"]
    assert providers["apiVersion"] == 1 and provider["type"] == "file"
    assert provider["options"]["path"] == dashgen.PROVISIONED_PATH
    sources = yaml.safe_load(files["provisioning/datasources/pg-runbook-prometheus.yaml"])
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == dashgen.DATASOURCE_UID
    assert source["jsonData"]["timeInterval"]  # what $__rate_interval is derived from
    # provisioning next to an existing Prometheus datasource neither clashes nor takes its default
    assert source["name"] != "Prometheus" and not source.get("isDefault", False)


def test_markdown_lists_every_board_its_question_and_its_panels(config: Config) -> None:
    text = dashgen.dashboards_markdown(config)
    for board in dashgen.boards(config):
        assert f"dashboards/{board.uid}.json" in text and board.answers in text
        for panel in board.panels:
            assert panel.title in text
