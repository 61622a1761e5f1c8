"""The offender checks behind the vacuum, index and integrity alerts: what holds the xmin horizon,
the tables oldest to freeze, the largest unused indexes, the failed and stuck Prisma migrations,
and when the newest orphaned or duplicated mapping was written — exact values, as the monitoring
role, present only past their thresholds."""

from __future__ import annotations

import datetime as dt

import psycopg
from psycopg import sql

from tests.conftest import PortalDb
from tests.support.collect import Scrape, collect_once, configured
from tests.support.sessions import Sessions

UTC_ISO = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


def run(db: PortalDb, check: str, **settings: int) -> Scrape:
    scrape = collect_once(db.monitor_dsn, configured(only=[check], settings=settings))
    assert scrape.value("pgrb_check_success", check=check) == 1, scrape.text
    return scrape


def consume_transaction_ids(db: PortalDb, count: int) -> None:
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS xid_burner (n int)")
        for n in range(count):
            conn.execute("INSERT INTO xid_burner VALUES (%s)", (n,))


def epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def test_a_snapshot_holder_and_a_prepared_transaction_are_named_with_their_ages(
    portal_db: PortalDb,
) -> None:
    db = portal_db
    opened = Sessions(db.dsn)
    gid = "pgrb-test-horizon"
    try:
        reader = opened.open(application_name="portal-reports")
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT count(*) FROM users")  # the snapshot: backend_xmin
        consume_transaction_ids(db, 3)
        with psycopg.connect(db.dsn) as holder:
            holder.execute("INSERT INTO xid_burner VALUES (0)")
            holder.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(gid)))
        consume_transaction_ids(db, 3)
        below = run(db, "xmin_horizon_holders", offender_xmin_horizon_age_transactions=1000)
        scrape = run(db, "xmin_horizon_holders", offender_xmin_horizon_age_transactions=2)
        pid = reader.info.backend_pid
        ((session_age, backend_start),) = db.server.execute(
            "SELECT greatest(age(backend_xmin), age(backend_xid)), to_char(backend_start"
            " AT TIME ZONE 'UTC', %s) FROM pg_stat_activity WHERE pid = %s",
            (UTC_ISO, pid),
        )
        ((prepared_age,),) = db.server.execute(
            "SELECT age(transaction) FROM pg_prepared_xacts WHERE gid = %s", (gid,)
        )
    finally:
        db.server.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)), dbname=db.name)
        opened.close()
    assert below.series("pgrb_xmin_horizon_age_transactions") == {}
    session = {"pid": str(pid), "backend_start": backend_start, "client_addr": "127.0.0.1"}
    prepared = {"pid": "0", "backend_start": "", "client_addr": ""}
    assert session_age > prepared_age >= 3
    assert scrape.series("pgrb_xmin_horizon_age_transactions") == {
        frozenset({"kind": "session", "name": "portal-reports", **session}.items()): session_age,
        frozenset({"kind": "prepared_transaction", "name": gid, **prepared}.items()): prepared_age,
    }


def test_the_tables_oldest_to_freeze_are_named_until_a_freeze(portal_db: PortalDb) -> None:
    db = portal_db
    consume_transaction_ids(db, 20)
    scrape = run(db, "oldest_unfrozen_tables", offender_table_xid_age_transactions=0)
    oldest = db.server.execute(
        "SELECT n.nspname, c.relname, greatest(age(c.relfrozenxid), age(t.relfrozenxid))"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_class t ON t.oid = c.reltoastrelid WHERE c.relkind IN ('r', 'm')"
        " ORDER BY 3 DESC, c.oid LIMIT 3",
        dbname=db.name,
    )
    assert scrape.series("pgrb_table_frozenxid_age_transactions") == {
        frozenset({"schemaname": schema, "relname": table}.items()): age
        for schema, table, age in oldest
    }
    assert min(age for _, _, age in oldest) > 20
    db.server.execute("VACUUM FREEZE", dbname=db.name)
    frozen = run(db, "oldest_unfrozen_tables", offender_table_xid_age_transactions=20)
    assert frozen.series("pgrb_table_frozenxid_age_transactions") == {}


