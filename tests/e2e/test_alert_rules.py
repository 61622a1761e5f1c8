"""``promtool test rules`` on the committed rules: every alert fires above its threshold after its
``for`` and stays silent just below it.

The examples are written here, their numbers derived from the settings in queries.yaml (change a
threshold and the examples move with it). The expected annotations are rendered from the rules'
own templates by a small renderer of the few template functions the rules use, so a broken
description or runbook link fails too.
"""

from __future__ import annotations

import math
import re
import subprocess
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pg_runbook_exporter.config import Config, load_config
from pg_runbook_exporter.mixin import alertgen
from pg_runbook_exporter.mixin.alertrules import RULES_FILE, rules
from pg_runbook_exporter.mixin.options import DEFAULT_JOB
from tests.support.stack import require_tool

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "alerts" / RULES_FILE
INSTANCE = {"instance": "db1:9819", "job": DEFAULT_JOB}
GIB = 1024**3


@dataclass(frozen=True)
class Fired:
    severity: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)  # besides instance and job
    bare: bool = False  # the alert has no instance/job (absent())


@dataclass(frozen=True)
class Example:
    alert: str
    name: str
    series: Mapping[str, str]  # metric{labels} without instance/job → promtool values
    at: str  # eval_time
    fires: tuple[Fired, ...] = ()
    interval: str = "1m"
    raw_series: Mapping[str, str] = field(default_factory=dict)  # selectors used verbatim


def _series(selector: str) -> str:
    """``metric{a="b"}`` with the test instance's labels added."""
    name, _, rest = selector.partition("{")
    inner = rest.rstrip("}")
    extra = ",".join(f'{k}="{v}"' for k, v in INSTANCE.items())
    return f"{name}{{{inner + ',' if inner else ''}{extra}}}"


