"""The alert rules, one entry per rule: expression, severity, threshold and annotations.

Numbers are never written here: ``%(setting)s`` placeholders are filled from queries.yaml's
``settings`` by pg_runbook_exporter/mixin/alertgen.py, which renders this table into alerts/.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["critical", "warning", "info"]

JOB = "pg-runbook-exporter"
RULES_FILE = "pg-runbook-exporter.rules.yml"
# Placeholders a deployment overrides: where the playbooks (docs/alerts/) and the board live.
DEFAULT_RUNBOOK_BASE_URL = "https://runbooks.example.com/pg-runbook-exporter/alerts/"
DEFAULT_DASHBOARD_BASE_URL = "https://grafana.example.com/d/"  # Grafana's /d/ prefix; + board uid
# How far back "new" orphans or duplicates are compared: a fault older than this is standing.
NEW_FAULT_WINDOW = "30m"


@dataclass(frozen=True)
class AlertRule:
    name: str
    severity: Severity
    group: str
    expr: str
    for_: str
    threshold: str  # for people, with %(setting:fmt)s placeholders
    summary: str
    description: str
    runbook_section: str
    dashboard: str = ""  # uid of the board in dashboards/ (default: the group's board)
    dashboard_vars: tuple[str, ...] = ()  # labels passed besides job and instance, as var-<label>


def _rule(name: str, severity: Severity, group: str, **fields: Any) -> AlertRule:
    fields.setdefault("dashboard", _BOARDS[group])
    return AlertRule(name=name, severity=severity, group=group, **fields)


_AVAIL, _CONN, _MAINT = "availability", "connections", "maintenance"
_WAL, _INTEG = "wal", "integrity"
# The board of dashboards/ that shows what each group of alerts is about.
_BOARDS = {
    _AVAIL: "pgrb-exporter",
    _CONN: "pgrb-connections",
    _MAINT: "pgrb-maintenance",
    _WAL: "pgrb-storage",
    _INTEG: "pgrb-integrity",
}
_UNRESPONSIVE = 'Emergency Procedures › "Database Unresponsive"'
_KILL = 'Connection Pool Monitoring › "Kill Stuck Connections"'
_BACKUP = 'Backup Procedures; Recovery Procedures › "Point-in-Time Recovery"'
_INTEGRITY = 'ID Mappings Data Integrity › "Verify Mapping Integrity"'

_CONN_EXPR = "pgrb_connections_usage_ratio >= %(@)s"
_CONN_DESC = (
    "{{ $value | humanizePercentage }} of the usable connection slots on {{ $labels.instance }} "
    "are taken by client connections (threshold %(@:percent)s). New connections fail "
    'with "too many clients" once all are used.'
)
_IDLE_EXPR = "time() - pgrb_oldest_idle_in_transaction_timestamp_seconds > %(@)s"
_IDLE_DESC = (
    "A session in database {{ $labels.datname }} on {{ $labels.instance }} has been idle inside an "
    "open transaction for {{ $value | humanizeDuration }} (threshold %(@:duration)s): "
    "it holds its locks and keeps VACUUM from removing dead rows."
)
_XID_EXPR = (
    'label_replace(pgrb_database_xid_age, "age", "xid", "", "") > %(@)s\n'
    'or label_replace(pgrb_database_mxid_age, "age", "multixact", "", "") > %(@)s'
)
_XID_DESC = (
    "The {{ $labels.age }} age of database {{ $labels.datname }} on {{ $labels.instance }} is "
    "{{ $value | humanize }} (threshold %(@:count)s; PostgreSQL stops accepting "
    "writes near 2.1 billion)."
)
_DUP = "pgrb_id_mappings_duplicate_{}_rows"
_DUP_NEW = (
    "label_replace({0} > min_over_time({0}[" + NEW_FAULT_WINDOW + ']), "system", "{1}", "", "")'
)
_DUP_ANY = 'label_replace({0} > 0, "system", "{1}", "", "")'

# One rule per entry, name/severity/group on the first line: kept compact for reading as a table.
# fmt: off
RULES: tuple[AlertRule, ...] = (
    _rule(
        "PgRunbookExporterDown", "critical", _AVAIL,
        expr=f'up{{job="{JOB}"}} == 0', for_="2m", threshold="scrape fails",
        summary="Prometheus cannot scrape pg-runbook-exporter {{ $labels.instance }}",
        description="The exporter target {{ $labels.instance }} (job {{ $labels.job }}) is down: "
        "no PostgreSQL alert for this database can fire until it is back.",
        runbook_section=_UNRESPONSIVE,
    ),
    _rule(
        "PgRunbookExporterAbsent", "critical", _AVAIL,
        expr=f'absent(up{{job="{JOB}"}})', for_="5m", threshold=f"no `up{{job=\"{JOB}\"}}`",
        summary="No pg-runbook-exporter target is scraped",
        description=f"Prometheus has no target in job {JOB}: the database is not monitored at all "
        "(service discovery or scrape configuration changed).",
        runbook_section=_UNRESPONSIVE,
    ),
    _rule(
        "PostgresDown", "critical", _AVAIL,
        expr="pgrb_up == 0", for_="1m", threshold="`pgrb_up == 0`",
        summary="PostgreSQL behind {{ $labels.instance }} does not answer",
        description="The exporter {{ $labels.instance }} cannot connect to or query its database "
        "(pgrb_up = 0). The portal cannot serve logins or account data while this lasts.",
        runbook_section=_UNRESPONSIVE, dashboard="pgrb-health",
    ),
    _rule(
        "PgRunbookCheckFailing", "warning", _AVAIL,
        expr="pgrb_check_success == 0", for_="10m", threshold="last run failed",
        summary="Check {{ $labels.check }} fails on {{ $labels.instance }}",
        description="The exporter's check {{ $labels.check }} on {{ $labels.instance }} keeps "
        "failing; its metrics, and every alert built on them, go silent once they are stale. "
        "pgrb_check_errors_total{check=\"{{ $labels.check }}\"} gives the reason.",
        runbook_section="Monitoring Queries",
    ),
    _rule(
        "PgRunbookCheckStale", "warning", _AVAIL,
        expr="time() - pgrb_check_last_success_timestamp_seconds\n"
        "  > %(check_stale_intervals)s * pgrb_check_interval_seconds",
        for_="1m", threshold="last success > %(check_stale_intervals)s intervals ago",
        summary="Check {{ $labels.check }} has not succeeded for {{ $value | humanizeDuration }}",
        description="The last successful run of check {{ $labels.check }} on "
        "{{ $labels.instance }} was {{ $value | humanizeDuration }} ago, more than "
        "%(check_stale_intervals)s intervals: alerts built on it cannot fire.",
        runbook_section="Monitoring Queries",
    ),
    _rule(
        "PgRunbookCheckSkipped", "warning", _AVAIL,
        expr='pgrb_check_skipped{reason="relation"} == 1', for_="15m",
        threshold="tables missing",
        summary="Check {{ $labels.check }} cannot find its tables on {{ $labels.instance }}",
        description="Check {{ $labels.check }} is skipped on {{ $labels.instance }} because its "
        "tables do not exist there: the exporter probably watches the wrong database, and the "
        "alerts of that check can never fire.",
        runbook_section=_INTEGRITY,
    ),
    _rule(
        "PgRunbookRoleLacksPgMonitor", "warning", _AVAIL,
        expr="pgrb_role_in_pg_monitor == 0", for_="15m", threshold="role not in pg_monitor",
        summary="The exporter's role on {{ $labels.instance }} is not a member of pg_monitor",
        description="The exporter {{ $labels.instance }} connects as a role outside pg_monitor: "
        "other roles' sessions show no state or query, so the idle-in-transaction, long-query "
        "and connection alerts cannot fire, and the WAL and statement checks fail.",
        runbook_section="Monitoring Queries",
    ),
    _rule(
        "PgRunbookCheckTruncated", "warning", _AVAIL,
        expr="pgrb_check_truncated == 1", for_="15m", threshold="rows > max_series",
        summary="Check {{ $labels.check }} drops rows on {{ $labels.instance }}",
        description="Check {{ $labels.check }} on {{ $labels.instance }} returned more rows than "
        "its max_series and exports only the first ones: the alerts on the missing series "
        "cannot fire.",
        runbook_section="Monitoring Queries",
    ),
    _rule(
        "PostgresConnectionsHigh", "warning", _CONN,
        expr=_CONN_EXPR.replace("@", "connections_usage_warning_ratio"), for_="5m",
        threshold="usage ≥ %(connections_usage_warning_ratio:percent)s",
        summary="Connection slots {{ $value | humanizePercentage }} used on {{ $labels.instance }}",
        description=_CONN_DESC.replace("@", "connections_usage_warning_ratio"),
        runbook_section='Connection Pool Monitoring › "Check Active Connections"',
    ),
    _rule(
        "PostgresConnectionsHigh", "critical", _CONN,
        expr=_CONN_EXPR.replace("@", "connections_usage_critical_ratio"), for_="2m",
        threshold="usage ≥ %(connections_usage_critical_ratio:percent)s",
        summary="Connection slots {{ $value | humanizePercentage }} used on {{ $labels.instance }}",
        description=_CONN_DESC.replace("@", "connections_usage_critical_ratio"),
        runbook_section='Connection Pool Monitoring › "Check Active Connections"',
    ),
    _rule(
        "PortalAppPoolSaturated", "warning", _CONN,
        expr='pgrb_application_instance_connections{application_name!="other"}\n'
        "  >= %(app_pool_size)s",
        for_="5m", threshold="connections ≥ %(app_pool_size:count)s (app_pool_size)",
        summary="{{ $labels.application_name }} at {{ $labels.client_addr }} uses its whole pool",
        description="Application {{ $labels.application_name }} from {{ $labels.client_addr }} "
        "holds {{ $value }} connections on {{ $labels.instance }}, at or above the Prisma pool "
        "size of %(app_pool_size)s: its requests wait for a connection (pool_timeout).",
        runbook_section='Connection Pool Monitoring › "Prisma Connection Pool Settings"',
    ),
    _rule(
        "PostgresIdleInTransaction", "warning", _CONN,
        expr=_IDLE_EXPR.replace("@", "idle_in_transaction_warning_seconds"), for_="1m",
        threshold="idle in transaction > %(idle_in_transaction_warning_seconds:duration)s",
        summary="Session idle in transaction for {{ $value | humanizeDuration }} in "
        "{{ $labels.datname }}",
        description=_IDLE_DESC.replace("@", "idle_in_transaction_warning_seconds"),
        runbook_section=_KILL, dashboard_vars=("datname",),
    ),
    _rule(
        "PostgresIdleInTransaction", "critical", _CONN,
        expr=_IDLE_EXPR.replace("@", "idle_in_transaction_critical_seconds"), for_="1m",
        threshold="idle in transaction > %(idle_in_transaction_critical_seconds:duration)s",
        summary="Session idle in transaction for {{ $value | humanizeDuration }} in "
        "{{ $labels.datname }}",
        description=_IDLE_DESC.replace("@", "idle_in_transaction_critical_seconds"),
        runbook_section=_KILL, dashboard_vars=("datname",),
    ),
    _rule(
        "PostgresLongRunningQuery", "warning", _CONN,
        expr='time() - pgrb_oldest_query_start_timestamp_seconds{kind="client"}\n'
        "  > %(long_running_query_seconds)s",
        for_="1m", threshold="client query > %(long_running_query_seconds:duration)s",
        summary="A client query has run for {{ $value | humanizeDuration }} on "
        "{{ $labels.instance }}",
        description="The oldest active client query on {{ $labels.instance }} started "
        "{{ $value | humanizeDuration }} ago (runbook line: "
        "%(long_running_query_seconds:duration)s). Autovacuum and maintenance tools "
        "(maintenance_applications) are not counted.",
        runbook_section='Connection Pool Monitoring › "Long-running queries (>5 minutes)"',
    ),
    _rule(
        "PostgresLockWait", "warning", _CONN,
        expr="time() - pgrb_oldest_lock_wait_start_timestamp_seconds\n"
        "  > %(lock_wait_warning_seconds)s",
        for_="1m", threshold="lock wait > %(lock_wait_warning_seconds:duration)s",
        summary="A session has waited {{ $value | humanizeDuration }} for a lock on "
        "{{ $labels.instance }}",
        description="The longest lock wait on {{ $labels.instance }} is "
        "{{ $value | humanizeDuration }} (threshold %(lock_wait_warning_seconds:duration)s).",
        runbook_section='Monitoring Queries › "Lock Monitoring"',
    ),
    _rule(
        "PostgresSessionsBlocked", "warning", _CONN,
        expr="pgrb_blocked_sessions > 0", for_="%(lock_wait_warning_seconds:for)s",
        threshold="blocked sessions > 0 for %(lock_wait_warning_seconds:duration)s",
        summary="{{ $value }} sessions blocked by others on {{ $labels.instance }}",
        description="{{ $value }} sessions on {{ $labels.instance }} have been blocked by other "
        "sessions for %(lock_wait_warning_seconds:duration)s without a break, possibly a convoy "
        "of short waits behind one lock holder.",
        runbook_section='Monitoring Queries › "Lock Monitoring"',
    ),
    _rule(
        "PostgresTableDeadRows", "warning", _MAINT,
        # the remainder row (other.other) sums many small tables: it names no table to vacuum
        expr="pgrb_table_dead_ratio >= %(dead_ratio_warning)s\n"
        "unless on(instance, job, schemaname, relname)\n"
        '  pgrb_table_dead_ratio{schemaname="other", relname="other"}\n'
        "and on(instance, job, schemaname, relname)\n"
        "  pgrb_table_live_rows + pgrb_table_dead_rows >= %(dead_ratio_min_rows)s",
        for_="15m",
        threshold="dead ratio ≥ %(dead_ratio_warning:percent)s, "
        "≥ %(dead_ratio_min_rows:count)s rows",
        summary="{{ $labels.schemaname }}.{{ $labels.relname }} is "
        "{{ $value | humanizePercentage }} dead rows",
        description="Table {{ $labels.schemaname }}.{{ $labels.relname }} on "
        "{{ $labels.instance }} has {{ $value | humanizePercentage }} dead rows (threshold "
        "%(dead_ratio_warning:percent)s on tables of %(dead_ratio_min_rows:count)s rows or more).",
        runbook_section='PostgreSQL Maintenance › "Check Table Bloat"',
    ),
    _rule(
        "PostgresTableNotVacuumed", "warning", _MAINT,
        expr='(\n  label_replace(time() - pgrb_table_last_vacuum_timestamp_seconds, "operation", '
        '"vacuum", "", "")\n  or label_replace(time() - pgrb_table_last_analyze_timestamp_seconds, '
        '"operation", "analyze", "", "")\n) > %(vacuum_max_age_seconds)s\n'
        "and on(instance, job, schemaname, relname) pgrb_table_dead_rows > 0",
        for_="15m",
        threshold="no vacuum/analyze for %(vacuum_max_age_seconds:duration)s, dead rows",
        summary="{{ $labels.schemaname }}.{{ $labels.relname }}: no {{ $labels.operation }} for "
        "{{ $value | humanizeDuration }}",
        description="Table {{ $labels.schemaname }}.{{ $labels.relname }} on "
        "{{ $labels.instance }} has dead rows and its last {{ $labels.operation }} (manual or "
        "auto) was {{ $value | humanizeDuration }} ago; the runbook schedules VACUUM ANALYZE "
        "daily.",
        runbook_section='PostgreSQL Maintenance › "VACUUM and ANALYZE"',
    ),
    _rule(
        "PostgresUnusedIndexes", "info", _MAINT,
        expr="pgrb_unused_indexes > 0", for_="1h", threshold="unused indexes > 0",
        summary="{{ $value }} indexes never scanned on {{ $labels.instance }}",
        description="{{ $value }} indexes on {{ $labels.instance }} have not been scanned since "
        "statistics were reset; they slow every write. Candidates for removal, after checking.",
        runbook_section='PostgreSQL Maintenance › "Index Maintenance"',
    ),
    _rule(
        "PostgresWalArchiveBehind", "critical", _WAL,
        expr="time() - pgrb_wal_archive_oldest_ready_timestamp_seconds\n"
        "  > %(wal_archive_ready_max_age_seconds)s",
        for_="2m", threshold="oldest .ready > %(wal_archive_ready_max_age_seconds:duration)s",
        summary="WAL waits {{ $value | humanizeDuration }} to be archived on "
        "{{ $labels.instance }}",
        description="The oldest WAL segment waiting for archiving on {{ $labels.instance }} has "
        "waited {{ $value | humanizeDuration }} (threshold "
        "%(wal_archive_ready_max_age_seconds:duration)s): point-in-time recovery can no longer "
        "reach the present, and pg_wal grows.",
        runbook_section=_BACKUP,
    ),
    _rule(
        "PostgresWalArchiveFailing", "warning", _WAL,
        expr="(\n  time() - pgrb_wal_archive_last_failed_timestamp_seconds\n"
        "    < time() - pgrb_wal_archive_last_archived_timestamp_seconds\n"
        "  or time() - pgrb_wal_archive_last_failed_timestamp_seconds\n"
        "    unless pgrb_wal_archive_last_archived_timestamp_seconds\n"
        ")\nand pgrb_wal_archiving_enabled == 1",
        for_="10m", threshold="last failure newer than last success",
        summary="WAL archiving fails on {{ $labels.instance }}",
        description="The last WAL archive attempt on {{ $labels.instance }} failed "
        "{{ $value | humanizeDuration }} ago and nothing has been archived since.",
        runbook_section=_BACKUP,
    ),
    _rule(
        "PostgresWalArchivingDisabled", "warning", _WAL,
        # a standby archives only with archive_mode=always: its 0 is normal, not a lost backup
        expr="pgrb_wal_archiving_enabled == 0\nand on(instance, job) pgrb_in_recovery == 0",
        for_="15m", threshold="archiving off on a primary",
        summary="WAL archiving is off on primary {{ $labels.instance }}",
        description="The primary behind {{ $labels.instance }} does not archive WAL (archive_mode "
        "off, or neither archive_command nor archive_library set): the runbook's 15-minute "
        "transaction log backups are not taken, and point-in-time recovery can reach no further "
        "than the last base backup.",
        runbook_section=_BACKUP,
    ),
    _rule(
        "PostgresWalDirectoryOverBudget", "critical", _WAL,
        expr="pgrb_wal_directory_size_bytes > %(wal_directory_budget_bytes)s", for_="5m",
        threshold="pg_wal > %(wal_directory_budget_bytes:bytes)s",
        summary="pg_wal is {{ $value | humanize1024 }}B on {{ $labels.instance }}",
        description="pg_wal on {{ $labels.instance }} holds {{ $value | humanize1024 }}B, over its "
        "budget of %(wal_directory_budget_bytes:bytes)s: the disk fills.",
        runbook_section='Emergency Procedures › "Disk Space Full"',
    ),
    _rule(
        "PostgresReplicationSlotRetainingWal", "warning", _WAL,
        expr="pgrb_replication_slot_retained_wal_bytes > %(wal_directory_budget_bytes)s",
        for_="5m", threshold="slot retains > %(wal_directory_budget_bytes:bytes)s",
        summary="Slot {{ $labels.slot_name }} retains {{ $value | humanize1024 }}B of WAL",
        description="Replication slot {{ $labels.slot_name }} ({{ $labels.slot_type }}) on "
        "{{ $labels.instance }} keeps {{ $value | humanize1024 }}B of WAL from being removed, "
        "over the pg_wal budget of %(wal_directory_budget_bytes:bytes)s.",
        runbook_section='Emergency Procedures › "Disk Space Full"',
    ),
    _rule(
        "PostgresDatabaseSizeForecast", "warning", _WAL,
        expr="predict_linear(pgrb_database_size_bytes[6h], %(database_size_forecast_seconds)s)\n"
        "  > %(database_size_budget_bytes)s",
        for_="30m",
        threshold="size in %(database_size_forecast_seconds:duration)s > "
        "%(database_size_budget_bytes:bytes)s",
        summary="Database {{ $labels.datname }} will outgrow its budget within "
        "%(database_size_forecast_seconds:duration)s",
        description="At the growth rate of the last 6 hours, database {{ $labels.datname }} on "
        "{{ $labels.instance }} reaches {{ $value | humanize1024 }}B within "
        "%(database_size_forecast_seconds:duration)s, over its budget of "
        "%(database_size_budget_bytes:bytes)s.",
        runbook_section='Monitoring Queries › "Database Size"; Emergency Procedures › "Disk Space '
        'Full"', dashboard_vars=("datname",),
    ),
    _rule(
        # Any recorded failure pages: a counter that only rose hours ago is still corruption
        # nobody has handled, and a warning tier would only duplicate the same page.
        "PostgresChecksumFailures", "critical", _INTEG,
        expr="pgrb_checksum_failures_total > 0", for_="0m", threshold="failures recorded > 0",
        summary="Data checksum failures in {{ $labels.datname }} on {{ $labels.instance }}",
        description="{{ $value }} data-page checksum failures are recorded for database "
        "{{ $labels.datname }} (\"\" = shared catalogs) on {{ $labels.instance }} since its "
        "statistics were reset: storage is corrupting data.",
        runbook_section='Emergency Procedures › "Corruption Detected"', dashboard_vars=("datname",),
    ),
    _rule(
        # PostgreSQL 17 initdb leaves checksums off: without this, the rule above is blind forever.
        "PostgresDataChecksumsDisabled", "warning", _INTEG,
        expr="pgrb_data_checksums_enabled == 0", for_="1h", threshold="data checksums off",
        summary="Data checksums are off on {{ $labels.instance }}",
        description="The cluster behind {{ $labels.instance }} has no data checksums: corrupted "
        "data pages are read without error, and PostgresChecksumFailures can never fire.",
        runbook_section='Emergency Procedures › "Corruption Detected"',
    ),
    _rule(
        "PostgresXidWraparound", "warning", _INTEG,
        expr=_XID_EXPR.replace("@", "xid_age_warning"), for_="5m",
        threshold="age > %(xid_age_warning:count)s",
        summary="{{ $labels.datname }}: {{ $labels.age }} age {{ $value | humanize }}",
        description=_XID_DESC.replace("@", "xid_age_warning"),
        runbook_section='PostgreSQL Maintenance › "VACUUM and ANALYZE"',
        dashboard="pgrb-maintenance", dashboard_vars=("datname",),
    ),
    _rule(
        "PostgresXidWraparound", "critical", _INTEG,
        expr=_XID_EXPR.replace("@", "xid_age_critical"), for_="5m",
        threshold="age > %(xid_age_critical:count)s",
        summary="{{ $labels.datname }}: {{ $labels.age }} age {{ $value | humanize }}",
        description=_XID_DESC.replace("@", "xid_age_critical"),
        runbook_section='PostgreSQL Maintenance › "VACUUM and ANALYZE"',
        dashboard="pgrb-maintenance", dashboard_vars=("datname",),
    ),
    _rule(
        "PortalIdMappingsOrphaned", "critical", _INTEG,
        expr="pgrb_id_mappings_orphaned\n"
        f"  > min_over_time(pgrb_id_mappings_orphaned[{NEW_FAULT_WINDOW}])",
        for_="5m", threshold=f"count rose within {NEW_FAULT_WINDOW}",
        summary="New orphaned id_mappings on {{ $labels.instance }}",
        description="id_mappings on {{ $labels.instance }} now has {{ $value }} rows whose portal "
        f"user no longer exists, more than at some point in the last {NEW_FAULT_WINDOW}: "
        "something is deleting users without their mappings. Logins of the affected customers "
        "fail.",
        runbook_section=_INTEGRITY,
    ),
    _rule(
        "PortalIdMappingsOrphaned", "warning", _INTEG,
        expr="pgrb_id_mappings_orphaned > 0", for_="15m", threshold="orphaned rows > 0",
        summary="{{ $value }} orphaned id_mappings on {{ $labels.instance }}",
        description="id_mappings on {{ $labels.instance }} has {{ $value }} rows whose portal user "
        "no longer exists. Investigate before deleting anything.",
        runbook_section=_INTEGRITY,
    ),
    _rule(
        "PortalIdMappingsDuplicated", "critical", _INTEG,
        expr=f"{_DUP_NEW.format(_DUP.format('whmcs'), 'whmcs')}\nor "
        f"{_DUP_NEW.format(_DUP.format('sf'), 'salesforce')}",
        for_="5m", threshold=f"count rose within {NEW_FAULT_WINDOW}",
        summary="New duplicate {{ $labels.system }} ids in id_mappings on {{ $labels.instance }}",
        description="{{ $value }} id_mappings rows on {{ $labels.instance }} now share their "
        f"{{{{ $labels.system }}}} id with another row, more than in the last {NEW_FAULT_WINDOW}: "
        "customers may see another customer's account data.",
        runbook_section=_INTEGRITY,
    ),
    _rule(
        "PortalIdMappingsDuplicated", "warning", _INTEG,
        expr=f"{_DUP_ANY.format(_DUP.format('whmcs'), 'whmcs')}\nor "
        f"{_DUP_ANY.format(_DUP.format('sf'), 'salesforce')}",
        for_="15m", threshold="duplicated rows > 0",
        summary="{{ $value }} id_mappings rows share a {{ $labels.system }} id",
        description="{{ $value }} id_mappings rows on {{ $labels.instance }} share their "
        "{{ $labels.system }} id with another row. Investigate before deleting anything.",
        runbook_section=_INTEGRITY,
    ),
    _rule(
        "PrismaMigrationFailed", "critical", _INTEG,
        expr="pgrb_prisma_migrations_failed > 0", for_="1m", threshold="failed migrations > 0",
        summary="A Prisma migration failed on {{ $labels.instance }}",
        description="{{ $value }} Prisma migrations on {{ $labels.instance }} failed and are not "
        "resolved: the schema may be half-applied, and `prisma migrate deploy` refuses to run.",
        runbook_section='Migration Management › "Rollback Procedure"',
    ),
    _rule(
        "PrismaMigrationUnfinished", "warning", _INTEG,
        expr="time() - pgrb_prisma_migration_oldest_unfinished_start_timestamp_seconds\n"
        "  > %(prisma_migration_max_duration_seconds)s",
        for_="1m", threshold="running > %(prisma_migration_max_duration_seconds:duration)s",
        summary="A Prisma migration has been running for {{ $value | humanizeDuration }}",
        description="A Prisma migration on {{ $labels.instance }} started "
        "{{ $value | humanizeDuration }} ago and has neither finished nor failed (threshold "
        "%(prisma_migration_max_duration_seconds:duration)s): it is stuck, or was interrupted.",
        runbook_section='Migration Management › "Migration Checklist"',
    ),
)
# fmt: on
