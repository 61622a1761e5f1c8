"""Grafana dashboards generated from queries.yaml: a runbook-health front board and detail boards.

Every threshold a panel colours by is read from ``settings`` (the numbers the alert rules use);
every metric a query names is checked against the config's checks, settings and self-metrics.
``generate(config)`` returns the files committed under ``dashboards/``: one JSON model per board
and Grafana provisioning files for the boards and a Prometheus datasource.
"""

from __future__ import annotations

import json

import yaml

from pg_runbook_exporter.config import Config
from pg_runbook_exporter.mixin.dashbackups import backups_board, front_tiles
from pg_runbook_exporter.mixin.dashdetail import (
    ARCHIVING_OFF,
    CHECKSUMS_OFF,
    CONNECTIONS,
    INTEGRITY,
    MAINTENANCE,
    STORAGE,
    dead_ratio,
    detail_boards,
)
from pg_runbook_exporter.mixin.dashpanels import (
    ANY,
    CRIT,
    OK,
    RATE,
    WARN,
    Board,
    Mapping,
    Metrics,
    Panel,
    Query,
    Row,
    Step,
    ago,
    alert_colour,
    human,
    stat,
    table,
    timeseries,
)
from pg_runbook_exporter.mixin.dashrender import TAG, render_board
from pg_runbook_exporter.mixin.options import MixinOptions

DEFAULTS = MixinOptions()

HEALTH = "pgrb-health"
EXPORTER = "pgrb-exporter"
PROVISIONED_PATH = "/var/lib/grafana/dashboards/pg-runbook"
DATASOURCE_UID = "pgrb-prometheus"
NO_PG_MONITOR = "PgRunbookRoleLacksPgMonitor"


def _oldest(m: Metrics, metric: str, *matchers: str, db: bool = False) -> str:
    """Seconds since the oldest ``metric`` timestamp; 0 while its check finds none."""
    return m.or_zero(f"max({ago(m, metric, *matchers, db=db)})", metric)


def _tile(
    title: str,
    queries: tuple[Query, ...],
    *,
    unit: str,
    steps: tuple[Step, ...],
    what: str,
    runbook: str,
    alerts: tuple[str, ...],
    link: str,
    mappings: tuple[Mapping, ...] = (),
    width: int = 4,
) -> Panel:
    return Panel(
        "stat", title, what, runbook, unit,
        tuple(Query(q.expr, q.legend, instant=True) for q in queries),
        width=width, height=4, steps=steps, mirrors=alerts, link=link, mappings=mappings,
    )  # fmt: skip


