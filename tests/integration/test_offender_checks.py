"""The offender checks name the culprit: the root lock blocker (a session or a prepared
transaction), the oldest long-running and idle-in-transaction sessions, what holds the xmin
horizon, the failed migrations; only past their thresholds, never more than top_n_offenders, no
customer data, every label capped."""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pg_runbook_exporter import demo
from tests.conftest import PortalDb
from tests.support.collect import Scrape, collect_once, configured, wait_for
from tests.support.sessions import Sessions, slow_index_build
from tests.support.stack import require_tool

OFFENDERS = ["lock_blockers", "long_running_query_offenders", "idle_in_transaction_offenders"]
UTC_ISO = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


@pytest.fixture
def sessions(portal_db_each: PortalDb) -> Iterator[Sessions]:
    opened = Sessions(portal_db_each.dsn)
    yield opened
    opened.close()


def session_of(db: PortalDb, pid: int) -> dict[str, Any]:
    """What pg_stat_activity says of ``pid``, read as the superuser, formatted as the checks do."""
    ((backend_start, xact_start, state_change, query_start, query_id),) = db.server.execute(
        "SELECT to_char(backend_start AT TIME ZONE 'UTC', %s), extract(epoch FROM xact_start),"
        " extract(epoch FROM state_change), extract(epoch FROM query_start), query_id::text"
        " FROM pg_stat_activity WHERE pid = %s",
        (UTC_ISO, pid),
        dbname=db.name,
    )
    return {
        "backend_start": backend_start,
        "xact_start": float(xact_start) if xact_start is not None else None,
        "state_change": float(state_change),
        "query_start": float(query_start) if query_start is not None else None,
        "query_id": query_id or "",
    }


def waiting_since(db: PortalDb, pid: int, seconds: float) -> bool:
    """``pid`` has waited for a lock at least ``seconds``."""
    rows = db.server.execute(
        "SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted"
        " AND extract(epoch FROM now() - waitstart) >= %s",
        (pid, seconds),
        dbname=db.name,
    )
    return bool(rows)


def row_lock_waiter(sessions: Sessions, name: str, row: str) -> int:
    conn = sessions.open(autocommit=True, application_name=name)
    sessions.background(conn, f"UPDATE id_mappings SET updated_at = now() WHERE id = '{row}'")
    return conn.info.backend_pid


def holding_a_row(sessions: Sessions, name: str, row: str) -> psycopg.Connection[Any]:
    """A session that updated ``row`` and sits idle in its transaction."""
    conn = sessions.open(application_name=name)
    conn.execute("UPDATE id_mappings SET updated_at = now() WHERE id = %s", (row,))
    return conn


def seed_rows(db: PortalDb, *ids: str) -> None:
    db.server.execute(
        "INSERT INTO id_mappings (id, user_id, updated_at) SELECT i, 'user-' || i, now()"
        " FROM unnest(%s::text[]) AS i",
        (list(ids),),
        dbname=db.name,
    )


def offenders(db: PortalDb, *also: str, **settings: int) -> Scrape:
    """One run of the offender checks (and ``also``) as the monitoring role, with thresholds
    overridden."""
    config = configured(only=[*OFFENDERS, *also], settings=settings)
    scrape = collect_once(db.monitor_dsn, config)
    for name in OFFENDERS:
        assert scrape.value("pgrb_check_success", check=name) == 1, scrape.text
    return scrape


