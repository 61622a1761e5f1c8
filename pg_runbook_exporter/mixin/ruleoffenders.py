"""The promtool examples of the pages that name their culprit: offender series beside the alert's.

Each alert with a ``culprit`` fires once with its offender series present (the page names them,
its fix is filled in) in these examples; the examples of ``ruleexamples`` have none, so the same
pages say their ``none`` words there.
"""

from __future__ import annotations

from pg_runbook_exporter.mixin.rulebook import Book, const

AT = 1200.0  # 20m: the evaluation time of these examples
STEPS = 20
BLOCKER = {
    "pid": "4242", "backend_start": "2026-01-05T02:58:11.123456Z", "application_name": "portal-bff",
    "usename": "portal", "client_addr": "10.0.3.7", "datname": "portal",
    "state": "idle in transaction", "gid": "", "relation": "public.id_mappings", "command": "",
}  # fmt: skip
PREPARED = {
    **BLOCKER, "pid": "0", "backend_start": "", "application_name": "", "client_addr": "",
    "usename": "portal", "state": "", "gid": "settle-7'b", "relation": '"Invoices"',
}  # fmt: skip


def _blocker(
    b: Book,
    labels: dict[str, str],
    direct: int,
    total: int,
    idle: float,
    *,
    progress: float | None = None,
) -> dict[str, str]:
    done = "pgrb_lock_blocker_progress_ratio"
    return {
        **({} if progress is None else {b.series(done, **labels): const(progress, STEPS)}),
        b.series("pgrb_lock_blocker_waiting_sessions", **labels): const(direct, STEPS),
        b.series("pgrb_lock_blocker_waiting_sessions_all", **labels): const(total, STEPS),
        b.series("pgrb_lock_blocker_state_change_timestamp_seconds", **labels): const(
            AT - idle, STEPS
        ),
        b.series("pgrb_lock_blocker_transaction_start_timestamp_seconds", **labels): const(
            AT - idle - 5, STEPS
        ),
    }


def _locks(b: Book) -> None:
    lock = b.setting("lock_wait_warning_seconds")
    waiting = "pgrb_oldest_lock_wait_start_timestamp_seconds"
    named = _blocker(b, BLOCKER, 1, 2, 840)
    # a second root blocker with fewer waiters is not the one named
    other = {**BLOCKER, "pid": "5151", "application_name": "portal-worker", "client_addr": ""}
    named.update(_blocker(b, other, 1, 1, 60))
    b.add("PostgresSessionsBlocked", "behind portal-bff idle in transaction",
          {"pgrb_blocked_sessions": const(3, STEPS)}, "20m", b.fired("warning", 3),
          others=named)  # fmt: skip
    b.add("PostgresLockWait", "behind portal-bff idle in transaction",
          b.ages(waiting, lock + 120, AT), "20m", b.fired("warning", lock + 120),
          others=named)  # fmt: skip
    b.add("PostgresSessionsBlocked", "behind a prepared transaction",
          {"pgrb_blocked_sessions": const(2, STEPS)}, "20m", b.fired("warning", 2),
          others=_blocker(b, PREPARED, 2, 2, 3600))  # fmt: skip
    # a maintenance command is named with its progress, and its fix cancels rather than ends it
    build = {**BLOCKER, "application_name": "psql", "state": "active", "command": "CREATE INDEX"}
    b.add("PostgresLockWait", "behind a CREATE INDEX", b.ages(waiting, lock + 120, AT), "20m",
          b.fired("warning", lock + 120),
          others=_blocker(b, build, 3, 3, 300, progress=0.42))  # fmt: skip


def _sessions(b: Book) -> None:
    warn = b.setting("idle_in_transaction_warning_seconds")
    idle = 'pgrb_oldest_idle_in_transaction_timestamp_seconds{datname="portal"}'
    session = {
        k: BLOCKER[k]
        for k in ("pid", "backend_start", "application_name", "usename", "client_addr", "datname")
    }
    younger = {**session, "pid": "4343", "backend_start": "2026-01-05T03:01:00.000001Z"}
    elsewhere = {**session, "pid": "99", "datname": "reports"}
    since = "pgrb_idle_in_transaction_since_timestamp_seconds"
    blocked = "pgrb_idle_in_transaction_blocked_sessions"
    others = {
        b.series(since, **session): const(AT - warn - 300, STEPS),
        b.series(blocked, **session): const(2, STEPS),
        b.series(since, **younger): const(AT - warn - 60, STEPS),
        b.series(blocked, **younger): const(0, STEPS),
        b.series(since, **elsewhere): const(AT - warn - 900, STEPS),
        b.series(blocked, **elsewhere): const(0, STEPS),
    }  # fmt: skip
    b.add("PostgresIdleInTransaction", "portal-bff named, not another database's",
          b.ages(idle, warn + 300, AT), "20m",
          b.fired("warning", warn + 300, datname="portal"), others=others)  # fmt: skip
    long_ = b.setting("long_running_query_seconds")
    query = 'pgrb_oldest_query_start_timestamp_seconds{kind="client"}'
    running = {**session, "wait_event_type": "IO", "wait_event": "DataFileRead",
               "query_id": "-6043893045417364170"}  # fmt: skip
    b.add("PostgresLongRunningQuery", "portal-bff reading", b.ages(query, long_ + 120, AT), "20m",
          b.fired("warning", long_ + 120, kind="client"),
          others={b.series("pgrb_long_running_query_start_timestamp_seconds", **running):
                  const(AT - long_ - 120, STEPS)})  # fmt: skip