def _sessions(m: Metrics) -> tuple[Panel, ...]:
    q, up = Query, f"0 * max({m.sel('up')})"
    warn, crit = WARN, CRIT
    pools = m.sel("application_instance_connections", 'application_name!="other"')
    last_success = ago(m, "check_last_success_timestamp_seconds")
    interval = m.sel("check_interval_seconds")
    stale = f"{last_success} > {m.number('check_stale_intervals')} * {interval}"
    return (
        _tile("Database up", (q(f"max({m.sel('up')}) or vector(-1)"),), unit="none",
              steps=(Step(crit), Step("green", ANY)), link=EXPORTER,
              mappings=(Mapping(1, "up", "green"), Mapping(0, "DOWN", crit),
                        Mapping(-1, "not scraped", crit)),
              what="Did the exporter's last attempt reach PostgreSQL? \"not scraped\": Prometheus "
                   "has no sample from the exporter for this job and instance.",
              runbook='"Database Unresponsive"',
              alerts=("PostgresDown", "PgRunbookExporterDown", "PgRunbookExporterAbsent"),
              width=6),
        _tile("Connection slots used", (q(f"max({m.sel('connections_usage_ratio')})"),),
              unit="percentunit", width=6, link=CONNECTIONS,
              steps=(OK, m.step(warn, "connections_usage_warning_ratio"),
                     m.step(crit, "connections_usage_critical_ratio")),
              what="Client connections as a share of the slots ordinary roles can use.",
              runbook='"Connection Pool Monitoring"', alerts=("PostgresConnectionsHigh",)),
        _tile("Busiest app pool",
              (q(m.or_zero(f"max({pools})", "application_instance_connections")),),
              unit="none", width=6, link=CONNECTIONS, steps=(OK, m.step(warn, "app_pool_size")),
              what="Connections of the busiest app instance (application_name and client address) "
                   "against the Prisma pool size of one instance.",
              runbook='"Prisma Connection Pool Settings"', alerts=("PortalAppPoolSaturated",)),
        _tile("Checks failing / stale",
              (q(f"count({m.sel('check_success')} == 0) or {up}", "failing"),
               q(f"count({stale}) or {up}", "stale")),
              unit="none", width=6, link=EXPORTER, steps=(OK, Step(warn, ANY)),
              what="Runbook checks whose last run failed, and checks whose last success is older "
                   f"than {m.number('check_stale_intervals')} intervals (check_stale_intervals): "
                   "their panels and alerts fall silent.",
              runbook="every section (the exporter runs each check)",
              alerts=("PgRunbookCheckFailing", "PgRunbookCheckStale")),
        _tile("Longest running query",
              (q(_oldest(m, "oldest_query_start_timestamp_seconds", 'kind="client"')),),
              unit="s", width=8, link=CONNECTIONS,
              steps=(OK, m.step(warn, "long_running_query_seconds")),
              what="Age of the oldest active client query (autovacuum and maintenance tools are "
                   "on the Connections board); 0 when none runs.",
              runbook='"Check Active Connections" › "Long-running queries (>5 minutes)"',
              alerts=("PostgresLongRunningQuery",)),
        _tile("Idle in transaction",
              (q(_oldest(m, "oldest_idle_in_transaction_timestamp_seconds", db=True)),),
              unit="s", width=8, link=CONNECTIONS,
              steps=(OK, m.step(warn, "idle_in_transaction_warning_seconds"),
                     m.step(crit, "idle_in_transaction_critical_seconds")),
              what="How long the oldest session has been idle inside an open transaction; 0 when "
                   "none is.", runbook='"Kill Stuck Connections"',
              alerts=("PostgresIdleInTransaction",)),
        _tile("Longest lock wait", (q(_oldest(m, "oldest_lock_wait_start_timestamp_seconds")),),
              unit="s", width=8, link=CONNECTIONS,
              steps=(OK, m.step(warn, "lock_wait_warning_seconds")),
              what="How long the longest-waiting lock request has waited; 0 when no session "
                   "waits for a lock.", runbook='"Lock Monitoring"', alerts=("PostgresLockWait",)),
    )  # fmt: skip


def _capacity(m: Metrics) -> tuple[Panel, ...]:
    q = Query
    warn, crit = WARN, CRIT
    dirty = f"on(instance, job, schemaname, relname) {m.sel('table_dead_rows')} > 0"
    sizes = m.sel("database_size_bytes", db=True)
    horizon = m.number("database_size_forecast_seconds")
    forecast = f"max(predict_linear({sizes}[6h], {horizon}))"
    return (
        _tile("Worst dead-row ratio", (q(m.or_zero(f"max({dead_ratio(m)})", "table_dead_ratio")),),
              unit="percentunit", link=MAINTENANCE, steps=(OK, m.step(warn, "dead_ratio_warning")),
              what="Highest dead-row ratio among tables with at least "
                   f"{m.number('dead_ratio_min_rows')} live plus dead rows (dead_ratio_min_rows); "
                   "0 when no table is that large.",
              runbook='"Check Table Bloat"', alerts=("PostgresTableDeadRows",)),
        _tile("Longest since vacuum / analyze",
              (q(m.or_zero(f"max({ago(m, 'table_last_vacuum_timestamp_seconds')} and {dirty})",
                           "table_last_vacuum_timestamp_seconds"), "vacuum"),
               q(m.or_zero(f"max({ago(m, 'table_last_analyze_timestamp_seconds')} and {dirty})",
                           "table_last_analyze_timestamp_seconds"), "analyze")),
              unit="s", width=5, link=MAINTENANCE,
              steps=(OK, m.step(warn, "vacuum_max_age_seconds")),
              what="Time since the least recently vacuumed and analyzed table that has dead rows "
                   "(a table never vacuumed has no timestamp and is not counted).",
              runbook='"VACUUM and ANALYZE"', alerts=("PostgresTableNotVacuumed",)),
        _tile("Transaction ID age",
              (q(f"max({m.sel('database_xid_age')})", "xid"),
               q(f"max({m.sel('database_mxid_age')})", "multixact")),
              unit="short", width=5, link=MAINTENANCE,
              steps=(OK, m.step(warn, "xid_age_warning"), m.step(crit, "xid_age_critical")),
              what="Transaction-ID and multixact age of the oldest database, templates included "
                   "(wraparound at 2^31).",
              runbook='"PostgreSQL Maintenance"', alerts=("PostgresXidWraparound",)),
        _tile("Largest database", (q(f"max({sizes})", "now"), q(forecast, "forecast")),
              unit="bytes", width=6, link=STORAGE,
              steps=(OK, m.step(warn, "database_size_budget_bytes")),
              what="Size of the largest selected database now, and extrapolated from the last 6 h "
                   f"to {human(m.setting('database_size_forecast_seconds'), 's')} ahead "
                   "(database_size_forecast_seconds): the alert watches the forecast.",
              runbook='"Database Size", "Disk Space Full"',
              alerts=("PostgresDatabaseSizeForecast",)),
        _tile("pg_wal size", (q(f"max({m.sel('wal_directory_size_bytes')})"),),
              unit="bytes", link=STORAGE, steps=(OK, m.step(crit, "wal_directory_budget_bytes")),
              what="Total size of the files in pg_wal.", runbook='"Disk Space Full"',
              alerts=("PostgresWalDirectoryOverBudget",)),
    )  # fmt: skip