def labelled(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def session_blocker(
    db: PortalDb, pid: int, application_name: str, *, state: str, relation: str, command: str = ""
) -> frozenset[tuple[str, str]]:
    """The labels of a lock blocker that is a session (not a prepared transaction)."""
    return labelled(
        **client(db, pid, application_name),
        state=state,
        gid="",
        relation=relation,
        command=command,
    )


def client(db: PortalDb, pid: int, application_name: str) -> dict[str, str]:
    """The session labels every offender series of a test session carries."""
    return {
        "pid": str(pid),
        "backend_start": session_of(db, pid)["backend_start"],
        "application_name": application_name,
        "usename": "postgres",
        "client_addr": "127.0.0.1",
        "datname": db.name,
    }


def test_a_row_lock_chain_names_its_root_blocker_the_table_and_both_waiter_counts(
    portal_db_each: PortalDb, sessions: Sessions
) -> None:
    db = portal_db_each
    seed_rows(db, "m1")
    blocker = holding_a_row(sessions, "portal-bff", "m1")
    first = row_lock_waiter(sessions, "portal-worker-1", "m1")  # waits on the transactionid
    wait_for(lambda: waiting_since(db, first, 0), what="the first waiter")
    second = row_lock_waiter(sessions, "portal-worker-2", "m1")  # waits on the tuple lock
    wait_for(lambda: waiting_since(db, second, 1), what="the second waiter to wait 1 s")

    scrape = offenders(db, offender_lock_wait_seconds=1, idle_in_transaction_warning_seconds=0)
    pid = blocker.info.backend_pid
    activity = session_of(db, pid)
    expected = session_blocker(
        db, pid, "portal-bff", state="idle in transaction", relation="public.id_mappings"
    )
    assert scrape.series("pgrb_lock_blocker_waiting_sessions") == {expected: 1}
    assert scrape.series("pgrb_lock_blocker_waiting_sessions_all") == {expected: 2}
    assert scrape.series("pgrb_lock_blocker_transaction_start_timestamp_seconds") == {
        expected: activity["xact_start"]
    }
    assert scrape.series("pgrb_lock_blocker_state_change_timestamp_seconds") == {
        expected: activity["state_change"]
    }
    assert scrape.series("pgrb_lock_blocker_progress_ratio") == {}
    # the same session is the oldest idle in a transaction, with one session waiting on it
    assert scrape.series("pgrb_idle_in_transaction_blocked_sessions") == {
        labelled(**client(db, pid, "portal-bff")): 1
    }

    blocker.commit()
    wait_for(lambda: not waiting_since(db, second, 0), what="the waiters to get the row")
    after = offenders(db, offender_lock_wait_seconds=1)
    assert after.series("pgrb_lock_blocker_waiting_sessions") == {}
    assert after.series("pgrb_lock_blocker_waiting_sessions_all") == {}


def test_a_create_index_holding_up_a_write_is_named_with_its_command_and_progress(
    portal_db_each: PortalDb, sessions: Sessions
) -> None:
    """A CREATE INDEX halfway through its table blocks an UPDATE of it. Fails when the root
    blocker loses its ``command`` label (the page would then offer to end the session rather than
    cancel the build) or its progress, or is named with another state or table."""
    db = portal_db_each
    builder = slow_index_build(sessions, db.dsn, "slowt")
    waiter = sessions.open(autocommit=True, application_name="portal-bff")
    sessions.background(waiter, "UPDATE slowt SET id = id WHERE id = 1")
    wait_for(lambda: waiting_since(db, waiter.info.backend_pid, 1), what="the update to wait 1 s")

    scrape = offenders(db, offender_lock_wait_seconds=1)
    expected = session_blocker(
        db,
        builder,
        "portal-migrations",
        state="active",
        relation="public.slowt",
        command="CREATE INDEX",
    )
    assert scrape.series("pgrb_lock_blocker_waiting_sessions") == {expected: 1}
    assert scrape.series("pgrb_lock_blocker_waiting_sessions_all") == {expected: 1}
    # blocks_done / blocks_total of the "building index: scanning table" phase: 1 of 2
    assert scrape.series("pgrb_lock_blocker_progress_ratio") == {expected: 0.5}
    assert scrape.series("pgrb_lock_blocker_transaction_start_timestamp_seconds") == {
        expected: session_of(db, builder)["xact_start"]
    }


def test_a_prepared_transaction_blocks_as_pid_0_and_is_named_by_its_gid(
    portal_db_each: PortalDb, sessions: Sessions
) -> None:
    db = portal_db_each
    seed_rows(db, "m1")
    gid = "pgrb-test-prepared"
    with psycopg.connect(db.dsn) as holder:
        holder.execute("UPDATE id_mappings SET updated_at = now() WHERE id = 'm1'")
        holder.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(gid)))
    try:
        waiter = row_lock_waiter(sessions, "portal-bff", "m1")
        wait_for(lambda: waiting_since(db, waiter, 1), what="the waiter to wait 1 s")
        ((prepared,),) = db.server.execute(
            "SELECT extract(epoch FROM prepared) FROM pg_prepared_xacts WHERE gid = %s",
            (gid,),
            dbname=db.name,
        )
        scrape = offenders(db, offender_lock_wait_seconds=1)
    finally:
        db.server.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)), dbname=db.name)
    expected = labelled(
        pid="0",
        backend_start="",
        application_name="",
        usename="postgres",
        client_addr="",
        datname=db.name,
        state="",
        gid=gid,
        relation="public.id_mappings",
        command="",
    )
    assert scrape.series("pgrb_lock_blocker_waiting_sessions") == {expected: 1}
    assert scrape.series("pgrb_lock_blocker_waiting_sessions_all") == {expected: 1}
    assert scrape.series("pgrb_lock_blocker_transaction_start_timestamp_seconds") == {
        expected: float(prepared)
    }


