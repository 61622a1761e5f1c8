"""The detail boards behind the runbook-health tiles, one board per group of runbook chapters.

Panels here show history (time series) and the current top-N (tables, bar gauges). Counters are
only shown through ``rate``/``increase`` over ``$__rate_interval``; the lines drawn on graphs are
the alert thresholds from ``settings``, in the colour of the alert's severity. A panel that is
empty on a healthy database says so (``empty``); the end-to-end test seeds the fault that fills it.
"""

from __future__ import annotations

from pg_runbook_exporter.mixin.dashcapacity import maintenance_rows, volume_rows
from pg_runbook_exporter.mixin.dashpanels import (
    ANY,
    CRIT,
    INFO,
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
    stat,
    table,
    timeseries,
)

CONNECTIONS = "pgrb-connections"
MAINTENANCE = "pgrb-maintenance"
STORAGE = "pgrb-storage"
STATEMENTS = "pgrb-statements"
INTEGRITY = "pgrb-integrity"
TABLE = "{{schemaname}}.{{relname}}"
STATEMENT = "{{queryid}} ({{datname}}, {{rolname}})"
# The alert the "archiving off" states of the storage board and the front tile stand for.
ARCHIVING_OFF = "PostgresWalArchivingDisabled"
CHECKSUMS_OFF = "PostgresDataChecksumsDisabled"


def dead_ratio(m: Metrics) -> str:
    """Dead-row ratio of tables with at least dead_ratio_min_rows rows: the bloat alert's floor."""
    rows = f"{m.sel('table_live_rows')} + {m.sel('table_dead_rows')}"
    floor = f"{rows} >= {m.number('dead_ratio_min_rows')}"
    # the remainder row (other.other) sums many small tables, as the alert leaves it out
    remainder = m.sel("table_dead_ratio", 'schemaname="other"', 'relname="other"')
    on = "on(instance, job, schemaname, relname)"
    return f"{m.sel('table_dead_ratio')} unless {on} {remainder} and {on} {floor}"