def _integrity(m: Metrics) -> tuple[Panel, ...]:
    q = Query
    warn, crit = WARN, CRIT
    archiving = f"max({m.sel('wal_archiving_enabled')})"
    standby = f"max({m.sel('in_recovery')})"
    checksums = f"max({m.sel('data_checksums_enabled')})"
    oldest_ready = _oldest(m, "wal_archive_oldest_ready_timestamp_seconds")
    return (
        # -2: a standby that does not archive (normal); -1: archiving off, unless known a standby
        _tile("Oldest WAL not archived",
              (q(f"({oldest_ready}) and on() {archiving} == 1 "
                 f"or ({archiving} - 2 and on() {standby} == 1) or {archiving} - 1"),),
              unit="s", link=STORAGE, steps=(OK, m.step(crit, "wal_archive_ready_max_age_seconds")),
              mappings=(Mapping(-1, "archiving off", alert_colour(ARCHIVING_OFF)),
                        Mapping(-2, "standby, not archiving", "blue")),
              what="Age of the oldest WAL segment waiting for archive_command; 0 when none "
                   "waits; \"archiving off\" when this primary does not archive WAL; "
                   "\"standby, not archiving\" on a standby with archive_mode on (only the "
                   "primary archives).",
              runbook='"Backup Procedures", "Point-in-Time Recovery"',
              alerts=("PostgresWalArchiveBehind", ARCHIVING_OFF)),
        _tile("Orphaned mappings", (q(f"max({m.sel('id_mappings_orphaned')})"),),
              unit="none", link=INTEGRITY, steps=(OK, Step(warn, ANY)),
              what="id_mappings rows whose portal user no longer exists (the critical alert "
                   "fires when the count rises).",
              runbook='"ID Mappings Data Integrity" › "Check for orphaned mappings"',
              alerts=("PortalIdMappingsOrphaned",)),
        _tile("Duplicate mappings",
              (q(f"max({m.sel('id_mappings_duplicate_whmcs_rows')})", "WHMCS"),
               q(f"max({m.sel('id_mappings_duplicate_sf_rows')})", "Salesforce")),
              unit="none", link=INTEGRITY, steps=(OK, Step(warn, ANY)),
              what="id_mappings rows sharing their WHMCS client id or Salesforce account id "
                   "with another row (the critical alert fires when a count rises).",
              runbook='"ID Mappings Data Integrity" › "Check for duplicate … mappings"',
              alerts=("PortalIdMappingsDuplicated",)),
        _tile("Failed migrations", (q(f"max({m.sel('prisma_migrations_failed')})"),),
              unit="none", link=INTEGRITY, steps=(OK, Step(crit, ANY)),
              what="Prisma migrations that failed and were not rolled back; `prisma migrate "
                   "deploy` refuses to run until they are resolved.",
              runbook='"Migration Management" › "Rollback Procedure"',
              alerts=("PrismaMigrationFailed",)),
        _tile("Unfinished migration",
              (q(_oldest(m, "prisma_migration_oldest_unfinished_start_timestamp_seconds")),),
              unit="s", link=INTEGRITY,
              steps=(OK, m.step(warn, "prisma_migration_max_duration_seconds")),
              what="How long the oldest migration neither finished nor failed has been running; "
                   "0 when none is.",
              runbook='"Migration Management" › "Estimate migration duration"',
              alerts=("PrismaMigrationUnfinished",)),
        _tile("Checksum failures",
              (q(f"(sum({m.sel('checksum_failures_total')}) and on() {checksums} == 1) "
                 f"or {checksums} - 1"),),
              unit="none", link=INTEGRITY, steps=(OK, Step(crit, ANY)),
              mappings=(Mapping(-1, "checksums off", alert_colour(CHECKSUMS_OFF)),),
              what="Data-page checksum failures recorded since the statistics were reset (the "
                   "critical alert fires on any); \"checksums off\" when the cluster "
                   "cannot detect them.",
              runbook='"Corruption Detected"',
              alerts=("PostgresChecksumFailures", CHECKSUMS_OFF)),
        *front_tiles(m),
    )  # fmt: skip