def test_the_oldest_long_running_client_query_is_named_with_its_wait_event_and_query_id(
    portal_db_each: PortalDb, sessions: Sessions
) -> None:
    db = portal_db_each
    reports = sessions.open(autocommit=True, application_name="portal-reports")
    sessions.background(reports, "SELECT pg_sleep(600)")
    dump = sessions.open(autocommit=True, application_name="pg_dump")  # kind="maintenance"
    sessions.background(dump, "SELECT pg_sleep(600)")
    pid = reports.info.backend_pid

    def running_for_a_second() -> bool:
        found = session_of(db, pid)["query_start"]
        now = db.server.execute("SELECT extract(epoch FROM now())")[0][0]
        return found is not None and float(now) - found > 1

    wait_for(running_for_a_second, what="the query to run for a second")
    scrape = offenders(db, long_running_query_seconds=1)
    activity = session_of(db, pid)
    # pg_stat_statements is loaded: compute_query_id = auto computes it
    assert activity["query_id"] != ""
    expected = labelled(
        **client(db, pid, "portal-reports"),
        wait_event_type="Timeout",
        wait_event="PgSleep",
        query_id=activity["query_id"],
    )
    assert scrape.series("pgrb_long_running_query_start_timestamp_seconds") == {
        expected: activity["query_start"]
    }
    assert "pg_sleep" not in scrape.text


def test_the_sessions_idle_in_a_transaction_longest_are_named_oldest_first(
    portal_db: PortalDb,
) -> None:
    db = portal_db
    opened = Sessions(db.dsn)
    try:
        idle = []
        for name in ("portal-bff", "portal-admin"):
            conn = opened.open(application_name=name)
            conn.execute("SELECT 1")
            idle.append((conn.info.backend_pid, name))
        wait_for(
            lambda: all(
                float(db.server.execute("SELECT extract(epoch FROM now())")[0][0])
                - session_of(db, pid)["state_change"]
                > 1
                for pid, _ in idle
            ),
            what="the sessions to sit idle for a second",
        )
        scrape = offenders(db, idle_in_transaction_warning_seconds=1)
        assert scrape.series("pgrb_idle_in_transaction_since_timestamp_seconds") == {
            labelled(**client(db, pid, name)): session_of(db, pid)["state_change"]
            for pid, name in idle
        }
        assert scrape.series("pgrb_idle_in_transaction_blocked_sessions") == {
            labelled(**client(db, pid, name)): 0 for pid, name in idle
        }
    finally:
        opened.close()


