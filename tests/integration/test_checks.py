"""Every runbook check against real PostgreSQL servers, with seeded faults and real activity.

Runs on each major under test (``PGRB_TEST_MAJORS``), as the shipped least-privilege role.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conftest import PortalDb
from tests.support.collect import Scrape, collect_once, configured, wait_for
from tests.support.sessions import Sessions

pytestmark = pytest.mark.usefixtures("portal_db_each")

INTEGRITY = ["id_mappings_orphans", "id_mappings_duplicate_whmcs", "id_mappings_duplicate_sf"]


@pytest.fixture
def db(portal_db_each: PortalDb) -> PortalDb:
    portal_db_each.server.execute(
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements", dbname=portal_db_each.name
    )
    return portal_db_each


def seed_users(db: PortalDb, count: int) -> None:
    db.server.execute(
        "INSERT INTO users (id, email, updated_at) "
        "SELECT 'u' || g, 'u' || g || '@example.com', now() FROM generate_series(1, %s) g",
        (count,),
        dbname=db.name,
    )


def add_mapping(db: PortalDb, user_id: str, whmcs: int | None, sf: str | None) -> None:
    db.server.execute(
        "INSERT INTO id_mappings (id, user_id, whmcs_client_id, sf_account_id, updated_at) "
        "VALUES (gen_random_uuid()::text, %s, %s, %s, now())",
        (user_id, whmcs, sf),
        dbname=db.name,
    )


@pytest.fixture
def sessions(db: PortalDb) -> Iterator[Sessions]:
    opened = Sessions(db.dsn)
    yield opened
    opened.close()


def test_every_check_succeeds_or_is_skipped_for_a_stated_reason(db: PortalDb) -> None:
    scrape = collect_once(db.monitor_dsn)
    config = configured()
    failed = {
        name: v
        for name in (c.name for c in config.checks)
        if (v := scrape.get("pgrb_check_success", check=name)) is not None and v != 1
    }
    assert failed == {}, scrape.text
    skipped = {dict(k)["check"]: dict(k)["reason"] for k in scrape.series("pgrb_check_skipped")}
    # A primary with the extension and every portal table: only WAL-receiver-less things skip,
    # and the log directory where logging_collector is off (as on the servers tests start).
    # The checks that read backup files skip without --backup.dir.
    collector_off = db.server.execute("SHOW logging_collector") == [("off",)]
    reading_files = {c.name for c in config.checks if c.source is not None}
    assert {skipped[name] for name in reading_files} == {"unconfigured"}
    assert set(skipped) - {"replication_slots"} - reading_files == (
        {"server_logs"} if collector_off else set()
    )
    assert skipped.get("server_logs", "setting") == "setting"
    assert scrape.value("pgrb_up") == 1
    assert scrape.value("pgrb_server_version_num") // 10000 == db.server.major
    assert scrape.value("pgrb_in_recovery") == 0
    assert scrape.value("pgrb_role_in_pg_monitor") == 1


def test_orphaned_mappings_are_counted(db: PortalDb) -> None:
    seed_users(db, 5)
    for user in ("u1", "u2", "u3"):
        add_mapping(db, user, None, None)
    for gone in ("deleted-1", "deleted-2", "deleted-3", "deleted-4"):
        add_mapping(db, gone, None, None)
    scrape = collect_once(db.monitor_dsn, configured(only=INTEGRITY))
    assert scrape.value("pgrb_id_mappings_orphaned") == 4


def test_duplicate_whmcs_and_salesforce_ids_are_counted(db: PortalDb) -> None:
    seed_users(db, 10)
    # WHMCS 100 thrice and 200 twice: two duplicated ids, five rows; Salesforce 'A' twice: one, two.
    for user, whmcs, sf in [
        ("u1", 100, "A"),
        ("u2", 100, "A"),
        ("u3", 100, None),
        ("u4", 200, "B"),
        ("u5", 200, None),
        ("u6", 300, "C"),
        ("u7", None, None),
    ]:
        add_mapping(db, user, whmcs, sf)
    scrape = collect_once(db.monitor_dsn, configured(only=INTEGRITY))
    assert scrape.value("pgrb_id_mappings_duplicate_whmcs_ids") == 2
    assert scrape.value("pgrb_id_mappings_duplicate_whmcs_rows") == 5
    assert scrape.value("pgrb_id_mappings_duplicate_sf_ids") == 1
    assert scrape.value("pgrb_id_mappings_duplicate_sf_rows") == 2
    assert scrape.value("pgrb_id_mappings_orphaned") == 0


def test_failed_and_unfinished_prisma_migrations_are_counted(db: PortalDb) -> None:
    db.server.execute(
        """
        INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, finished_at,
                                        logs, rolled_back_at, applied_steps_count)
        VALUES ('1', 'c', 'init', now() - interval '1 d', now() - interval '1 d', NULL, NULL, 1),
               ('2', 'c', 'broken', now() - interval '2 hours', NULL, 'error: boom', NULL, 0),
               ('3', 'c', 'rolled', now() - interval '3 hours', NULL, 'error', now(), 0),
               ('4', 'c', 'running', now() - interval '1 minute', NULL, NULL, NULL, 0)
        """,
        dbname=db.name,
    )
    scrape = collect_once(db.monitor_dsn, configured(only=["prisma_migrations"]))
    assert scrape.value("pgrb_prisma_migrations_failed") == 1
    assert scrape.value("pgrb_prisma_migrations_unfinished") == 1
    assert scrape.value("pgrb_prisma_migrations_applied") == 1


def test_prisma_migrations_check_is_skipped_when_the_table_is_absent(db: PortalDb) -> None:
    db.server.execute("DROP TABLE _prisma_migrations", dbname=db.name)
    scrape = collect_once(db.monitor_dsn, configured(only=["prisma_migrations"]))
    assert scrape.value("pgrb_check_skipped", check="prisma_migrations") == 1
    assert scrape.get("pgrb_check_skipped", check="prisma_migrations", reason="relation") == 1
    assert scrape.get("pgrb_check_success", check="prisma_migrations") is None
    assert scrape.series("pgrb_prisma_migrations_failed") == {}


def test_statements_check_is_skipped_without_the_extension(portal_db_each: PortalDb) -> None:
    scrape = collect_once(portal_db_each.monitor_dsn, configured(only=["statements"]))
    assert scrape.get("pgrb_check_skipped", check="statements", reason="extension") == 1
    assert scrape.value("pgrb_check_errors_total", check="statements", reason="other") == 0


def test_idle_in_transaction_session_is_reported(db: PortalDb, sessions: Sessions) -> None:
    before = time.time()
    conn = sessions.open(application_name="portal-bff")
    conn.execute("SELECT count(*) FROM users")  # a transaction opened and left idle
    scrape = collect_once(db.monitor_dsn, configured(only=["idle_in_transaction"]))
    assert scrape.value("pgrb_idle_in_transaction_sessions", datname=db.name) == 1
    started = scrape.value("pgrb_oldest_idle_in_transaction_timestamp_seconds", datname=db.name)
    assert before - 1 <= started <= time.time()


def test_a_lock_wait_is_reported_with_its_blocker(db: PortalDb, sessions: Sessions) -> None:
    holder = sessions.open()
    holder.execute("LOCK TABLE users IN SHARE MODE")
    waiter = sessions.open(autocommit=True)
    sessions.background(waiter, "UPDATE users SET email = email")

    def waiting() -> bool:
        rows = db.server.execute("SELECT count(*) FROM pg_locks WHERE NOT granted", dbname=db.name)
        return bool(rows[0][0])

    wait_for(waiting, what="the UPDATE to wait for its lock")
    scrape = collect_once(db.monitor_dsn, configured(only=["locks", "locks_by_mode"]))
    assert scrape.value("pgrb_lock_waiting_sessions") == 1
    assert scrape.value("pgrb_blocked_sessions") == 1
    assert scrape.value("pgrb_blocking_sessions") == 1
    assert scrape.value("pgrb_locks_not_granted", mode="RowExclusiveLock") == 1
    assert scrape.value("pgrb_locks_not_granted", mode="AccessExclusiveLock") == 0
    assert scrape.value("pgrb_oldest_lock_wait_start_timestamp_seconds") <= time.time()


def test_long_running_queries_are_split_into_client_and_maintenance(
    db: PortalDb, sessions: Sessions
) -> None:
    for app in ("portal-bff", "pg_dump"):
        conn = sessions.open(autocommit=True, application_name=app)
        sessions.background(conn, "SELECT pg_sleep(60)")

    def both_active() -> bool:
        rows = db.server.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' "
            "AND now() - query_start > interval '1 second'",
            dbname=db.name,
        )
        return bool(rows[0][0] == 2)

    wait_for(both_active, what="two sleeping queries older than 1 s")
    config = configured(only=["long_running_queries"], settings={"long_running_query_seconds": 1})
    scrape = collect_once(db.monitor_dsn, config)
    assert scrape.value("pgrb_long_running_queries", kind="client") == 1
    assert scrape.value("pgrb_long_running_queries", kind="maintenance") == 1
    assert scrape.value("pgrb_long_running_queries", kind="autovacuum") == 0
    assert (
        scrape.value("pgrb_oldest_query_start_timestamp_seconds", kind="client") < time.time() - 1
    )


def test_connections_count_client_sessions_by_state_and_application(
    db: PortalDb, sessions: Sessions
) -> None:
    for _ in range(3):
        sessions.open(autocommit=True, application_name="portal-bff")
    config = configured(
        only=["connections", "connections_by_application", "connections_by_instance"]
    )
    scrape = collect_once(db.monitor_dsn, config)
    assert scrape.value("pgrb_connections", datname=db.name, state="idle") == 3
    assert scrape.value("pgrb_connections", datname=db.name, state="active") == 0
    assert scrape.value("pgrb_application_connections", application_name="portal-bff") == 3
    assert (
        scrape.value(
            "pgrb_application_instance_connections",
            application_name="portal-bff",
            client_addr="127.0.0.1",
        )
        == 3
    )


def test_connection_limits_give_the_usage_of_usable_slots(db: PortalDb, sessions: Sessions) -> None:
    for _ in range(2):
        sessions.open(autocommit=True)
    scrape = collect_once(db.monitor_dsn, configured(only=["connection_limits"]))
    clients = db.server.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
    )[0][0]
    max_connections = int(db.server.execute("SHOW max_connections")[0][0])
    reserved = int(db.server.execute("SHOW superuser_reserved_connections")[0][0])
    if db.server.major >= 16:
        reserved += int(db.server.execute("SHOW reserved_connections")[0][0])
    assert scrape.value("pgrb_max_connections") == max_connections
    assert scrape.value("pgrb_connections_usable") == max_connections - reserved
    assert clients >= 2
    # the exporter's own session (closed by now) took a slot too
    assert scrape.value("pgrb_connections_usage_ratio") == pytest.approx(
        (clients + 1) / (max_connections - reserved)
    )


def test_dead_rows_of_a_table_are_reported(db: PortalDb) -> None:
    db.server.execute(
        "CREATE TABLE bloated (id int) WITH (autovacuum_enabled = off);"
        "INSERT INTO bloated SELECT generate_series(1, 1000);"
        "DELETE FROM bloated WHERE id <= 250;",
        dbname=db.name,
    )
    config = configured(only=["table_stats"])

    def counted() -> Scrape | None:
        scrape = collect_once(db.monitor_dsn, config)
        found = scrape.get("pgrb_table_dead_rows", schemaname="public", relname="bloated")
        return scrape if found == 250 else None

    wait_for(lambda: counted() is not None, what="statistics to show 250 dead rows")
    scrape = counted()
    assert scrape is not None
    assert scrape.value("pgrb_table_live_rows", relname="bloated") == 750
    assert scrape.value("pgrb_table_dead_ratio", relname="bloated") == 0.25


def test_table_sizes_match_pg_total_relation_size(db: PortalDb) -> None:
    db.server.execute(
        "CREATE TABLE sized AS SELECT g AS id, repeat('x', 200) AS pad "
        "FROM generate_series(1, 5000) g; ANALYZE sized;",
        dbname=db.name,
    )
    scrape = collect_once(db.monitor_dsn, configured(only=["table_sizes", "database_size"]))
    expected = db.server.execute("SELECT pg_total_relation_size('sized')", dbname=db.name)[0][0]
    assert scrape.value("pgrb_table_size_bytes", schemaname="public", relname="sized") == expected
    db_size = db.server.execute("SELECT pg_database_size(current_database())", dbname=db.name)
    assert scrape.value("pgrb_database_size_bytes", datname=db.name) == pytest.approx(
        db_size[0][0], rel=0.05
    )


def test_unused_indexes_exclude_unique_and_primary_keys(db: PortalDb) -> None:
    config = configured(only=["unused_indexes"])
    before = collect_once(db.monitor_dsn, config).value("pgrb_unused_indexes")
    db.server.execute(
        "CREATE TABLE idx_demo (id int PRIMARY KEY, a int, b int UNIQUE);"
        "CREATE INDEX idx_demo_a ON idx_demo (a);",
        dbname=db.name,
    )
    after = collect_once(db.monitor_dsn, config).value("pgrb_unused_indexes")
    assert after - before == 1


def test_slow_statements_are_exported_without_query_text(db: PortalDb) -> None:
    db.server.execute("SELECT pg_sleep(0.2)", dbname=db.name)
    scrape = collect_once(db.monitor_dsn, configured(only=["statements"]))
    means = scrape.series("pgrb_statement_mean_seconds")
    assert means, scrape.text
    assert max(means.values()) >= 0.2
    assert "pg_sleep" not in scrape.text
    assert {name for labels in means for name, _ in labels} == {"queryid", "datname", "rolname"}


def test_statements_of_dropped_databases_do_not_break_the_check(db: PortalDb) -> None:
    # The same statement in two databases that are then dropped: two entries whose database
    # no longer has a name must not collide on empty labels.
    for suffix in ("gone1", "gone2"):
        name = db.server.create_database(f"{db.name}_{suffix}")
        db.server.execute("SELECT pg_sleep(0.3), 'among the slowest statements'", dbname=name)
        db.server.execute(f'DROP DATABASE "{name}"')
    scrape = collect_once(db.monitor_dsn, configured(only=["statements"]))
    assert scrape.value("pgrb_check_success", check="statements") == 1
    assert all(dict(labels)["datname"] for labels in scrape.series("pgrb_statement_calls_total"))


def test_a_replication_slot_nobody_reads_is_inactive_and_retains_wal(db: PortalDb) -> None:
    slot = f"{db.name}_slot"
    db.server.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
    try:
        scrape = collect_once(db.monitor_dsn, configured(only=["replication_slots"]))
        assert scrape.value("pgrb_replication_slot_active", slot_name=slot) == 0
        assert scrape.value("pgrb_replication_slot_retained_wal_bytes", slot_name=slot) >= 0
        labels = set(dict(next(iter(scrape.series("pgrb_replication_slot_active")))))
        assert labels == {"slot_name", "slot_type"}  # active is the value, never a label
    finally:
        db.server.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