def exporter_board(m: Metrics) -> Board:
    q, ts = Query, timeseries
    runbook = "every section (the exporter runs the runbook's checks)"
    per_check = "{{check}}"
    age = (f"({ago(m, 'check_last_success_timestamp_seconds')}) "
           f"/ {m.sel('check_interval_seconds')}")  # fmt: skip
    checks = (
        table("Checks (now)",
               (m.sel("check_success"), m.sel("check_duration_seconds"),
                ago(m, "check_last_success_timestamp_seconds"), m.sel("check_interval_seconds"),
                m.sel("check_series"), m.sel("check_truncated")),
               ("succeeded", "duration", "since success", "interval", "series", "truncated"),
               units=(("duration", "s"), ("since success", "s"), ("interval", "s")),
               alerts=("PgRunbookCheckFailing", "PgRunbookCheckTruncated"), height=10,
               runbook=runbook, ascending=True,
               what="Each check's last run: succeeded (1) or failed (0), duration, time since "
                    "its last success, interval, series exported and truncation (1: rows over "
                    "max_series were dropped)."),
        stat("Role in pg_monitor", q(m.sel("role_in_pg_monitor")), unit="none", width=6,
             alerts=(NO_PG_MONITOR,),
             mappings=(Mapping(1, "yes", "green"), Mapping(0, "no", alert_colour(NO_PG_MONITOR))),
             what="Is the exporter's role a member of pg_monitor? Without it other roles' "
                  "sessions show no state or query, and the WAL and statement checks fail.",
             runbook=runbook),
        table("Skipped checks (now)", (m.sel("check_skipped"),), ("skipped",),
               alerts=("PgRunbookCheckSkipped",), height=8, width=18, runbook=runbook,
               empty="every check can run on this server",
               what="Checks that cannot run on this server, and why (reason): version (no SQL for "
                    "this PostgreSQL major), standby (primary only), extension (not created, e.g. "
                    "pg_stat_statements) or relation (its tables are missing: the wrong "
                    "database?). Their panels stay empty and their alerts cannot fire."),
        ts("Check age in intervals", (q(age, per_check),), unit="none",
           steps=(OK, m.step(WARN, "check_stale_intervals")), alerts=("PgRunbookCheckStale",),
           what="Seconds since each check last succeeded over its interval: about 1 when "
                "healthy.", runbook=runbook),
        ts("Check errors per second",
           (q(f"sum by (check, reason) (rate({m.sel('check_errors_total')}{RATE}))",
              "{{check}}: {{reason}}"),), unit="cps", alerts=("PgRunbookCheckFailing",),
           what="Failed runs by check and reason (timeout, lock_timeout, permission, …).",
           runbook=runbook),
        ts("Check duration", (q(m.sel("check_duration_seconds"), per_check),), unit="s",
           what="Wall time of each check's last run (its timeout is in queries.yaml).",
           runbook=runbook),
        ts("Series per check", (q(m.sel("check_series"), per_check),), unit="short",
           what="Series each check exports now (capped by max_series).", runbook=runbook),
        ts("Exporter CPU", (q(f"rate(process_cpu_seconds_total{{{m.scope}}}{RATE})", "cpu"),),
           unit="percentunit", width=12, what="CPU the exporter process uses (100 % = one core).",
           runbook=runbook),
        ts("Exporter memory", (q(f"process_resident_memory_bytes{{{m.scope}}}", "resident"),),
           unit="bytes", width=12, what="Resident memory of the exporter process.",
           runbook=runbook),
    )  # fmt: skip
    return Board(
        EXPORTER, "pg-runbook-exporter: self-health",
        "Can the runbook boards be trusted: does every check run, how long does it take, why "
        "does it fail, and what does the exporter cost?",
        (Row("Checks", checks),),
    )  # fmt: skip