def connections_board(m: Metrics) -> Board:
    q, ts = Query, timeseries
    pools = m.sel("application_instance_connections", 'application_name!="other"')
    instance = "{{application_name}} @ {{client_addr}}"
    pool = (OK, m.step(WARN, "app_pool_size"))
    usage = (OK, m.step(WARN, "connections_usage_warning_ratio"),
             m.step(CRIT, "connections_usage_critical_ratio"))  # fmt: skip
    slots = (
        ts("Connection slots used", (q(m.sel("connections_usage_ratio"), "used"),),
           unit="percentunit", steps=usage, alerts=("PostgresConnectionsHigh",),
           what="Client connections over the slots ordinary roles can use.",
           runbook='"Connection Pool Monitoring"'),
        ts("Client connections and slots",
           (q(f"sum({m.sel('connections')})", "client connections"),
            q(m.sel("connections_usable"), "usable slots"),
            q(m.sel("max_connections"), "max_connections")), unit="short",
           what="Client connections against usable slots (max_connections minus the reserved).",
           runbook='"Connection Pool Monitoring"'),
        ts("Client connections by state",
           (q(f"sum by (state) ({m.sel('connections', db=True)})", "{{state}}"),), unit="short",
           stacked=True, what="Client connections of the selected databases by state.",
           runbook='"Check Active Connections" › "Connections by state"'),
        ts("Client connections by database",
           (q(f"sum by (datname) ({m.sel('connections', db=True)})", "{{datname}}"),),
           unit="short", stacked=True, what="Client connections per database.",
           runbook='"Check Active Connections" › "Current connection count"'),
    )  # fmt: skip
    apps = (
        ts("Connections by application",
           (q(m.sel("application_connections"), "{{application_name}}"),), unit="short",
           stacked=True, width=8, what="Client connections per application_name (the top "
           f"{m.number('top_n_applications')}; the rest as \"other\").",
           runbook='"Check Active Connections" › "Connections by application"'),
        ts("Connections per app instance against the pool size",
           (q(pools, instance), q(f"max({m.sel('app_pool_size')})", "pool size")),
           unit="short", steps=pool, width=8, alerts=("PortalAppPoolSaturated",),
           what="Connections of each app instance (application_name, client address) against "
                "the Prisma pool size of one instance (pgrb_app_pool_size): an instance at the "
                "line queues its requests for pool_timeout.",
           runbook='"Prisma Connection Pool Settings"'),
        Panel("bargauge", "Pool use per app instance (now)",
              "Connections of each app instance now; a full bar is the pool size "
              f"(app_pool_size = {m.number('app_pool_size')}).", '"Connection Pool Monitoring"',
              "short", (q(pools, instance, instant=True),), width=8, steps=pool,
              max_value=m.setting("app_pool_size"), mirrors=("PortalAppPoolSaturated",)),
    )  # fmt: skip
    idle = (OK, m.step(WARN, "idle_in_transaction_warning_seconds"),
            m.step(CRIT, "idle_in_transaction_critical_seconds"))  # fmt: skip
    runbook = '"Long-running queries (>5 minutes)"'
    activity = (
        ts("Long-running queries by kind", (q(m.sel("long_running_queries"), "{{kind}}"),),
           unit="short", width=8, runbook=runbook,
           what=f"Active queries older than {m.number('long_running_query_seconds')} s "
                "(long_running_query_seconds) by kind: client, autovacuum, maintenance tools."),
        ts("Oldest active query by kind",
           (q(ago(m, "oldest_query_start_timestamp_seconds"), "{{kind}}"),), unit="s",
           steps=(OK, m.step(WARN, "long_running_query_seconds")), width=8, runbook=runbook,
           alerts=("PostgresLongRunningQuery",), empty="no query is running",
           what="Age of the oldest active query of each kind (the alert watches kind client)."),
        ts("Oldest open transaction by kind",
           (q(ago(m, "oldest_transaction_start_timestamp_seconds"), "{{kind}}"),), unit="s",
           width=8, what="Age of the oldest open transaction of each kind (holds back vacuum).",
           runbook=runbook, empty="no transaction is open"),
        ts("Sessions idle in transaction",
           (q(m.sel("idle_in_transaction_sessions", db=True), "{{datname}}"),), unit="short",
           what="Client sessions idle inside an open transaction, by database.",
           runbook='"Kill Stuck Connections"'),
        ts("Longest idle in transaction",
           (q(ago(m, "oldest_idle_in_transaction_timestamp_seconds", db=True), "{{datname}}"),),
           unit="s", steps=idle, alerts=("PostgresIdleInTransaction",),
           what="How long the oldest idle-in-transaction session of each database has been idle.",
           runbook='"Kill Stuck Connections"', empty="no session is idle in a transaction"),
    )  # fmt: skip
    locks = (
        ts("Sessions waiting for locks",
           (q(m.sel("lock_waiting_sessions"), "waiting"), q(m.sel("blocked_sessions"), "blocked"),
            q(m.sel("blocking_sessions"), "blocking")), unit="short", width=8,
           alerts=("PostgresSessionsBlocked",),
           what="Sessions waiting for a heavyweight lock, those another session blocks, and the "
                "distinct blockers.", runbook='"Lock Monitoring"'),
        ts("Longest lock wait", (q(ago(m, "oldest_lock_wait_start_timestamp_seconds"), "wait"),),
           unit="s", steps=(OK, m.step(WARN, "lock_wait_warning_seconds")), width=8,
           what="How long the longest-waiting lock request has waited.",
           runbook='"Lock Monitoring"',
           alerts=("PostgresLockWait",), empty="no session waits for a lock"),
        ts("Lock requests not granted by mode",
           (q(m.sel("locks_not_granted"), "{{mode}}"),), unit="short", stacked=True, width=8,
           what="pg_locks rows not granted, by lock mode.", runbook='"Lock Monitoring"'),
    )  # fmt: skip
    return Board(
        CONNECTIONS, "PostgreSQL runbook: connections, activity and locks",
        "Who holds the connection slots, is an app instance at its pool limit, which queries and "
        "transactions run long, and who waits for whose locks?",
        (Row("Connection slots", slots), Row("Applications and the Prisma pool", apps),
         Row("Activity and long-running queries", activity), Row("Locks", locks)),
    )  # fmt: skip


