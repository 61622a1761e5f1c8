"""The checks of queries.yaml, resolved for one server, and query-exporter's config made from them.

The query-exporter config is generated at run time from queries.yaml so the two exporters always
run the same SQL: one query per check, settings inlined, value columns converted to numbers the
way this exporter converts them (booleans 1/0, timestamps and intervals in seconds).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml

logger = logging.getLogger(__name__)

QUERIES = Path(__file__).resolve().parent.parent / "pg_runbook_exporter" / "queries.yaml"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_PARAM = re.compile(r"%\((\w+)\)s")
# SQLAlchemy's text() reads ":name" as a bind parameter; "::" casts are left alone by it.
_COLON_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")

_ENV_MARK = "ENV-DSN-FROM-"
_BOOL, _DATE, _TIMESTAMP, _TIMESTAMPTZ, _INTERVAL = 16, 1082, 1114, 1184, 1186


def seconds(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if match is None:
        raise ValueError(f"not a duration: {value!r}")
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2) or "s"]
    return float(match.group(1)) * unit


@dataclass(frozen=True)
class Metric:
    column: str
    name: str  # with the namespace
    type: str
    help: str


@dataclass(frozen=True)
class Check:
    name: str
    sql: str  # settings inlined as literals, ready for psql
    labels: tuple[str, ...]
    metrics: tuple[Metric, ...]
    interval: float
    timeout: float


@dataclass(frozen=True)
class Resolved:
    namespace: str
    lock_timeout: float
    checks: tuple[Check, ...]
    skipped: tuple[str, ...]  # "name: reason"


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        # psycopg binds a list of strings as text[]; an empty one still needs the type.
        kind = "text[]" if all(isinstance(v, str) for v in value) else "numeric[]"
        return f"ARRAY[{', '.join(_literal(v) for v in value)}]::{kind}"
    return "'" + str(value).replace("'", "''") + "'"


def inline_settings(sql: str, settings: dict[str, Any]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in settings:
            raise KeyError(f"SQL uses unknown setting {name!r}")
        return _literal(settings[name])

    return _PARAM.sub(sub, sql).replace("%%", "%")


def _pick_sql(spec: Any, major: int) -> str | None:
    if isinstance(spec, str):
        return spec
    for variant in spec:
        if variant.get("min_version", 0) <= major <= variant.get("max_version", 10**6):
            return str(variant["sql"])
    return None


def _unmet(requires: dict[str, Any], cur: psycopg.Cursor[Any], major: int) -> str | None:
    if major < int(requires.get("min_version", 0)):
        return f"needs PostgreSQL >= {requires['min_version']}"
    if major > int(requires.get("max_version", 10**6)):
        return f"needs PostgreSQL <= {requires['max_version']}"
    if requires.get("extension"):
        cur.execute("SELECT 1 FROM pg_extension WHERE extname = %s", (requires["extension"],))
        if cur.fetchone() is None:
            return f"extension {requires['extension']} missing"
    for rel in requires.get("relations", []) or []:
        cur.execute("SELECT to_regclass(%s)", (rel,))
        row = cur.fetchone()
        if row is None or row[0] is None:
            return f"relation {rel} missing"
    for name, value in (requires.get("settings", {}) or {}).items():
        wanted = ("on" if value else "off") if isinstance(value, bool) else str(value)
        cur.execute("SELECT setting FROM pg_settings WHERE name = %s", (name,))
        row = cur.fetchone()
        if row is None or row[0] != wanted:
            return f"needs {name} = {wanted}"
    return None


def resolve(dsn: str, *, path: Path = QUERIES) -> Resolved:
    """Read queries.yaml and keep the checks this server can run, with their SQL picked."""
    doc = yaml.safe_load(path.read_text())
    namespace = str(doc.get("namespace", "pgrb"))
    defaults = doc.get("defaults", {}) or {}
    settings = {
        k: (v["value"] if isinstance(v, dict) else v)
        for k, v in (doc.get("settings", {}) or {}).items()
    }
    checks: list[Check] = []
    skipped: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        major = conn.info.server_version // 10000
        for name, spec in (doc.get("checks", {}) or {}).items():
            if "source" in spec:  # reads backup files: neither peer nor psql runs it
                skipped.append(f"{name}: reads files ({spec['source']}), not the database")
                continue
            reason = _unmet(spec.get("requires", {}) or {}, cur, major)
            raw = _pick_sql(spec["sql"], major) if reason is None else None
            if raw is None:
                skipped.append(f"{name}: {reason or f'no SQL for PostgreSQL {major}'}")
                continue
            metrics = tuple(
                Metric(
                    column=str(col),
                    name=f"{namespace}_{m.get('name', col)}",
                    type=str(m.get("type", "gauge")),
                    help=str(m.get("help", "")).strip(),
                )
                for col, m in (spec.get("metrics", {}) or {}).items()
            )
            checks.append(
                Check(
                    name=str(name),
                    sql=inline_settings(raw, settings).strip().rstrip(";"),
                    labels=tuple(str(x) for x in spec.get("labels", []) or []),
                    metrics=metrics,
                    interval=seconds(spec.get("interval", defaults.get("interval", "30s"))),
                    timeout=seconds(spec.get("timeout", defaults.get("timeout", "5s"))),
                )
            )
    return Resolved(
        namespace=namespace,
        lock_timeout=seconds(defaults.get("lock_timeout", "100ms")),
        checks=tuple(checks),
        skipped=tuple(skipped),
    )


def _numeric(column: str, type_oid: int) -> str:
    ident = '"' + column.replace('"', '""') + '"'
    if type_oid == _BOOL:
        return f"{ident}::int"
    if type_oid in (_DATE, _TIMESTAMP, _TIMESTAMPTZ, _INTERVAL):
        return f"extract(epoch FROM {ident})"
    return ident


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def query_exporter_config(resolved: Resolved, *, dsn: str, env_dsn: str) -> dict[str, Any]:
    """query-exporter's configuration holding the same checks (column types read from `dsn`).

    Its database URL is read from the environment variable `env_dsn` (query-exporter's `!env`).
    """
    metrics: dict[str, dict[str, Any]] = {}
    queries: dict[str, dict[str, Any]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        for check in resolved.checks:
            cur.execute(f"SELECT * FROM ({check.sql}) AS q LIMIT 0".encode())
            types = {d.name: d.type_code for d in cur.description or []}
            cols = [
                f"coalesce({_quote(label)}::text, '') AS {_quote(label)}" for label in check.labels
            ]
            for m in check.metrics:
                cols.append(f"{_numeric(m.column, types.get(m.column, 0))} AS {_quote(m.name)}")
                metrics[m.name] = {
                    "type": "counter" if m.type == "counter" else "gauge",
                    "description": m.help or m.name,
                    **({"labels": list(check.labels)} if check.labels else {}),
                }
            sql = f"SELECT {', '.join(cols)} FROM ({check.sql}) AS q"
            queries[check.name] = {
                "databases": ["portal"],
                "metrics": [m.name for m in check.metrics],
                "sql": _COLON_BIND.sub(r"\\:\1", sql),
                "interval": max(1, round(check.interval)),
                # query-exporter wants a multiple of 0.1 s.
                "timeout": max(0.1, round(check.timeout, 1)),
            }
    return {
        "databases": {
            "portal": {
                "dsn": _ENV_MARK + env_dsn,
                "connect-sql": [
                    f"SET lock_timeout = '{int(resolved.lock_timeout * 1000)}ms'",
                    "SET default_transaction_read_only = on",
                ],
            }
        },
        "metrics": metrics,
        "queries": queries,
    }


def write_query_exporter_config(config: dict[str, Any], path: Path) -> None:
    header = (
        "# Generated by `python -m bench` from queries.yaml: the same checks, one query each.\n"
        "# Regenerated on every run; edit queries.yaml, not this file.\n"
    )
    text = yaml.safe_dump(config, sort_keys=False, width=100)
    path.write_text(header + re.sub(rf"{_ENV_MARK}(\w+)", r"!env \1", text))
