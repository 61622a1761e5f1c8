"""The examples of the promtool rule tests: every alert fires above its threshold after its ``for``
and stays silent just below it, with every number derived from queries.yaml ``settings`` (change a
threshold and the examples move with it).
"""

from __future__ import annotations

import dataclasses

from pg_runbook_exporter.config import Config
from pg_runbook_exporter.mixin.options import MixinOptions
from pg_runbook_exporter.mixin.rulebackups import backups
from pg_runbook_exporter.mixin.rulebook import Book, Example, const, number
from pg_runbook_exporter.mixin.ruleoffenders import offenders

GIB = 1024**3
# A VACUUM FULL holding its lock while sessions queue (the maintenance check's labels)
VACUUM_FULL = {
    "pid": "4242", "datname": "portal", "schemaname": "public", "relname": "id_mappings",
    "command": "VACUUM FULL", "phase": "seq scanning heap",
}  # fmt: skip


def _availability(b: Book) -> None:
    b.add("PgRunbookExporterDown", "down", {"up": "0x10"}, "5m", b.fired("critical", 0))
    b.add("PgRunbookExporterDown", "up", {"up": "1x10"}, "5m")
    b.add(
        "PgRunbookExporterAbsent", "absent", {}, "10m", b.fired_bare("critical", 1),
        others={b.series("up", job="node", instance="n1:9100"): "1x20"},
    )  # fmt: skip
    b.add("PgRunbookExporterAbsent", "present", {"up": "1x20"}, "10m")
    b.add("PostgresDown", "down", {"pgrb_up": "0x10"}, "5m", b.fired("critical", 0))
    b.add("PostgresDown", "up", {"pgrb_up": "1x10"}, "5m")
    success = 'pgrb_check_success{check="locks"}'
    b.add(
        "PgRunbookCheckFailing", "failing", {success: "0x20"}, "15m",
        b.fired("warning", 0, check="locks"),
    )  # fmt: skip
    b.add("PgRunbookCheckFailing", "succeeding", {success: "1x20"}, "15m")
    stale_n, check_interval, at = b.setting("check_stale_intervals"), 300.0, 1200.0
    for name, age, fires in (
        ("stale", at, (b.fired("warning", at, check="wraparound"),)),
        ("just fresh", stale_n * check_interval, ()),
    ):
        series = {
            'pgrb_check_last_success_timestamp_seconds{check="wraparound"}': const(at - age, 30),
            'pgrb_check_interval_seconds{check="wraparound"}': const(check_interval, 30),
        }
        b.add("PgRunbookCheckStale", name, series, "20m", *fires)
    b.add(
        "PgRunbookCheckSkipped", "tables missing",
        {'pgrb_check_skipped{check="id_mappings_orphans",reason="relation"}': "1x30"}, "20m",
        b.fired("warning", 1, check="id_mappings_orphans", reason="relation"),
    )  # fmt: skip
    b.add(
        "PgRunbookCheckSkipped", "extension missing",
        {'pgrb_check_skipped{check="statements",reason="extension"}': "1x30"}, "20m",
    )  # fmt: skip
    role = "pgrb_role_in_pg_monitor"
    b.add("PgRunbookRoleLacksPgMonitor", "not a member", {role: "0x30"}, "20m",
          b.fired("warning", 0))  # fmt: skip
    b.add("PgRunbookRoleLacksPgMonitor", "member", {role: "1x30"}, "20m")
    b.add("PgRunbookRoleLacksPgMonitor", "revoked 10 minutes ago", {role: "1x10 0x20"}, "20m")
    truncated = 'pgrb_check_truncated{check="table_stats"}'
    b.add("PgRunbookCheckTruncated", "truncated", {truncated: "1x30"}, "20m",
          b.fired("warning", 1, check="table_stats"))  # fmt: skip
    b.add("PgRunbookCheckTruncated", "complete", {truncated: "0x30"}, "20m")