def maintenance_board(m: Metrics) -> Board:
    q, ts = Query, timeseries
    stale = (OK, m.step(WARN, "vacuum_max_age_seconds"))
    xid = (OK, m.step(WARN, "xid_age_warning"), m.step(CRIT, "xid_age_critical"))
    floor = m.number("dead_ratio_min_rows")
    bloat = (
        ts(f"Dead-row ratio (tables of {floor}+ rows)", (q(dead_ratio(m), TABLE),),
           unit="percentunit", steps=(OK, m.step(WARN, "dead_ratio_warning")),
           what="n_dead_tup / (n_live_tup + n_dead_tup) of the tables large enough for the "
                "bloat alert (dead_ratio_min_rows).", runbook='"Check Table Bloat"',
           alerts=("PostgresTableDeadRows",), empty=f"no tracked table has {floor} rows or more"),
        ts("Dead rows", (q(m.sel("table_dead_rows"), TABLE),), unit="short",
           what=f"Estimated dead rows of the {m.number('top_n_tables')} tables with the most.",
           runbook='"Check Table Bloat"'),
        table("Tables with the most dead rows (now)",
               (m.sel("table_dead_rows"), m.sel("table_live_rows"), m.sel("table_dead_ratio"),
                ago(m, "table_last_vacuum_timestamp_seconds"),
                ago(m, "table_last_analyze_timestamp_seconds")),
               ("dead rows", "live rows", "dead ratio", "since vacuum", "since analyze"),
               units=(("dead ratio", "percentunit"), ("since vacuum", "s"),
                      ("since analyze", "s")),
               what="Live and dead rows, dead ratio and time since the last vacuum and analyze "
                    "of each tracked table.", runbook='"Check Table Bloat"'),
    )  # fmt: skip
    vacuum = (
        ts("Time since last vacuum", (q(ago(m, "table_last_vacuum_timestamp_seconds"), TABLE),),
           unit="s", steps=stale, alerts=("PostgresTableNotVacuumed",),
           what="Time since each tracked table was last vacuumed, manually or by autovacuum (the "
                "alert counts tables with dead rows).", runbook='"VACUUM and ANALYZE"'),
        ts("Time since last analyze", (q(ago(m, "table_last_analyze_timestamp_seconds"), TABLE),),
           unit="s", steps=stale, alerts=("PostgresTableNotVacuumed",),
           what="Time since each tracked table was last analyzed (the alert counts tables with "
                "dead rows).", runbook='"VACUUM and ANALYZE"'),
    )  # fmt: skip
    indexes = (
        ts("Index scans per second",
           (q(f"rate({m.sel('index_scans_total')}{RATE})", "{{relname}}.{{indexrelname}}"),),
           unit="ops", width=16, what="Scans of the most-scanned indexes.",
           runbook='"Index Maintenance" › "Check index usage"'),
        stat("Unused indexes", q(m.sel("unused_indexes")), unit="none",
              steps=(OK, Step(INFO, ANY)), alerts=("PostgresUnusedIndexes",),
              what="Never-scanned indexes that back no constraint: candidates for removal.",
              runbook='"Index Maintenance" › "Find unused indexes"'),
        stat("Size of unused indexes", q(m.sel("unused_index_size_bytes")), unit="bytes",
              what="Disk space the unused indexes take.",
              runbook='"Index Maintenance" › "Find unused indexes"'),
    )  # fmt: skip
    runbook = '"PostgreSQL Maintenance" › "VACUUM and ANALYZE"'
    wraparound = (
        ts("Transaction ID age", (q(m.sel("database_xid_age"), "{{datname}}"),), unit="short",
           steps=xid, alerts=("PostgresXidWraparound",), runbook=runbook,
           what="age(datfrozenxid) of every database, templates included (wraps at 2^31)."),
        ts("MultiXact ID age", (q(m.sel("database_mxid_age"), "{{datname}}"),), unit="short",
           steps=xid, alerts=("PostgresXidWraparound",), runbook=runbook,
           what="mxid_age(datminmxid) of every database, templates included."),
    )  # fmt: skip
    return Board(
        MAINTENANCE, "PostgreSQL runbook: vacuum, bloat, indexes and wraparound",
        "Which tables carry dead rows, when were they last vacuumed and analyzed, which indexes "
        "are used or dead weight, and how far is each database from transaction-ID wraparound?",
        (*maintenance_rows(m)[:1], Row("Dead rows and bloat", bloat),
         Row("VACUUM and ANALYZE", vacuum), Row("Indexes", indexes), *maintenance_rows(m)[1:2],
         Row("Transaction ID wraparound", wraparound), *maintenance_rows(m)[2:]),
    )  # fmt: skip