def _n(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _const(value: float, steps: int = 60) -> str:
    return f"{_n(value)}x{steps}"


def examples(config: Config) -> list[Example]:
    used = {name for rule in rules() for name in alertgen.settings_used(rule)}
    s = {name: float(config.setting(name)) for name in used}  # type: ignore[arg-type]
    ex: list[Example] = []

    def add(
        alert: str, name: str, series: Mapping[str, str], at: str, *fires: Fired, **kw: Any
    ) -> None:
        ex.append(Example(alert=alert, name=name, series=series, at=at, fires=fires, **kw))

    def age_series(metric: str, age: float, at_s: float) -> dict[str, str]:
        return {metric: _const(at_s - age, 80)}

    # availability
    add(
        "PgRunbookExporterDown",
        "down",
        {},
        "5m",
        Fired("critical", 0),
        raw_series={_series("up"): "0x10"},
    )
    add("PgRunbookExporterDown", "up", {}, "5m", raw_series={_series("up"): "1x10"})
    add(
        "PgRunbookExporterAbsent",
        "absent",
        {},
        "10m",
        Fired("critical", 1, {"job": DEFAULT_JOB}, bare=True),
        raw_series={'up{job="node",instance="n1:9100"}': "1x20"},
    )
    add("PgRunbookExporterAbsent", "present", {}, "10m", raw_series={_series("up"): "1x20"})
    add("PostgresDown", "down", {"pgrb_up": "0x10"}, "5m", Fired("critical", 0))
    add("PostgresDown", "up", {"pgrb_up": "1x10"}, "5m")
    add(
        "PgRunbookCheckFailing",
        "failing",
        {'pgrb_check_success{check="locks"}': "0x20"},
        "15m",
        Fired("warning", 0, {"check": "locks"}),
    )
    add("PgRunbookCheckFailing", "succeeding", {'pgrb_check_success{check="locks"}': "1x20"}, "15m")
    stale_n, check_interval, at = s["check_stale_intervals"], 300.0, 1200.0
    for name, age, fires in (
        ("stale", at, (Fired("warning", at, {"check": "wraparound"}),)),
        ("just fresh", stale_n * check_interval, ()),
    ):
        add(
            "PgRunbookCheckStale",
            name,
            {
                'pgrb_check_last_success_timestamp_seconds{check="wraparound"}': _const(
                    at - age, 30
                ),
                'pgrb_check_interval_seconds{check="wraparound"}': _const(check_interval, 30),
            },
            "20m",
            *fires,
        )
    add(
        "PgRunbookCheckSkipped",
        "tables missing",
        {'pgrb_check_skipped{check="id_mappings_orphans",reason="relation"}': "1x30"},
        "20m",
        Fired("warning", 1, {"check": "id_mappings_orphans", "reason": "relation"}),
    )
    add(
        "PgRunbookCheckSkipped",
        "extension missing",
        {'pgrb_check_skipped{check="statements",reason="extension"}': "1x30"},
        "20m",
    )
    add(
        "PgRunbookRoleLacksPgMonitor",
        "not a member",
        {"pgrb_role_in_pg_monitor": "0x30"},
        "20m",
        Fired("warning", 0),
    )
    add("PgRunbookRoleLacksPgMonitor", "member", {"pgrb_role_in_pg_monitor": "1x30"}, "20m")
    add(
        "PgRunbookRoleLacksPgMonitor",
        "revoked 10 minutes ago",
        {"pgrb_role_in_pg_monitor": "1x10 0x20"},
        "20m",
    )
    truncated = 'pgrb_check_truncated{check="table_stats"}'
    add(
        "PgRunbookCheckTruncated",
        "truncated",
        {truncated: "1x30"},
        "20m",
        Fired("warning", 1, {"check": "table_stats"}),
    )
    add("PgRunbookCheckTruncated", "complete", {truncated: "0x30"}, "20m")

    # connections
    warn, crit = s["connections_usage_warning_ratio"], s["connections_usage_critical_ratio"]
    for name, ratio, sev in (
        ("below warning", warn - 0.01, ()),
        ("at warning", warn, ("warning",)),
        ("below critical", crit - 0.01, ("warning",)),
        ("at critical", crit, ("warning", "critical")),
    ):
        add(
            "PostgresConnectionsHigh",
            name,
            {"pgrb_connections_usage_ratio": _const(ratio, 20)},
            "10m",
            *(Fired(v, ratio) for v in sev),
        )
    pool = s["app_pool_size"]
    app = (
        "pgrb_application_instance_connections"
        '{application_name="portal-bff",client_addr="10.0.0.5"}'
    )
    other = 'pgrb_application_instance_connections{application_name="other",client_addr="other"}'
    add(
        "PortalAppPoolSaturated",
        "at pool size",
        {app: _const(pool, 20)},
        "10m",
        Fired("warning", pool, {"application_name": "portal-bff", "client_addr": "10.0.0.5"}),
    )
    add(
        "PortalAppPoolSaturated",
        "below pool size, other summed",
        {
            app: _const(pool - 1, 20),
            other: _const(pool * 5, 20),
        },
        "10m",
    )

    at = 1200.0
    idle = 'pgrb_oldest_idle_in_transaction_timestamp_seconds{datname="portal"}'
    warn, crit = s["idle_in_transaction_warning_seconds"], s["idle_in_transaction_critical_seconds"]
    for name, age, sev in (
        ("at warning", warn, ()),
        ("past warning", warn + 120, ("warning",)),
        ("at critical", crit, ("warning",)),
        ("past critical", crit + 120, ("warning", "critical")),
    ):
        add(
            "PostgresIdleInTransaction",
            name,
            age_series(idle, age, at),
            "20m",
            *(Fired(v, age, {"datname": "portal"}) for v in sev),
        )
    long_ = s["long_running_query_seconds"]
    query = 'pgrb_oldest_query_start_timestamp_seconds{{kind="{}"}}'
    add(
        "PostgresLongRunningQuery",
        "client past the line",
        age_series(query.format("client"), long_ + 120, at),
        "20m",
        Fired("warning", long_ + 120, {"kind": "client"}),
    )
    add(
        "PostgresLongRunningQuery",
        "client at the line, old autovacuum and pg_dump",
        {
            **age_series(query.format("client"), long_, at),
            **age_series(query.format("autovacuum"), at, at),
            **age_series(query.format("maintenance"), at, at),
        },
        "20m",
    )
    lock = s["lock_wait_warning_seconds"]
    add(
        "PostgresLockWait",
        "past",
        age_series("pgrb_oldest_lock_wait_start_timestamp_seconds", lock + 120, at),
        "20m",
        Fired("warning", lock + 120),
    )
    add(
        "PostgresLockWait",
        "at",
        age_series("pgrb_oldest_lock_wait_start_timestamp_seconds", lock, at),
        "20m",
    )
    add(
        "PostgresSessionsBlocked",
        "blocked",
        {"pgrb_blocked_sessions": "3x20"},
        "10m",
        Fired("warning", 3),
    )
    add("PostgresSessionsBlocked", "none blocked", {"pgrb_blocked_sessions": "0x20"}, "10m")

    # maintenance
    ratio, rows = s["dead_ratio_warning"], s["dead_ratio_min_rows"]
    table = '{schemaname="public",relname="id_mappings"}'
    tlabels = {"schemaname": "public", "relname": "id_mappings"}
    for name, r, total, fires in (
        ("at ratio and size", ratio, rows, (Fired("warning", ratio, tlabels),)),
        ("ratio just below", ratio - 0.01, rows, ()),
        ("table just too small", 0.5, rows - 1, ()),
    ):
        dead = round(r * total)
        add(
            "PostgresTableDeadRows",
            name,
            {
                f"pgrb_table_dead_ratio{table}": _const(r, 30),
                f"pgrb_table_dead_rows{table}": _const(dead, 30),
                f"pgrb_table_live_rows{table}": _const(total - dead, 30),
            },
            "20m",
            *fires,
        )
    remainder = '{schemaname="other",relname="other"}'
    add(
        "PostgresTableDeadRows",
        "remainder row of many small tables",
        {
            f"pgrb_table_dead_ratio{remainder}": _const(0.5, 30),
            f"pgrb_table_dead_rows{remainder}": _const(rows, 30),
            f"pgrb_table_live_rows{remainder}": _const(rows, 30),
        },
        "20m",
    )
    public_other = '{schemaname="public",relname="other"}'
    add(
        "PostgresTableDeadRows",
        "a real table named other",
        {
            f"pgrb_table_dead_ratio{public_other}": _const(0.5, 30),
            f"pgrb_table_dead_rows{public_other}": _const(rows, 30),
            f"pgrb_table_live_rows{public_other}": _const(rows, 30),
        },
        "20m",
        Fired("warning", 0.5, {"schemaname": "public", "relname": "other"}),
    )
    vac, at = s["vacuum_max_age_seconds"], s["vacuum_max_age_seconds"] + 3600
    steps = int(at // 900)
    for name, vacuum_age, dead, fires in (
        ("vacuum too old", at, 5, (Fired("warning", at, {**tlabels, "operation": "vacuum"}),)),
        ("vacuum at the limit", vac, 5, ()),
        ("vacuum too old, no dead rows", at, 0, ()),
    ):
        add(
            "PostgresTableNotVacuumed",
            name,
            {
                f"pgrb_table_last_vacuum_timestamp_seconds{table}": _const(at - vacuum_age, steps),
                f"pgrb_table_last_analyze_timestamp_seconds{table}": _const(at - vac, steps),
                f"pgrb_table_dead_rows{table}": _const(dead, steps),
            },
            f"{int(at)}s",
            *fires,
            interval="15m",
        )
    add(
        "PostgresUnusedIndexes", "unused", {"pgrb_unused_indexes": "3x100"}, "90m", Fired("info", 3)
    )
    add("PostgresUnusedIndexes", "all used", {"pgrb_unused_indexes": "0x100"}, "90m")

    # WAL and disk
    at, ready = 1800.0, s["wal_archive_ready_max_age_seconds"]
    oldest = "pgrb_wal_archive_oldest_ready_timestamp_seconds"
    add(
        "PostgresWalArchiveBehind",
        "past",
        age_series(oldest, ready + 180, at),
        "30m",
        Fired("critical", ready + 180),
    )
    add("PostgresWalArchiveBehind", "at", age_series(oldest, ready, at), "30m")
    failed, archived = (
        "pgrb_wal_archive_last_failed_timestamp_seconds",
        ("pgrb_wal_archive_last_archived_timestamp_seconds"),
    )
    for name, fail_ts, ok_ts, enabled, fires in (
        ("failure after success", 900.0, 600.0, 1, (Fired("warning", at - 900),)),
        ("failure, never archived", 900.0, None, 1, (Fired("warning", at - 900),)),
        ("same second", 900.0, 900.0, 1, ()),
        ("archiving turned off", 900.0, 600.0, 0, ()),
    ):
        series = {failed: _const(fail_ts, 40), "pgrb_wal_archiving_enabled": _const(enabled, 40)}
        if ok_ts is not None:
            series[archived] = _const(ok_ts, 40)
        add("PostgresWalArchiveFailing", name, series, "30m", *fires)
    on_off, role = "pgrb_wal_archiving_enabled", "pgrb_in_recovery"
    for name, archiving, standby, fires in (
        ("off on a primary", "0x40", "0x40", (Fired("warning", 0),)),
        ("off on a standby", "0x40", "1x40", ()),
        ("on", "1x40", "0x40", ()),
        ("off for 13 minutes", "1x16 0x23", "0x40", ()),
    ):
        series = {on_off: archiving, role: standby}
        add("PostgresWalArchivingDisabled", name, series, "30m", *fires)
    standby_db = f'{{instance="db2:9819",job="{DEFAULT_JOB}"}}'
    add(
        "PostgresWalArchivingDisabled",
        "off on a primary and its standby, each matched to its own role",
        {on_off: "0x40", role: "0x40"},
        "30m",
        Fired("warning", 0),
        raw_series={f"{on_off}{standby_db}": "0x40", f"{role}{standby_db}": "1x40"},
    )
    budget = s["wal_directory_budget_bytes"]
    add(
        "PostgresWalDirectoryOverBudget",
        "over",
        {"pgrb_wal_directory_size_bytes": _const(budget + 1, 20)},
        "10m",
        Fired("critical", budget + 1),
    )
    add(
        "PostgresWalDirectoryOverBudget",
        "at",
        {"pgrb_wal_directory_size_bytes": _const(budget, 20)},
        "10m",
    )
    slot = '{slot_name="standby1",slot_type="physical"}'
    slabels = {"slot_name": "standby1", "slot_type": "physical"}
    add(
        "PostgresReplicationSlotRetainingWal",
        "over",
        {f"pgrb_replication_slot_retained_wal_bytes{slot}": _const(budget + 1, 20)},
        "10m",
        Fired("warning", budget + 1, slabels),
    )
    add(
        "PostgresReplicationSlotRetainingWal",
        "at",
        {f"pgrb_replication_slot_retained_wal_bytes{slot}": _const(budget, 20)},
        "10m",
    )
    # linear growth by `step` bytes every 5 minutes, evaluated after 8 hours (96 samples)
    size_budget, horizon, step = (
        s["database_size_budget_bytes"],
        s["database_size_forecast_seconds"],
        32 * 1024**2,
    )
    ahead = 96 + horizon / 300
    for name, predicted, fires in (
        (
            "grows past",
            size_budget + 16 * step,
            (Fired("warning", size_budget + 16 * step, {"datname": "portal"}),),
        ),
        ("grows to just below", size_budget - step, ()),
    ):
        start = predicted - ahead * step
        add(
            "PostgresDatabaseSizeForecast",
            name,
            {'pgrb_database_size_bytes{datname="portal"}': f"{_n(start)}+{step}x96"},
            "8h",
            *fires,
            interval="5m",
        )

    # corruption, wraparound, integrity, migrations
    failures = 'pgrb_checksum_failures_total{datname="portal"}'
    add("PostgresChecksumFailures", "none", {failures: "0x60"}, "60m")
    add(
        "PostgresChecksumFailures",
        "old failures, still a page",
        {failures: "2x60"},
        "60m",
        Fired("critical", 2, {"datname": "portal"}),
    )
    add(
        "PostgresChecksumFailures",
        "new failure",
        {failures: "0x40 1x19"},
        "50m",
        Fired("critical", 1, {"datname": "portal"}),
    )
    add(
        "PostgresDataChecksumsDisabled",
        "off",
        {"pgrb_data_checksums_enabled": "0x100"},
        "90m",
        Fired("warning", 0),
    )
    add("PostgresDataChecksumsDisabled", "on", {"pgrb_data_checksums_enabled": "1x100"}, "90m")
    add(
        "PostgresDataChecksumsDisabled",
        "off for 50 minutes",
        {"pgrb_data_checksums_enabled": "1x40 0x60"},
        "90m",
    )
    warn, crit = s["xid_age_warning"], s["xid_age_critical"]
    xid_cases: tuple[tuple[str, float, float, tuple[tuple[str, str, float], ...]], ...] = (
        ("at warning", warn, 0, ()),
        ("xid past warning", warn + 1, 0, (("warning", "xid", warn + 1),)),
        ("xid at critical", crit, 0, (("warning", "xid", crit),)),
        (
            "multixact past critical",
            0,
            crit + 1,
            (("warning", "multixact", crit + 1), ("critical", "multixact", crit + 1)),
        ),
    )
    for name, xid, mxid, ages in xid_cases:
        add(
            "PostgresXidWraparound",
            name,
            {
                'pgrb_database_xid_age{datname="portal"}': _const(xid, 20),
                'pgrb_database_mxid_age{datname="portal"}': _const(mxid, 20),
            },
            "10m",
            *(Fired(v, val, {"datname": "portal", "age": a}) for v, a, val in ages),
        )
    orphans = "pgrb_id_mappings_orphaned"
    add("PortalIdMappingsOrphaned", "none", {orphans: "0x60"}, "60m")
    add("PortalIdMappingsOrphaned", "standing", {orphans: "3x60"}, "60m", Fired("warning", 3))
    add(
        "PortalIdMappingsOrphaned",
        "new, paged first",
        {orphans: "0x30 3x30"},
        "40m",
        Fired("critical", 3),
    )
    add(
        "PortalIdMappingsOrphaned",
        "new, then ticket too",
        {orphans: "0x30 3x30"},
        "50m",
        Fired("critical", 3),
        Fired("warning", 3),
    )
    whmcs, sf = "pgrb_id_mappings_duplicate_whmcs_rows", "pgrb_id_mappings_duplicate_sf_rows"
    add("PortalIdMappingsDuplicated", "none", {whmcs: "0x60", sf: "0x60"}, "60m")
    add(
        "PortalIdMappingsDuplicated",
        "new WHMCS duplicate",
        {whmcs: "0x30 2x30", sf: "0x60"},
        "40m",
        Fired("critical", 2, {"system": "whmcs"}),
    )
    add(
        "PortalIdMappingsDuplicated",
        "standing Salesforce duplicate",
        {whmcs: "0x60", sf: "3x60"},
        "60m",
        Fired("warning", 3, {"system": "salesforce"}),
    )
    add(
        "PrismaMigrationFailed",
        "failed",
        {"pgrb_prisma_migrations_failed": "1x10"},
        "5m",
        Fired("critical", 1),
    )
    add("PrismaMigrationFailed", "none", {"pgrb_prisma_migrations_failed": "0x10"}, "5m")
    at, limit = 2400.0, s["prisma_migration_max_duration_seconds"]
    started = "pgrb_prisma_migration_oldest_unfinished_start_timestamp_seconds"
    add(
        "PrismaMigrationUnfinished",
        "stuck",
        age_series(started, limit + 120, at),
        "40m",
        Fired("warning", limit + 120),
    )
    add("PrismaMigrationUnfinished", "at the limit", age_series(started, limit, at), "40m")
    return ex


# -- the template functions the rules use, as Prometheus renders them -------------------------


def _g4(value: float) -> str:
    """Go's ``%.4g`` (same rules as Python's for the values used here)."""
    return f"{value:.4g}"


def _go_float(value: float) -> str:
    """Go's ``%v`` of a float64: shortest digits, exponent from 1e21 or below 1e-4."""
    if float(value).is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(float(value))


def _humanize(value: float) -> str:
    if value == 0 or math.isnan(value) or math.isinf(value):
        return _g4(value)
    prefix = ""
    if abs(value) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(value) < 1000:
                break
            prefix, value = p, value / 1000
        return _g4(value) + prefix
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(value) >= 1:
            break
        prefix, value = p, value * 1000
    return _g4(value) + prefix


def _humanize1024(value: float) -> str:
    if abs(value) <= 1:
        return _g4(value)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(value) < 1024:
            break
        prefix, value = p, value / 1024
    return _g4(value) + prefix


def _humanize_duration(value: float) -> str:
    if value == 0:
        return f"{_g4(value)}s"
    assert value >= 1, "sub-second durations are not used in the examples"
    whole = int(value)
    days, hours = whole // 86400, whole // 3600 % 24
    minutes, seconds = whole // 60 % 60, whole % 60
    if days:
        return f"{days}d {hours}h {minutes}m {seconds}s"
    if hours:
        return f"{hours}h {minutes}m {seconds}s"
    if minutes:
        return f"{minutes}m {seconds}s"
    return f"{_g4(value)}s"


_FUNCTIONS: dict[str | None, Callable[[float], str]] = {
    None: _go_float,
    "humanize": _humanize,
    "humanize1024": _humanize1024,
    "humanizeDuration": _humanize_duration,
    "humanizePercentage": lambda v: f"{_g4(v * 100)}%",
}
_ACTION = re.compile(r"\{\{\s*\$(labels\.(\w+)|value)\s*(?:\|\s*(\w+)\s*)?\}\}")


def render(template: str, *, labels: Mapping[str, str], value: float) -> str:
    def action(match: re.Match[str]) -> str:
        function = match.group(3)
        if match.group(2) is not None:
            text = labels.get(match.group(2), "")
            if function == "urlquery":
                return urllib.parse.quote_plus(text, safe="")
            assert function is None, f"unsupported {function} on a label"
            return text
        return str(_FUNCTIONS[function](value))

    rendered = _ACTION.sub(action, template)
    assert "{{" not in rendered, f"template action the test cannot render: {rendered}"
    assert not re.search(r"\{ *\$", rendered), f"single-brace template action: {rendered}"
    return rendered


# -- promtool test files ----------------------------------------------------------------------


def _rules_by_key() -> dict[tuple[str, str], dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return {
        (rule["alert"], rule["labels"]["severity"]): rule
        for group in document["groups"]
        for rule in group["rules"]
    }


def _expected(example: Example, rules: Mapping[tuple[str, str], dict[str, Any]]) -> list[Any]:
    alerts = []
    for fired in example.fires:
        labels = dict(fired.labels) if fired.bare else {**INSTANCE, **fired.labels}
        rule = rules[(example.alert, fired.severity)]
        annotations = {
            key: render(text, labels=labels, value=fired.value)
            for key, text in rule["annotations"].items()
        }
        alerts.append(
            {"exp_labels": {**labels, "severity": fired.severity}, "exp_annotations": annotations}
        )
    return alerts


def promtool_tests(examples_: list[Example], evaluation_interval: str) -> dict[str, Any]:
    rules = _rules_by_key()
    groups = []
    for example in examples_:
        series = [{"series": _series(sel), "values": v} for sel, v in example.series.items()]
        series += [{"series": sel, "values": v} for sel, v in example.raw_series.items()]
        groups.append(
            {
                "name": f"{example.alert}: {example.name}",
                "interval": example.interval,
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": example.at,
                        "alertname": example.alert,
                        "exp_alerts": _expected(example, rules),
                    }
                ],
            }
        )
    return {"rule_files": [str(RULES)], "evaluation_interval": evaluation_interval, "tests": groups}


CONFIG = load_config()
EXAMPLES = examples(CONFIG)


def test_every_rule_has_a_firing_and_a_silent_example() -> None:
    for rule in rules():
        mine = [e for e in EXAMPLES if e.alert == rule.name]
        firing = [e for e in mine if any(f.severity == rule.severity for f in e.fires)]
        silent = [e for e in mine if all(f.severity != rule.severity for f in e.fires)]
        assert firing, f"{rule.name} ({rule.severity}) has no example where it fires"
        assert silent, f"{rule.name} ({rule.severity}) has no example where it stays silent"


def test_every_alert_fires_above_and_stays_silent_below_its_threshold(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    # Rules are evaluated at the examples' sample interval: a day-long example evaluated every
    # minute would take seconds for nothing.
    files = []
    for interval in sorted({e.interval for e in EXAMPLES}):
        tests = promtool_tests([e for e in EXAMPLES if e.interval == interval], interval)
        path = tmp_path / f"every-{interval}.test.yml"
        path.write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
        files.append(str(path))
    done = subprocess.run(
        [promtool, "test", "rules", *files], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