def health_board(m: Metrics) -> Board:
    sessions = _sessions(m)
    return Board(
        HEALTH, "PostgreSQL runbook health",
        "Is the portal's PostgreSQL healthy right now? One tile per runbook check, coloured at "
        "exactly the alert thresholds; each tile links to its detail board.",
        (Row("Availability and connections", sessions[:4]),
         Row("Queries, transactions and locks", sessions[4:]),
         Row("Maintenance and capacity", _capacity(m)),
         Row("Backups and data integrity", _integrity(m))),
        refresh="30s", time_from="now-1h",
    )  # fmt: skip


def boards(config: Config, options: MixinOptions = DEFAULTS) -> tuple[Board, ...]:
    metrics = Metrics(config, options.matchers, options.node_matchers)
    return (
        health_board(metrics),
        *detail_boards(metrics),
        backups_board(metrics),
        exporter_board(metrics),
    )


def provisioning() -> dict[str, str]:
    dashboards = {
        "apiVersion": 1,
        "providers": [
            {
                "name": "pg-runbook-exporter",
                "orgId": 1,
                "folder": "PostgreSQL runbook",
                "folderUid": "pgrb",
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 60,
                "options": {"path": PROVISIONED_PATH, "foldersFromFilesStructure": False},
            }
        ],
    }
    datasources = {
        "apiVersion": 1,
        "datasources": [
            {
                # not "Prometheus": provisioning must not clash with an existing datasource
                "name": "pg-runbook Prometheus",
                "type": "prometheus",
                "uid": DATASOURCE_UID,
                "access": "proxy",
                "url": "http://localhost:9090",
                "editable": False,
                # timeInterval is Prometheus's scrape_interval: $__rate_interval is derived from it
                "jsonData": {"timeInterval": "15s", "httpMethod": "POST"},
            }
        ],
    }
    header = (
        "# Generated by `pg-runbook-exporter generate` from queries.yaml; edit the generator.\n"
    )
    return {
        "provisioning/dashboards/pg-runbook.yaml": header
        + f"# Copy dashboards/*.json to {PROVISIONED_PATH}.\n"
        + yaml.safe_dump(dashboards, sort_keys=False),
        "provisioning/datasources/pg-runbook-prometheus.yaml": header
        + "# Point url at your Prometheus and timeInterval at its scrape_interval. The boards\n"
        + "# select it by uid through their datasource variable; it is not made the default.\n"
        + yaml.safe_dump(datasources, sort_keys=False),
    }


def dashboards_markdown(config: Config, options: MixinOptions = DEFAULTS) -> str:
    """The boards, what each answers, and their rows and panels, for the README."""
    lines = []
    for board in boards(config, options):
        lines.append(
            f"- **{board.title}** ([`dashboards/{board.uid}.json`](dashboards/{board.uid}.json), "
            f"uid `{board.uid}`): {board.answers}"
        )
        for row in board.rows:
            titles = ", ".join(panel.title for panel in row.panels)
            lines.append(f"  - {row.title}: {titles}.")
    lines.append(
        "- Provisioning: `dashboards/provisioning/dashboards/pg-runbook.yaml` (boards read from "
        f"`{PROVISIONED_PATH}`) and `dashboards/provisioning/datasources/"
        f"pg-runbook-prometheus.yaml` (a Prometheus datasource, uid `{DATASOURCE_UID}`); copy "
        "both directories into `/etc/grafana/provisioning/`."
    )
    return "\n".join(lines) + "\n"


def generate(config: Config, options: MixinOptions = DEFAULTS) -> dict[str, str]:
    """Every file under ``dashboards/``: relative path → content."""
    metrics = Metrics(config, options.matchers, options.node_matchers)
    files = {
        f"{board.uid}.json": json.dumps(
            render_board(board, metrics, tags=[TAG, "postgresql"]), indent=2, ensure_ascii=False,
        ) + "\n"
        for board in boards(config, options)
    }  # fmt: skip
    files.update(provisioning())
    return files
