"""Maintenance in progress and the invalid indexes a failed concurrent build leaves behind.

Real ``CREATE INDEX CONCURRENTLY`` runs on each major under test, as the shipped role: one fails on
duplicate WHMCS ids, one is parked in "waiting for old snapshots" by an open transaction.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import PortalDb
from tests.support.collect import collect_once, configured, wait_for
from tests.support.sessions import Sessions, fail_unique_build, park_a_build

CHECKS = ["maintenance_progress", "invalid_indexes"]
UNIQUE = "id_mappings_whmcs_client_id_key"
PARKED = "id_mappings_created_at_idx"


@pytest.fixture
def db(portal_db_each: PortalDb) -> PortalDb:
    """A portal whose mappings carry WHMCS id 100 twice (runbook "Fix Duplicate Mappings")."""
    portal_db_each.server.execute(
        "INSERT INTO users (id, email, updated_at) "
        "SELECT 'u' || g, 'u' || g || '@example.com', now() FROM generate_series(1, 4) g;"
        "INSERT INTO id_mappings (id, user_id, whmcs_client_id, updated_at) "
        "VALUES ('m1', 'u1', 100, now()), ('m2', 'u2', 100, now()), ('m3', 'u3', 300, now())",
        dbname=portal_db_each.name,
    )
    return portal_db_each


@pytest.fixture
def sessions(db: PortalDb) -> Iterator[Sessions]:
    opened = Sessions(db.dsn)
    yield opened
    opened.close()


def build_unique_index(db: PortalDb) -> None:
    fail_unique_build(db.dsn, UNIQUE, "id_mappings", "whmcs_client_id")


def test_a_failed_concurrent_unique_build_leaves_an_invalid_index_that_is_named(
    db: PortalDb,
) -> None:
    config = configured(only=CHECKS)
    assert collect_once(db.monitor_dsn, config).series("pgrb_invalid_indexes") == {}
    build_unique_index(db)
    scrape = collect_once(db.monitor_dsn, config)
    assert scrape.series("pgrb_invalid_indexes") == {
        frozenset(
            {("schemaname", "public"), ("relname", "id_mappings"), ("indexrelname", UNIQUE)}
        ): 1.0
    }
    assert scrape.series("pgrb_maintenance_running") == {}


def test_a_parked_concurrent_build_is_maintenance_in_progress_and_not_invalid(
    db: PortalDb, sessions: Sessions
) -> None:
    build_unique_index(db)
    pid = park_a_build(sessions, PARKED, "id_mappings", "created_at")
    # a migration's ALTER TABLE queues behind the build's ShareUpdateExclusiveLock
    migration = sessions.open(autocommit=True)
    sessions.background(migration, "ALTER TABLE id_mappings ADD COLUMN note text")
    wait_for(
        lambda: (
            db.server.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                (pid,),
            )
            == [(1,)]
        ),
        what="the ALTER TABLE to wait for the build",
    )
    scrape = collect_once(db.monitor_dsn, configured(only=CHECKS))
    running = {
        "pid": str(pid),
        "datname": db.name,
        "schemaname": "public",
        "relname": "id_mappings",
        "command": "CREATE INDEX CONCURRENTLY",
        "phase": "waiting for old snapshots",
    }
    assert scrape.series("pgrb_maintenance_running") == {frozenset(running.items()): 1.0}
    assert scrape.value("pgrb_maintenance_blocked_sessions", **running) == 1
    # it waits for one transaction, the open one, and has seen none of them end
    assert scrape.value("pgrb_maintenance_progress_ratio", **running) == 0
    started = db.server.execute("SELECT query_start FROM pg_stat_activity WHERE pid = %s", (pid,))
    assert scrape.value("pgrb_maintenance_start_timestamp_seconds", **running) == pytest.approx(
        started[0][0].timestamp()
    )
    # the build's own index is invalid until it finishes: only the failed one is named
    assert {dict(k)["indexrelname"] for k in scrape.series("pgrb_invalid_indexes")} == {UNIQUE}


def test_an_index_name_chosen_to_break_the_exposition_is_escaped(db: PortalDb) -> None:
    # quotes, a backslash and a newline that would end the sample and forge another
    name = 'evil"} 1\npgrb_up 0\n\\'
    fail_unique_build(db.dsn, '"' + name.replace('"', '""') + '"', "id_mappings", "whmcs_client_id")
    scrape = collect_once(db.monitor_dsn, configured(only=CHECKS))
    assert {dict(k)["indexrelname"] for k in scrape.series("pgrb_invalid_indexes")} == {name}
    assert scrape.series("pgrb_up") == {frozenset(): 1.0}