def _connections(b: Book) -> None:
    warn = b.setting("connections_usage_warning_ratio")
    crit = b.setting("connections_usage_critical_ratio")
    for name, ratio, severities in (
        ("below warning", warn - 0.01, ()),
        ("at warning", warn, ("warning",)),
        ("below critical", crit - 0.01, ("warning",)),
        ("at critical", crit, ("warning", "critical")),
    ):
        b.add(
            "PostgresConnectionsHigh", name, {"pgrb_connections_usage_ratio": const(ratio, 20)},
            "10m", *(b.fired(s, ratio) for s in severities),
        )  # fmt: skip
    pool = b.setting("app_pool_size")
    app = (
        "pgrb_application_instance_connections"
        '{application_name="portal-bff",client_addr="10.0.0.5"}'
    )
    other = 'pgrb_application_instance_connections{application_name="other",client_addr="other"}'
    b.add(
        "PortalAppPoolSaturated", "at pool size", {app: const(pool, 20)}, "10m",
        b.fired("warning", pool, application_name="portal-bff", client_addr="10.0.0.5"),
    )  # fmt: skip
    b.add(
        "PortalAppPoolSaturated", "below pool size, other summed",
        {app: const(pool - 1, 20), other: const(pool * 5, 20)}, "10m",
    )  # fmt: skip

    at = 1200.0
    idle = 'pgrb_oldest_idle_in_transaction_timestamp_seconds{datname="portal"}'
    warn = b.setting("idle_in_transaction_warning_seconds")
    crit = b.setting("idle_in_transaction_critical_seconds")
    for name, age, severities in (
        ("at warning", warn, ()),
        ("past warning", warn + 120, ("warning",)),
        ("at critical", crit, ("warning",)),
        ("past critical", crit + 120, ("warning", "critical")),
    ):
        b.add(
            "PostgresIdleInTransaction", name, b.ages(idle, age, at), "20m",
            *(b.fired(s, age, datname="portal") for s in severities),
        )  # fmt: skip
    long_ = b.setting("long_running_query_seconds")
    query = 'pgrb_oldest_query_start_timestamp_seconds{{kind="{}"}}'
    b.add(
        "PostgresLongRunningQuery", "client past the line",
        b.ages(query.format("client"), long_ + 120, at), "20m",
        b.fired("warning", long_ + 120, kind="client"),
    )  # fmt: skip
    b.add(
        "PostgresLongRunningQuery", "client at the line, old autovacuum and pg_dump",
        {
            **b.ages(query.format("client"), long_, at),
            **b.ages(query.format("autovacuum"), at, at),
            **b.ages(query.format("maintenance"), at, at),
        },
        "20m",
    )  # fmt: skip
    lock = b.setting("lock_wait_warning_seconds")
    waiting = "pgrb_oldest_lock_wait_start_timestamp_seconds"
    b.add("PostgresLockWait", "past", b.ages(waiting, lock + 120, at), "20m",
          b.fired("warning", lock + 120))  # fmt: skip
    b.add("PostgresLockWait", "at", b.ages(waiting, lock, at), "20m")
    blocked = "pgrb_blocked_sessions"
    b.add("PostgresSessionsBlocked", "blocked", {blocked: "3x20"}, "10m", b.fired("warning", 3))
    b.add("PostgresSessionsBlocked", "none blocked", {blocked: "0x20"}, "10m")
    # a VACUUM FULL at noon blocks the portal: the lock pages fire, and name it
    behind = b.series("pgrb_maintenance_blocked_sessions", **VACUUM_FULL)
    named = {"pgrb_maintenance_blocked_sessions": (b.fired("", 3, **VACUUM_FULL).labels, 3.0)}
    b.add(
        "PostgresSessionsBlocked", "blocked by a VACUUM FULL", {blocked: "3x20"}, "10m",
        dataclasses.replace(b.fired("warning", 3), found=named), others={behind: "3x20"},
    )  # fmt: skip
    b.add(
        "PostgresLockWait", "behind a VACUUM FULL", b.ages(waiting, lock + 120, at), "20m",
        dataclasses.replace(b.fired("warning", lock + 120), found=named),
        others={behind: "3x80"},
    )  # fmt: skip