def test_sessions_under_the_thresholds_create_no_series(
    portal_db: PortalDb,
) -> None:
    db = portal_db
    seed_rows(db, "m1")
    opened = Sessions(db.dsn)
    try:
        holding_a_row(opened, "portal-bff", "m1")
        waiter = row_lock_waiter(opened, "portal-worker", "m1")
        slow = opened.open(autocommit=True, application_name="portal-reports")
        opened.background(slow, "SELECT pg_sleep(600)")
        wait_for(lambda: waiting_since(db, waiter, 0), what="the waiter")
        hour = 3600
        scrape = offenders(
            db,
            "locks",
            offender_lock_wait_seconds=hour,
            long_running_query_seconds=hour,
            idle_in_transaction_warning_seconds=hour,
        )
        assert scrape.value("pgrb_blocked_sessions") == 1  # the locks check still sees the wait
        for name in OFFENDERS:
            assert scrape.value("pgrb_check_series", check=name) == 0
    finally:
        opened.close()


def test_fifty_blocked_and_fifty_idle_sessions_stay_at_top_n_offenders(
    portal_db: PortalDb,
) -> None:
    db = portal_db
    rows = [f"m{i}" for i in range(5)]
    seed_rows(db, *rows)
    opened = Sessions(db.dsn)
    try:
        # 5 blockers idle in a transaction, 10 sessions waiting behind each: 50 blocked; 45
        # more sessions idle in a transaction: 50 in all
        blockers = [holding_a_row(opened, f"blocker-{i}", row) for i, row in enumerate(rows)]
        waiters = [row_lock_waiter(opened, f"waiter-{n}", row) for row in rows for n in range(10)]
        for n in range(45):
            opened.open(application_name=f"idle-{n}").execute("SELECT 1")
        wait_for(
            lambda: all(waiting_since(db, pid, 0) for pid in waiters),
            what="50 sessions to wait",
            timeout=60,
        )
        scrape = offenders(db, offender_lock_wait_seconds=0, idle_in_transaction_warning_seconds=0)
        top = {str(conn.info.backend_pid) for conn in blockers[:3]}  # the oldest transactions
        waiting = scrape.series("pgrb_lock_blocker_waiting_sessions_all")
        assert {dict(labels)["pid"] for labels in waiting} == top
        assert set(waiting.values()) == {10}
        idle = scrape.series("pgrb_idle_in_transaction_since_timestamp_seconds")
        assert {dict(labels)["pid"] for labels in idle} == top  # the first to go idle
        for name in ("lock_blockers", "idle_in_transaction_offenders"):
            series_per_row = 4 if name == "lock_blockers" else 2  # no progress ratio
            assert scrape.value("pgrb_check_series", check=name) == 3 * series_per_row
    finally:
        opened.close()


def label_values(scrape: Scrape) -> set[str]:
    return {value for series in scrape.samples.values() for labels in series for _, value in labels}


def test_a_scrape_of_the_seeded_portal_carries_no_customer_data_and_no_query_text(
    portal_db: PortalDb,
) -> None:
    db = portal_db
    db.server.execute(demo.SEED_SQL, dbname=db.name)
    customers = db.server.execute(
        "SELECT email FROM users UNION ALL"
        " SELECT whmcs_client_id::text FROM id_mappings WHERE whmcs_client_id IS NOT NULL"
        " UNION ALL SELECT sf_account_id FROM id_mappings WHERE sf_account_id IS NOT NULL",
        dbname=db.name,
    )
    opened = Sessions(db.dsn)
    try:
        # an app session that read a customer's row and sits on it, a query naming one, a waiter
        holder = opened.open(application_name="portal-bff")
        holder.execute(
            "UPDATE id_mappings SET updated_at = now() WHERE sf_account_id = '001000000000000010'"
        )
        waiter = opened.open(autocommit=True, application_name="portal-worker")
        opened.background(
            waiter,
            "UPDATE id_mappings SET updated_at = now() WHERE sf_account_id = '001000000000000010'",
        )
        slow = opened.open(autocommit=True, application_name="portal-reports")
        opened.background(slow, "SELECT pg_sleep(600) WHERE 'user7@example.com' <> ''")
        wait_for(lambda: waiting_since(db, waiter.info.backend_pid, 0), what="the waiter")
        config = configured(
            settings={
                "offender_lock_wait_seconds": 0,
                "long_running_query_seconds": 0,
                "idle_in_transaction_warning_seconds": 0,
                "offender_xmin_horizon_age_transactions": 0,
                "prisma_migration_max_duration_seconds": 0,
            }
        )
        scrape = collect_once(db.monitor_dsn, config)
    finally:
        opened.close()
    # the offender checks did name someone, and succeeded as the monitoring role
    for name in [*OFFENDERS, "xmin_horizon_holders", "prisma_migration_offenders",
                 "id_mappings_orphans_newest", "id_mappings_duplicates_newest"]:  # fmt: skip
        assert scrape.value("pgrb_check_success", check=name) == 1, name
        assert scrape.value("pgrb_check_series", check=name) > 0, name
    assert len(customers) > 400
    values = label_values(scrape)
    for (customer,) in customers:
        # as a whole word: a WHMCS id such as 10083 is also a run of digits inside timestamps
        word = re.compile(rf"(?<![0-9A-Za-z]){re.escape(customer)}(?![0-9A-Za-z])")
        assert not [v for v in values if word.search(v)], customer
    assert "@example.com" not in scrape.text
    assert "001000000000000" not in scrape.text  # the Salesforce ids' common start
    assert "pg_sleep" not in scrape.text
    assert not [v for v in values if "UPDATE " in v or "SELECT " in v]