def storage_board(m: Metrics) -> Board:
    q, ts = Query, timeseries
    enabled = m.sel("wal_archiving_enabled")
    # 1 on, 0 off (on a primary, or a server whose role is unknown), -1 off on a standby
    archiving_state = (f"{enabled} == 1 or ({enabled} - 1 and on(instance, job) "
                       f"{m.sel('in_recovery')} == 1) or {enabled}")  # fmt: skip
    sizes = m.sel("database_size_bytes", db=True)
    budget = (OK, m.step(WARN, "database_size_budget_bytes"))
    horizon = m.number("database_size_forecast_seconds")
    size = (
        ts("Database size", (q(sizes, "{{datname}}"),), unit="bytes", steps=budget, width=8,
           alerts=("PostgresDatabaseSizeForecast",),
           what="pg_database_size() of each selected database; the line is the budget (the "
                "alert watches the forecast).",
           runbook='"Database Size" › "Total database size"'),
        ts("Database size forecast",
           (q(f"predict_linear({sizes}[6h], {horizon})", "{{datname}}"),), unit="bytes",
           steps=budget, width=8, alerts=("PostgresDatabaseSizeForecast",),
           what="Size each database reaches database_size_forecast_seconds ahead at the growth "
                "rate of the last 6 hours.", runbook='"Database Size", "Disk Space Full"'),
        ts("Database growth per day", (q(f"deriv({sizes}[1h]) * 86400", "{{datname}}"),),
           unit="bytes", width=8, what="Growth trend: bytes per day, fitted over the last hour.",
           runbook='"Database Size"'),
        Panel("bargauge", "Largest tables (now)",
              "pg_total_relation_size() of the largest tables (table, TOAST and indexes); "
              "other.other is the rest, estimated.", '"Database Size" › "Size per table"',
              "bytes", (q(f"sort_desc({m.sel('table_size_bytes')})", TABLE, instant=True),),
              width=8, height=10, steps=(Step("blue"),)),
        ts("Table sizes", (q(m.sel("table_size_bytes"), TABLE),), unit="bytes", width=16,
           what="Size of the largest tables over time.",
           runbook='"Database Size" › "Size per table"'),
    )  # fmt: skip
    archive = (
        stat("WAL archiving", q(archiving_state), unit="none", alerts=(ARCHIVING_OFF,),
              mappings=(Mapping(1, "on", "green"), Mapping(0, "off", alert_colour(ARCHIVING_OFF)),
                        Mapping(-1, "off (standby)", "blue")),
              what="Does this server archive WAL (archive_mode and an archive_command or "
                   "library)? \"off (standby)\": a standby with archive_mode on, where only the "
                   "primary archives.",
              runbook='"Point-in-Time Recovery" (prerequisite: WAL archiving enabled)'),
        ts("Oldest WAL segment not archived",
           (q(ago(m, "wal_archive_oldest_ready_timestamp_seconds"), "oldest .ready"),),
           unit="s", steps=(OK, m.step(CRIT, "wal_archive_ready_max_age_seconds")), width=10,
           alerts=("PostgresWalArchiveBehind",),
           what="Age of the oldest WAL segment waiting for archive_command.",
           runbook='"Backup Procedures" (transaction log backup every 15 minutes)',
           empty="every finished WAL segment has been archived"),
        ts("WAL segments waiting", (q(m.sel("wal_archive_ready_segments"), ".ready files"),),
           unit="short", width=10, what="WAL segments waiting to be archived (.ready files).",
           runbook='"Backup Procedures"'),
        ts("WAL files archived and failed",
           (q(f"rate({m.sel('wal_archived_total')}{RATE})", "archived"),
            q(f"rate({m.sel('wal_archive_failures_total')}{RATE})", "failed")), unit="cps",
           width=8, alerts=("PostgresWalArchiveFailing",),
           what="Archive attempts per second, successful and failed (pg_stat_archiver).",
           runbook='"Backup Procedures"'),
        ts("Time since last archived WAL",
           (q(ago(m, "wal_archive_last_archived_timestamp_seconds"), "last archived"),),
           unit="s", width=8, what="Time since archive_command last succeeded.",
           runbook='"Point-in-Time Recovery"'),
        ts("Time since last archive failure",
           (q(ago(m, "wal_archive_last_failed_timestamp_seconds"), "last failure"),), unit="s",
           width=8, what="Time since archive_command last failed (the alert fires while it is "
           "more recent than the last success).", runbook='"Backup Procedures"',
           alerts=("PostgresWalArchiveFailing",),
           empty="no archive attempt failed since the statistics were reset"),
    )  # fmt: skip
    wal_budget = m.step(CRIT, "wal_directory_budget_bytes")
    disk = (
        ts("pg_wal size", (q(m.sel("wal_directory_size_bytes"), "pg_wal"),), unit="bytes",
           steps=(OK, wal_budget), alerts=("PostgresWalDirectoryOverBudget",),
           what="Total size of pg_wal; it grows when archiving fails or a slot holds WAL back.",
           runbook='"Disk Space Full" › "Clear transaction logs"'),
        ts("WAL retained by replication slots",
           (q(m.sel("replication_slot_retained_wal_bytes"),
              "{{slot_name}} ({{slot_type}})"),), unit="bytes",
           steps=(OK, m.step(WARN, "wal_directory_budget_bytes")),
           alerts=("PostgresReplicationSlotRetainingWal",),
           what="WAL each replication slot keeps from being removed.",
           runbook='"Disk Space Full"', empty="no replication slot reserves WAL"),
    )  # fmt: skip
    return Board(
        STORAGE, "PostgreSQL runbook: sizes, WAL and archiving",
        "How big are the databases and tables and how fast do they grow, is WAL archived in time "
        "for point-in-time recovery, and what fills pg_wal?",
        (*volume_rows(m)[:1], Row("Database and table sizes", size), Row("WAL archiving", archive),
         Row("pg_wal and replication slots", disk), *volume_rows(m)[1:]),
    )  # fmt: skip


