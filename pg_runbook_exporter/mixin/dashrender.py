"""Grafana's dashboard JSON model for the boards of ``pg_runbook_exporter.mixin.dashpanels``.

Every panel and variable reads its datasource from the ``datasource`` variable (no ``__inputs``, so
file provisioning and import need no edits); rows stack top to bottom on the 24-column grid, each
row's panels flowing left to right, so no two panels overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pg_runbook_exporter.mixin.dashpanels import (
    DATASOURCE,
    Board,
    Mapping,
    Metrics,
    Panel,
    Query,
    Step,
)

# Current Grafana's dashboard model (12.x); newer releases migrate it without touching these boards.
SCHEMA_VERSION = 41
GRID_WIDTH = 24
TAG = "pg-runbook"


def _thresholds(steps: Sequence[Step]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": s.colour, "value": s.value} for s in steps],
    }


def _mappings(mappings: Sequence[Mapping]) -> list[dict[str, Any]]:
    if not mappings:
        return []
    options = {
        f"{m.value:g}": {"text": m.text, "color": m.colour, "index": i}
        for i, m in enumerate(mappings)
    }
    return [{"type": "value", "options": options}]


def _target(query: Query, ref: str) -> dict[str, Any]:
    target: dict[str, Any] = {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": query.expr,
        "legendFormat": query.legend or "__auto",
        "range": not query.instant,
        "instant": query.instant,
        "refId": ref,
    }
    if query.table:
        target["format"] = "table"
    return target


def _options(panel: Panel) -> dict[str, Any]:
    reduce = {"values": False, "calcs": ["lastNotNull"], "fields": ""}
    if panel.kind == "stat":
        return {
            "reduceOptions": reduce,
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "center",
            "orientation": "auto",
            "textMode": "value_and_name" if len(panel.queries) > 1 else "value",
            "wideLayout": True,
            "showPercentChange": False,
        }
    if panel.kind == "bargauge":
        return {
            "reduceOptions": reduce,
            "orientation": "horizontal",
            "displayMode": "gradient",
            "valueMode": "color",
            "showUnfilled": True,
            "namePlacement": "auto",
            "sizing": "auto",
        }
    if panel.kind == "table":
        first = [{"displayName": panel.column_names[0][1], "desc": not panel.ascending}]
        return {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}, "sortBy": first}
    return {
        "legend": {"displayMode": "table", "placement": "right", "showLegend": True,
                   "calcs": ["lastNotNull", "max"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }  # fmt: skip


def _custom(panel: Panel) -> dict[str, Any]:
    if panel.kind == "timeseries":
        return {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 25 if panel.stacked else 10,
            "showPoints": "never",
            "spanNulls": False,
            "axisSoftMin": 0,
            "stacking": {"mode": "normal" if panel.stacked else "none", "group": "A"},
            # the alert's threshold drawn on the graph, where one exists
            "thresholdsStyle": {"mode": "dashed" if panel.settings else "off"},
        }
    if panel.kind == "table":
        return {"align": "auto", "cellOptions": {"type": "auto"}, "filterable": False}
    return {}


def _transformations(panel: Panel) -> list[dict[str, Any]]:
    if panel.kind != "table":
        return []
    hidden = {"Time": True, "job": True, "instance": True, "__name__": True}
    steps: list[dict[str, Any]] = []
    if len(panel.queries) > 1:
        steps.append({"id": "merge", "options": {}})
    steps.append(
        {
            "id": "organize",
            "options": {
                "excludeByName": hidden,
                "renameByName": dict(panel.column_names),
                "indexByName": {},
            },
        }
    )
    return steps


def _overrides(panel: Panel) -> list[dict[str, Any]]:
    return [
        {"matcher": {"id": "byName", "options": column},
         "properties": [{"id": "unit", "value": unit}]}
        for column, unit in panel.column_units
    ]  # fmt: skip


def render_panel(panel: Panel, *, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": panel.unit,
        "color": {"mode": "thresholds" if panel.kind != "timeseries" else "palette-classic"},
        "thresholds": _thresholds(panel.steps),
        "mappings": _mappings(panel.mappings),
        "custom": _custom(panel),
    }
    if panel.kind == "timeseries" and panel.settings:
        defaults["color"] = {"mode": "palette-classic"}
    if panel.max_value is not None:
        defaults["min"], defaults["max"] = 0, panel.max_value
    if panel.kind == "stat":
        defaults["noValue"] = "no data"
    rendered: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": _overrides(panel)},
        "options": _options(panel),
        "targets": [_target(q, chr(ord("A") + i)) for i, q in enumerate(panel.queries)],
    }
    if transformations := _transformations(panel):
        rendered["transformations"] = transformations
    if panel.link is not None:
        rendered["links"] = [
            {"title": "Details", "url": f"/d/{panel.link}?{VARS_IN_URL}", "targetBlank": False}
        ]
    return rendered


VARS_IN_URL = (
    "${__url_time_range}&${datasource:queryparam}&${job:queryparam}"
    "&${instance:queryparam}&${datname:queryparam}"
)


def layout(board: Board) -> list[dict[str, Any]]:
    """Rows of panels on Grafana's 24-column grid, each row wrapping left to right."""
    rendered: list[dict[str, Any]] = []
    next_id = 1
    y = 0
    for row in board.rows:
        rendered.append(
            {"id": next_id, "type": "row", "title": row.title, "collapsed": False,
             "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y}, "panels": []}
        )  # fmt: skip
        next_id += 1
        y += 1
        x, line_height = 0, 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            rendered.append(render_panel(panel, panel_id=next_id, x=x, y=y))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return rendered


def _query_variable(name: str, label: str, query: str, *, multi: bool) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {
            "qryType": 1,
            "query": query,
            "refId": "PrometheusVariableQueryEditor-VariableQuery",
        },
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "current": {},
        "options": [],
        "hide": 0,
        "regex": "",
        "skipUrlSync": False,
    }


def variables(metrics: Metrics) -> list[dict[str, Any]]:
    """``datasource`` → ``job`` → ``instance`` → ``datname``, each narrowing the next."""
    up = metrics("up")
    extra = [metrics.selector] if metrics.selector else []
    jobs = f"{up}{{{', '.join(extra)}}}" if extra else up
    of_job = ", ".join(['job=~"$job"', *extra])
    instances = f"{up}{{{of_job}}}"
    chain = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "options": [],
            "hide": 0,
            "refresh": 1,
            "regex": "",
            "skipUrlSync": False,
        },
        _query_variable("job", "Job", f"label_values({jobs}, job)", multi=False),
        _query_variable(
            "instance", "Instance", f"label_values({instances}, instance)", multi=False
        ),
        _query_variable(
            "datname",
            "Database",
            f"label_values({metrics.sel('database_size_bytes')}, datname)",
            multi=True,
        ),
    ]
    return chain


def render_board(board: Board, metrics: Metrics, *, tags: Sequence[str]) -> dict[str, Any]:
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": board.answers,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "title": "Runbook dashboards",
                "type": "dashboards",
                "tags": [TAG],
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
                "targetBlank": False,
                "icon": "external link",
                "tooltip": "",
                "url": "",
            }
        ],
        "panels": layout(board),
        "refresh": board.refresh,
        "schemaVersion": SCHEMA_VERSION,
        "tags": list(tags),
        "templating": {"list": variables(metrics)},
        "time": {"from": board.time_from, "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": board.title,
        "uid": board.uid,
        "version": 1,
        "weekStart": "",
    }