def test_the_largest_unused_indexes_are_named_with_their_sizes(portal_db: PortalDb) -> None:
    db = portal_db
    db.server.execute(
        "INSERT INTO users (id, email, updated_at)"
        " SELECT 'u' || g, 'u' || g || '@example.com', now() FROM generate_series(1, 2000) g;"
        "CREATE INDEX users_created_at_idx ON users (created_at)",
        dbname=db.name,
    )
    sizes = dict(
        db.server.execute(
            "SELECT relname, relpages::bigint * current_setting('block_size')::bigint"
            " FROM pg_class WHERE relkind = 'i'",
            dbname=db.name,
        )
    )
    scrape = run(db, "unused_index_names")
    # the three plain indexes of id_mappings are empty: one page each, oldest first on a tie
    expected = [
        ("users", "users_created_at_idx"),
        ("id_mappings", "id_mappings_user_id_idx"),
        ("id_mappings", "id_mappings_whmcs_client_id_idx"),
    ]
    assert sizes["users_created_at_idx"] > sizes["id_mappings_user_id_idx"]
    assert scrape.series("pgrb_largest_unused_index_size_bytes") == {
        frozenset({"schemaname": "public", "relname": t, "indexrelname": i}.items()): sizes[i]
        for t, i in expected
    }


def test_failed_and_stuck_migrations_are_named_and_running_ones_are_not(
    portal_db: PortalDb,
) -> None:
    db = portal_db
    db.server.execute(
        """
        INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, finished_at,
                                        logs, rolled_back_at, applied_steps_count)
        VALUES ('1', 'c', '20250101_init', '2025-01-01 00:00:00+00', '2025-01-01 00:01:00+00',
                NULL, NULL, 1),
               ('2', 'c', '20250201_add_sf_index', '2025-02-01 10:00:00+00', NULL, 'error',
                NULL, 2),
               ('3', 'c', '20250202_rolled', '2025-02-02 10:00:00+00', NULL, 'error', now(), 0),
               ('4', 'c', '20250301_backfill', '2025-03-01 10:00:00+00', NULL, NULL, NULL, 3),
               ('5', 'c', '20250401_running', now() - interval '1 minute', NULL, NULL, NULL, 0)
        """,
        dbname=db.name,
    )
    scrape = run(db, "prisma_migration_offenders")
    failed = frozenset({"migration_name": "20250201_add_sf_index", "status": "failed"}.items())
    stuck = frozenset({"migration_name": "20250301_backfill", "status": "unfinished"}.items())
    assert scrape.series("pgrb_prisma_migration_applied_steps") == {failed: 2, stuck: 3}
    assert scrape.series("pgrb_prisma_migration_started_timestamp_seconds") == {
        failed: epoch("2025-02-01 10:00:00"),
        stuck: epoch("2025-03-01 10:00:00"),
    }


def test_the_newest_orphaned_and_duplicated_mappings_date_the_damage(portal_db: PortalDb) -> None:
    db = portal_db
    checks = ["id_mappings_orphans_newest", "id_mappings_duplicates_newest"]
    clean = collect_once(db.monitor_dsn, configured(only=checks))
    db.server.execute(
        """
        INSERT INTO users (id, email, updated_at) VALUES ('u1', 'a@example.com', now()),
                                                         ('u2', 'b@example.com', now());
        INSERT INTO id_mappings (id, user_id, whmcs_client_id, sf_account_id, created_at,
                                 updated_at)
        VALUES ('1', 'gone-1', NULL, NULL, '2025-03-01 10:00:00', now()),
               ('2', 'gone-2', NULL, NULL, '2025-04-01 12:30:00', now()),
               ('5', 'gone-1', NULL, NULL, '2025-04-02 07:45:00', now()),
               ('3', 'u1', 77, 'SF-1', '2025-05-01 08:00:00', now()),
               ('4', 'u2', 77, 'SF-2', '2025-05-02 09:15:00', now()),
               ('6', 'u1', 77, 'SF-3', '2025-04-20 00:00:00', now()),
               ('7', 'u2', 78, 'SF-4', '2025-06-01 00:00:00', now())
        """,
        dbname=db.name,
    )
    scrape = collect_once(db.monitor_dsn, configured(only=checks))
    for found in (clean, scrape):
        for name in checks:
            assert found.value("pgrb_check_success", check=name) == 1
    assert clean.get("pgrb_id_mappings_orphaned_newest_created_timestamp_seconds") is None
    assert clean.series("pgrb_id_mappings_duplicated_newest_created_timestamp_seconds") == {}
    # the newest of gone-1's two rows, not its first one nor gone-2's only one: a per-user_id
    # lookup taking any row but the newest would report 2025-04-01 12:30
    assert scrape.value("pgrb_id_mappings_orphaned_newest_created_timestamp_seconds") == epoch(
        "2025-04-02 07:45:00"
    )
    # the newest of id 77's three rows (inserted second); id 78's newer single row is no
    # duplicate. Salesforce ids differ: no series of that kind
    assert scrape.series("pgrb_id_mappings_duplicated_newest_created_timestamp_seconds") == {
        frozenset({"kind": "whmcs"}.items()): epoch("2025-05-02 09:15:00")
    }