def _maintenance(b: Book) -> None:
    ratio, rows = b.setting("dead_ratio_warning"), b.setting("dead_ratio_min_rows")
    table = '{schemaname="public",relname="id_mappings"}'
    tlabels = {"schemaname": "public", "relname": "id_mappings"}

    def tables(where: str, r: float, total: float, dead: float) -> dict[str, str]:
        return {
            f"pgrb_table_dead_ratio{where}": const(r, 30),
            f"pgrb_table_dead_rows{where}": const(dead, 30),
            f"pgrb_table_live_rows{where}": const(total - dead, 30),
        }

    for name, r, total, fires in (
        ("at ratio and size", ratio, rows, (b.fired("warning", ratio, **tlabels),)),
        ("ratio just below", ratio - 0.01, rows, ()),
        ("table just too small", 0.5, rows - 1, ()),
    ):
        dead = round(r * total)
        b.add("PostgresTableDeadRows", name, tables(table, r, total, dead), "20m", *fires)
    b.add(
        "PostgresTableDeadRows", "remainder row of many small tables",
        tables('{schemaname="other",relname="other"}', 0.5, 2 * rows, rows), "20m",
    )  # fmt: skip
    b.add(
        "PostgresTableDeadRows", "a real table named other",
        tables('{schemaname="public",relname="other"}', 0.5, 2 * rows, rows), "20m",
        b.fired("warning", 0.5, schemaname="public", relname="other"),
    )  # fmt: skip
    vac = b.setting("vacuum_max_age_seconds")
    at = vac + 3600
    steps = int(at // 900)
    for name, vacuum_age, dead, fires in (
        ("vacuum too old", at, 5, (b.fired("warning", at, **tlabels, operation="vacuum"),)),
        ("vacuum at the limit", vac, 5, ()),
        ("vacuum too old, no dead rows", at, 0, ()),
    ):
        series = {
            f"pgrb_table_last_vacuum_timestamp_seconds{table}": const(at - vacuum_age, steps),
            f"pgrb_table_last_analyze_timestamp_seconds{table}": const(at - vac, steps),
            f"pgrb_table_dead_rows{table}": const(dead, steps),
        }
        b.add("PostgresTableNotVacuumed", name, series, f"{int(at)}s", *fires, interval="15m")
    unused = "pgrb_unused_indexes"
    b.add("PostgresUnusedIndexes", "unused", {unused: "3x100"}, "90m", b.fired("info", 3))
    b.add("PostgresUnusedIndexes", "all used", {unused: "0x100"}, "90m")
    _maintenance_now(b)


def _maintenance_now(b: Book) -> None:
    index = {"schemaname": "public", "relname": "id_mappings",
             "indexrelname": "id_mappings_whmcs_client_id_key"}  # fmt: skip
    invalid = b.series("pgrb_invalid_indexes", **index)
    b.add("PostgresInvalidIndex", "left by a failed build", {}, "20m",
          b.fired("warning", 1, **index), others={invalid: "1x20"})  # fmt: skip
    b.add("PostgresInvalidIndex", "dropped after 10 minutes", {}, "20m", others={invalid: "1x10"})
    running = "pgrb_maintenance_running"
    by_phase = {  # the same VACUUM FULL, its phase changing after 3 minutes
        b.series(running, **VACUUM_FULL): "1x3",
        b.series(running, **{**VACUUM_FULL, "phase": "writing new heap"}): "_x3 1x10",
    }
    command = {k: v for k, v in VACUUM_FULL.items() if k != "phase"}
    b.add("PostgresMaintenanceRunning", "through two phases", {}, "10m",
          b.fired("info", 1, **command), others=by_phase)  # fmt: skip
    b.add("PostgresMaintenanceRunning", "for 3 minutes", {}, "10m",
          others={b.series(running, **VACUUM_FULL): "1x3"})  # fmt: skip
    auto = {**VACUUM_FULL, "command": "autovacuum", "phase": "scanning heap"}
    b.add("PostgresMaintenanceRunning", "autovacuum", {}, "10m",
          others={b.series(running, **auto): "1x10"})  # fmt: skip
    ratio, used = b.setting("sequence_used_warning_ratio"), "pgrb_sequence_used_ratio"
    sequence = {"schemaname": "public", "sequencename": "invoices_id_seq", "relname": "invoices",
                "attname": "id"}  # fmt: skip
    for name, value, fires in (
        ("past the line", ratio + 0.05, (b.fired("warning", ratio + 0.05, **sequence),)),
        ("at the line", ratio, ()),
    ):
        b.add("PostgresSequenceNearExhaustion", name, {}, "20m", *fires,
              others={b.series(used, **sequence): const(value, 20)})  # fmt: skip
    pending = "pgrb_settings_pending_restart"
    b.add("PostgresSettingsPendingRestart", "pending", {pending: "1x20"}, "20m", b.fired("info", 1))
    b.add("PostgresSettingsPendingRestart", "none", {pending: "0x20"}, "20m")


def _disk(b: Book) -> None:
    """node_exporter's series of the data volume: its own instance and job, not the exporter's."""
    node = {"device": "/dev/vdb1", "fstype": "ext4", "instance": "db1:9100",
            "job": b.options.node_job, "mountpoint": b.options.node_mountpoint}  # fmt: skip
    labels = ",".join(f'{k}="{v}"' for k, v in node.items())
    avail, size = (f"{name}{{{labels}}}" for name in
                   ("node_filesystem_avail_bytes", "node_filesystem_size_bytes"))  # fmt: skip
    ratio, total = b.setting("disk_free_warning_ratio"), 1000 * GIB
    for name, free, severities in (("below the line", ratio - 0.05, ("warning",)),
                                   ("at the line", ratio, ())):  # fmt: skip
        fires = [dataclasses.replace(b.fired(s, free), labels=node) for s in severities]
        series = {avail: const(round(free * total), 30), size: const(total, 30)}
        b.add("PostgresDiskSpaceLow", name, {}, "25m", *fires, others=series)
    # falling by `step` every 5 minutes, 30 % free at 2 h: full before the horizon or not
    horizon, at = b.setting("disk_full_forecast_seconds"), 24
    for name, step, full in (
        ("fills up within the horizon", 10 * GIB, True),
        ("fills up later", 1 * GIB, False),
    ):
        left = 300 * GIB - horizon / 300 * step  # what predict_linear sees at the horizon
        series = {avail: f"{number(300 * GIB + at * step)}-{number(step)}x{at}",
                  size: const(total, at)}  # fmt: skip
        fired = [dataclasses.replace(b.fired("critical", left), labels=node)] if full else []
        b.add("PostgresDiskSpaceLow", name, {}, "2h", *fired, others=series, interval="5m")


def _wal(b: Book) -> None:
    at, ready = 1800.0, b.setting("wal_archive_ready_max_age_seconds")
    oldest = "pgrb_wal_archive_oldest_ready_timestamp_seconds"
    b.add("PostgresWalArchiveBehind", "past", b.ages(oldest, ready + 180, at), "30m",
          b.fired("critical", ready + 180))  # fmt: skip
    b.add("PostgresWalArchiveBehind", "at", b.ages(oldest, ready, at), "30m")
    failed = "pgrb_wal_archive_last_failed_timestamp_seconds"
    archived = "pgrb_wal_archive_last_archived_timestamp_seconds"
    for name, fail_ts, ok_ts, enabled, fires in (
        ("failure after success", 900.0, 600.0, 1, (b.fired("warning", at - 900),)),
        ("failure, never archived", 900.0, None, 1, (b.fired("warning", at - 900),)),
        ("same second", 900.0, 900.0, 1, ()),
        ("archiving turned off", 900.0, 600.0, 0, ()),
    ):
        series = {failed: const(fail_ts, 40), "pgrb_wal_archiving_enabled": const(enabled, 40)}
        if ok_ts is not None:
            series[archived] = const(ok_ts, 40)
        b.add("PostgresWalArchiveFailing", name, series, "30m", *fires)
    on_off, role = "pgrb_wal_archiving_enabled", "pgrb_in_recovery"
    for name, archiving, standby, fires in (
        ("off on a primary", "0x40", "0x40", (b.fired("warning", 0),)),
        ("off on a standby", "0x40", "1x40", ()),
        ("on", "1x40", "0x40", ()),
        ("off for 13 minutes", "1x16 0x23", "0x40", ()),
    ):
        b.add("PostgresWalArchivingDisabled", name, {on_off: archiving, role: standby}, "30m",
              *fires)  # fmt: skip
    standby = "db2:9819"
    b.add(
        "PostgresWalArchivingDisabled",
        "off on a primary and its standby, each matched to its own role",
        {on_off: "0x40", role: "0x40"}, "30m", b.fired("warning", 0),
        others={b.series(on_off, instance=standby): "0x40",
                b.series(role, instance=standby): "1x40"},
    )  # fmt: skip
    budget, size = b.setting("wal_directory_budget_bytes"), "pgrb_wal_directory_size_bytes"
    b.add("PostgresWalDirectoryOverBudget", "over", {size: const(budget + 1, 20)}, "10m",
          b.fired("critical", budget + 1))  # fmt: skip
    b.add("PostgresWalDirectoryOverBudget", "at", {size: const(budget, 20)}, "10m")
    slot = 'pgrb_replication_slot_retained_wal_bytes{slot_name="standby1",slot_type="physical"}'
    b.add(
        "PostgresReplicationSlotRetainingWal", "over", {slot: const(budget + 1, 20)}, "10m",
        b.fired("warning", budget + 1, slot_name="standby1", slot_type="physical"),
    )  # fmt: skip
    b.add("PostgresReplicationSlotRetainingWal", "at", {slot: const(budget, 20)}, "10m")
    # linear growth by `step` bytes every 5 minutes, evaluated after 8 hours (96 samples)
    size_budget = b.setting("database_size_budget_bytes")
    horizon, step = b.setting("database_size_forecast_seconds"), 32 * 1024**2
    ahead = 96 + horizon / 300
    for name, predicted, fires in (
        ("grows past", size_budget + 16 * step,
         (b.fired("warning", size_budget + 16 * step, datname="portal"),)),
        ("grows to just below", size_budget - step, ()),
    ):  # fmt: skip
        start = predicted - ahead * step
        b.add(
            "PostgresDatabaseSizeForecast", name,
            {'pgrb_database_size_bytes{datname="portal"}': f"{number(start)}+{step}x96"}, "8h",
            *fires, interval="5m",
        )  # fmt: skip


def _integrity(b: Book) -> None:
    failures = 'pgrb_checksum_failures_total{datname="portal"}'
    b.add("PostgresChecksumFailures", "none", {failures: "0x60"}, "60m")
    b.add("PostgresChecksumFailures", "old failures, still a page", {failures: "2x60"}, "60m",
          b.fired("critical", 2, datname="portal"))  # fmt: skip
    b.add("PostgresChecksumFailures", "new failure", {failures: "0x40 1x19"}, "50m",
          b.fired("critical", 1, datname="portal"))  # fmt: skip
    checksums = "pgrb_data_checksums_enabled"
    b.add("PostgresDataChecksumsDisabled", "off", {checksums: "0x100"}, "90m",
          b.fired("warning", 0))  # fmt: skip
    b.add("PostgresDataChecksumsDisabled", "on", {checksums: "1x100"}, "90m")
    b.add("PostgresDataChecksumsDisabled", "off for 50 minutes", {checksums: "1x40 0x60"}, "90m")

    warn, crit = b.setting("xid_age_warning"), b.setting("xid_age_critical")
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
        series = {
            'pgrb_database_xid_age{datname="portal"}': const(xid, 20),
            'pgrb_database_mxid_age{datname="portal"}': const(mxid, 20),
        }
        b.add(
            "PostgresXidWraparound", name, series, "10m",
            *(b.fired(s, value, datname="portal", age=age) for s, age, value in ages),
        )  # fmt: skip

    orphans = "pgrb_id_mappings_orphaned"
    b.add("PortalIdMappingsOrphaned", "none", {orphans: "0x60"}, "60m")
    b.add("PortalIdMappingsOrphaned", "standing", {orphans: "3x60"}, "60m", b.fired("warning", 3))
    b.add("PortalIdMappingsOrphaned", "new, paged first", {orphans: "0x30 3x30"}, "40m",
          b.fired("critical", 3))  # fmt: skip
    b.add("PortalIdMappingsOrphaned", "new, then ticket too", {orphans: "0x30 3x30"}, "50m",
          b.fired("critical", 3), b.fired("warning", 3))  # fmt: skip
    whmcs, sf = "pgrb_id_mappings_duplicate_whmcs_rows", "pgrb_id_mappings_duplicate_sf_rows"
    b.add("PortalIdMappingsDuplicated", "none", {whmcs: "0x60", sf: "0x60"}, "60m")
    b.add("PortalIdMappingsDuplicated", "new WHMCS duplicate", {whmcs: "0x30 2x30", sf: "0x60"},
          "40m", b.fired("critical", 2, system="whmcs"))  # fmt: skip
    b.add("PortalIdMappingsDuplicated", "standing Salesforce duplicate",
          {whmcs: "0x60", sf: "3x60"}, "60m",
          b.fired("warning", 3, system="salesforce"))  # fmt: skip

    failed = "pgrb_prisma_migrations_failed"
    b.add("PrismaMigrationFailed", "failed", {failed: "1x10"}, "5m", b.fired("critical", 1))
    b.add("PrismaMigrationFailed", "none", {failed: "0x10"}, "5m")
    at, limit = 2400.0, b.setting("prisma_migration_max_duration_seconds")
    started = "pgrb_prisma_migration_oldest_unfinished_start_timestamp_seconds"
    b.add("PrismaMigrationUnfinished", "stuck", b.ages(started, limit + 120, at), "40m",
          b.fired("warning", limit + 120))  # fmt: skip
    b.add("PrismaMigrationUnfinished", "at the limit", b.ages(started, limit, at), "40m")


def examples(config: Config, options: MixinOptions) -> list[Example]:
    """Every example, alert group by alert group, for the target ``options`` describe."""
    book = Book(config, options)
    groups = (
        _availability,
        _connections,
        offenders,
        _maintenance,
        _wal,
        _disk,
        _integrity,
        backups,
    )
    for group in groups:
        group(book)
    return book.examples