def _connections(b: Book) -> None:
    warn = b.setting("connections_usage_warning_ratio")
    per = "pgrb_application_instance_connections"
    others = {
        b.series(per, application_name=app, client_addr=addr): const(n, STEPS)
        for app, addr, n in (("portal-bff", "10.0.3.7", 10), ("portal-bff", "10.0.3.8", 9),
                             ("psql", "", 4), ("portal-worker", "10.0.4.2", 2))
    }  # fmt: skip
    b.add("PostgresConnectionsHigh", "three instances named",
          {"pgrb_connections_usage_ratio": const(warn, STEPS)}, "10m", b.fired("warning", warn),
          others=others)  # fmt: skip


def _maintenance(b: Book) -> None:
    ratio, rows = b.setting("dead_ratio_warning"), b.setting("dead_ratio_min_rows")
    table = {"schemaname": "public", "relname": "id_mappings"}
    dead = round(ratio * rows)
    horizon = {"kind": "replication_slot", "name": "standby_old", "pid": "", "backend_start": "",
               "client_addr": ""}  # fmt: skip
    session = {"kind": "session", "name": "portal-bff", "pid": "4242",
               "backend_start": BLOCKER["backend_start"], "client_addr": "10.0.3.7"}  # fmt: skip
    holders = {
        b.series("pgrb_xmin_horizon_age_transactions", **horizon): const(900000, STEPS),
        b.series("pgrb_xmin_horizon_age_transactions", **session): const(4000, STEPS),
    }
    where = '{schemaname="public",relname="id_mappings"}'
    b.add("PostgresTableDeadRows", "a slot holds the horizon", {
        f"pgrb_table_dead_ratio{where}": const(ratio, STEPS),
        f"pgrb_table_dead_rows{where}": const(dead, STEPS),
        f"pgrb_table_live_rows{where}": const(rows - dead, STEPS),
    }, "20m", b.fired("warning", ratio, **table), others=holders)  # fmt: skip
    unused = "pgrb_largest_unused_index_size_bytes"
    indexes = {
        b.series(unused, schemaname="public", relname=rel, indexrelname=name): const(size, 100)
        for rel, name, size in (("id_mappings", "id_mappings_sf_idx", 64 * 1024**2),
                                ("users", 'users "Last" login', 8192))
    }  # fmt: skip
    b.add("PostgresUnusedIndexes", "two named", {"pgrb_unused_indexes": "2x100"}, "90m",
          b.fired("info", 2), others=indexes)  # fmt: skip


def _integrity(b: Book) -> None:
    warn = b.setting("xid_age_warning")
    tables = {
        b.series("pgrb_table_frozenxid_age_transactions", schemaname="public", relname=rel):
            const(age, STEPS)
        for rel, age in (("id_mappings", warn + 5e6), ("users", warn + 1e6))
    }  # fmt: skip
    b.add("PostgresXidWraparound", "oldest tables named", {
        'pgrb_database_xid_age{datname="portal"}': const(warn + 5e6, STEPS),
        'pgrb_database_mxid_age{datname="portal"}': const(0, STEPS),
    }, "20m", b.fired("warning", warn + 5e6, datname="portal", age="xid"),
          others=tables)  # fmt: skip
    newest = "pgrb_id_mappings_orphaned_newest_created_timestamp_seconds"
    b.add("PortalIdMappingsOrphaned", "standing, since a deploy", {
        "pgrb_id_mappings_orphaned": "3x60", newest: const(86400 * 20000 + 3600, 60),
    }, "60m", b.fired("warning", 3))  # fmt: skip
    duplicated = "pgrb_id_mappings_duplicated_newest_created_timestamp_seconds"
    b.add("PortalIdMappingsDuplicated", "standing WHMCS duplicate, since a deploy", {
        "pgrb_id_mappings_duplicate_whmcs_rows": "2x60",
        "pgrb_id_mappings_duplicate_sf_rows": "0x60",
    }, "60m", b.fired("warning", 2, system="whmcs"),
          others={b.series(duplicated, kind="whmcs"): const(86400 * 20000, 60)})  # fmt: skip
    failed = {"migration_name": "20260105_add_invoice_index", "status": "failed"}
    b.add("PrismaMigrationFailed", "named", {"pgrb_prisma_migrations_failed": "1x10"}, "5m",
          b.fired("critical", 1), others={
              b.series("pgrb_prisma_migration_applied_steps", **failed): "2x10",
              b.series("pgrb_prisma_migration_started_timestamp_seconds", **failed): "60x10",
          })  # fmt: skip


def offenders(b: Book) -> None:
    for group in (_locks, _sessions, _connections, _maintenance, _integrity):
        group(b)