def statements_board(m: Metrics) -> Board:
    q, ts = Query, timeseries
    mean = m.sel("statement_mean_seconds", db=True)

    def per_second(metric: str) -> str:
        return f"rate({m.sel(metric, db=True)}{RATE})"

    runbook = '"Query Performance" › "Slowest queries"'
    panels = (
        table("Slowest statements (now)",
               (f"sort_desc({mean})", per_second("statement_calls_total"),
                per_second("statement_exec_seconds_total")),
               ("mean time", "calls", "busy backends"),
               units=(("mean time", "s"), ("calls", "ops")), runbook=runbook,
               what=f"The {m.number('top_n_statements')} statements with the highest mean "
                    "execution time, their calls per second and busy backends (execution seconds "
                    "per second). No query text: look queryid up in pg_stat_statements."),
        ts("Mean execution time", (q(mean, STATEMENT),), unit="s",
           what="Mean execution time of the slowest statements.", runbook=runbook),
        ts("Calls per second", (q(per_second("statement_calls_total"), STATEMENT),), unit="ops",
           what="Executions per second of the slowest statements.", runbook=runbook),
        ts("Busy backends", (q(per_second("statement_exec_seconds_total"), STATEMENT),),
           unit="short", what="Execution seconds per second: how many backends each statement "
           "keeps busy on average.", runbook=runbook),
        ts("Block read time per second",
           (q(per_second("statement_blk_read_seconds_total"), STATEMENT),), unit="short",
           what="Seconds per second spent reading data blocks (0 unless track_io_timing is on).",
           runbook=runbook),
    )  # fmt: skip
    return Board(
        STATEMENTS, "PostgreSQL runbook: query performance",
        "Which statements are slowest on average, how often do they run, and how much of the "
        "server's time do they take?",
        (Row("Slowest statements (pg_stat_statements)", panels),),
    )  # fmt: skip