def assert_promtool_accepts(text: str) -> None:
    checked = subprocess.run(
        [require_tool("promtool"), "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == b""


def sha6(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:6]


def test_hostile_names_come_out_escaped_capped_and_valid(portal_db: PortalDb) -> None:
    db = portal_db
    hostile = "portal\"bff' \\ \nx" + "y" * 10_000
    # a migration name is VARCHAR(255): longer than the cap, with a newline PostgreSQL keeps
    migration = 'deploy "x" \\ \n' + "z" * 240
    db.server.execute(
        "INSERT INTO _prisma_migrations (id, checksum, migration_name, logs)"
        " VALUES ('1', 'c', %s, 'error')",
        (migration,),
        dbname=db.name,
    )
    opened = Sessions(db.dsn)
    try:
        conn = opened.open()
        # set after connecting: a startup packet over 10,000 bytes is refused
        conn.execute("SELECT set_config('application_name', %s, false)", (hostile,))
        pid = conn.info.backend_pid
        # PostgreSQL keeps 63 bytes of it and replaces what is not printable ASCII
        ((stored,),) = db.server.execute(
            "SELECT application_name FROM pg_stat_activity WHERE pid = %s", (pid,)
        )
        settings: Mapping[str, int] = {
            "idle_in_transaction_warning_seconds": 0,
            "label_value_max_length": 32,
        }
        # two checks with an application_name label: the cap applies to every check
        only = ["idle_in_transaction_offenders", "connections_by_application"]
        scrape = collect_once(db.monitor_dsn, configured(only=only, settings=settings))
        default = collect_once(db.monitor_dsn, configured(only=["prisma_migration_offenders"]))
    finally:
        opened.close()
    assert stored.startswith("portal\"bff' \\ ") and 32 < len(stored) <= 63
    expected_app = stored[:25] + "…" + sha6(stored)
    apps = {
        dict(labels)["application_name"]
        for labels in scrape.series("pgrb_idle_in_transaction_since_timestamp_seconds")
    }
    assert apps == {expected_app}
    assert scrape.value("pgrb_application_connections", application_name=expected_app) == 1
    assert max(len(v) for v in label_values(scrape)) <= 32
    escaped = expected_app.replace("\\", "\\\\").replace('"', '\\"')
    assert f'application_name="{escaped}"' in scrape.text
    assert_promtool_accepts(scrape.text)
    (labels,) = default.series("pgrb_prisma_migration_applied_steps")
    assert dict(labels)["migration_name"] == migration[:113] + "…" + sha6(migration)
    assert 'migration_name="deploy \\"x\\" \\\\ \\n' in default.text
    assert_promtool_accepts(default.text)