def integrity_board(m: Metrics) -> Board:
    q, ts = Query, timeseries
    warn, crit = (OK, Step(WARN, ANY)), (OK, Step(CRIT, ANY))
    duplicates = '"ID Mappings Data Integrity" › "Check for duplicate … mappings"'
    mappings = (
        ts("Orphaned mappings", (q(m.sel("id_mappings_orphaned"), "orphaned"),), unit="short",
           steps=warn, alerts=("PortalIdMappingsOrphaned",), width=8,
           what="id_mappings rows whose portal user no longer exists (counts only, no ids).",
           runbook='"ID Mappings Data Integrity" › "Check for orphaned mappings"'),
        ts("Duplicated ids",
           (q(m.sel("id_mappings_duplicate_whmcs_ids"), "WHMCS ids"),
            q(m.sel("id_mappings_duplicate_sf_ids"), "Salesforce ids")), unit="short", width=8,
           what="WHMCS client ids and Salesforce account ids mapped by more than one row.",
           runbook=duplicates),
        ts("Rows carrying duplicated ids",
           (q(m.sel("id_mappings_duplicate_whmcs_rows"), "WHMCS"),
            q(m.sel("id_mappings_duplicate_sf_rows"), "Salesforce")), unit="short", width=8,
           steps=warn, alerts=("PortalIdMappingsDuplicated",), runbook=duplicates,
           what="Rows to investigate before fixing anything (\"Fix Duplicate Mappings\")."),
    )  # fmt: skip
    migrations = (
        ts("Failed and unfinished migrations",
           (q(m.sel("prisma_migrations_failed"), "failed"),
            q(m.sel("prisma_migrations_unfinished"), "unfinished")), unit="short",
           steps=crit, alerts=("PrismaMigrationFailed",), width=8,
           what="Failed migrations (not rolled back) and migrations started but not finished.",
           runbook='"Migration Management" › "Rollback Procedure"'),
        ts("Unfinished migration running for",
           (q(ago(m, "prisma_migration_oldest_unfinished_start_timestamp_seconds"), "oldest"),),
           unit="s", width=8, steps=(OK, m.step(WARN, "prisma_migration_max_duration_seconds")),
           alerts=("PrismaMigrationUnfinished",),
           what="Time since the oldest unfinished migration started.",
           runbook='"Migration Management" › "Estimate migration duration"',
           empty="no migration is unfinished"),
        ts("Applied migrations", (q(m.sel("prisma_migrations_applied"), "applied"),),
           unit="short", width=8, what="Migrations applied and not rolled back.",
           runbook='"Migration Management" › "View migration status"'),
    )  # fmt: skip
    corruption = (
        stat("Data checksums", q(m.sel("data_checksums_enabled")), unit="none", width=6,
              alerts=(CHECKSUMS_OFF,),
              mappings=(Mapping(1, "on", "green"), Mapping(0, "off", alert_colour(CHECKSUMS_OFF))),
              what="Can the cluster detect corrupted pages at all (initdb --data-checksums, or "
                   "pg_checksums --enable on the stopped cluster)?",
              runbook='"Corruption Detected"'),
        ts("New checksum failures",
           (q(f"sum by (datname) (increase({m.sel('checksum_failures_total')}{RATE}))",
              "{{datname}}"),), unit="short", steps=crit, alerts=("PostgresChecksumFailures",),
           width=18, runbook='"Corruption Detected"',
           what="Data-page checksum failures found per database (\"\" = shared catalogs): stop "
                "the application and restore from a verified backup.",
           empty="data checksums are off, so failures cannot be counted"),
    )  # fmt: skip
    return Board(
        INTEGRITY, "PostgreSQL runbook: data integrity and migrations",
        "Are portal users mapped exactly once to WHMCS and Salesforce, did a Prisma migration "
        "fail or hang, and has PostgreSQL seen corrupted pages?",
        (Row("ID mappings", mappings), Row("Prisma migrations", migrations),
         Row("Corruption", corruption)),
    )  # fmt: skip


def detail_boards(m: Metrics) -> tuple[Board, ...]:
    return (
        connections_board(m),
        maintenance_board(m),
        storage_board(m),
        statements_board(m),
        integrity_board(m),
    )
