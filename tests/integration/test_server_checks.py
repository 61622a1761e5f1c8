"""What the server keeps beside the data: temporary files, its log directory, settings waiting
for a restart. The shared servers run with Debian's logging_collector = off; the log directory
and a pending restart get servers of their own (both change server configuration)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from pg_runbook_exporter.pgserver.throwaway import ThrowawayServer
from tests.conftest import PortalDb, Servers
from tests.support.collect import Scrape, collect_once, configured, wait_for
from tests.support.sessions import Sessions

SPILL = "SELECT count(*) FROM (SELECT g FROM generate_series(1, 200000) g ORDER BY g DESC) s"


@pytest.fixture
def sessions(portal_db_each: PortalDb) -> Iterator[Sessions]:
    opened = Sessions(portal_db_each.dsn)
    yield opened
    opened.close()


def temp_stats(db: PortalDb) -> tuple[int, int]:
    rows = db.server.execute(
        "SELECT temp_files, temp_bytes FROM pg_stat_database WHERE datname = current_database()",
        dbname=db.name,
    )
    return int(rows[0][0]), int(rows[0][1])


def test_temporary_files_are_counters_per_database(portal_db_each: PortalDb) -> None:
    db = portal_db_each
    config = configured(only=["temp_files"])
    before = collect_once(db.monitor_dsn, config)
    files_before = before.value("pgrb_database_temp_files_total", datname=db.name)
    assert (files_before, before.value("pgrb_database_temp_bytes_total", datname=db.name)) == (
        temp_stats(db)
    )
    db.server.execute(f"SET work_mem = '64kB'; {SPILL}", dbname=db.name)
    # statistics reach pg_stat_database when the backend reports them, within a second or so
    wait_for(lambda: temp_stats(db)[0] > files_before, what="the spilled sort to be counted")
    after = collect_once(db.monitor_dsn, config)
    files, written = temp_stats(db)
    assert after.value("pgrb_database_temp_files_total", datname=db.name) == files
    assert after.value("pgrb_database_temp_bytes_total", datname=db.name) == written
    assert "# TYPE pgrb_database_temp_bytes_total counter" in after.text


def test_temporary_files_in_use_are_what_pg_ls_tmpdir_lists(
    portal_db_each: PortalDb, sessions: Sessions
) -> None:
    db = portal_db_each
    config = configured(only=["temp_files_in_use"])
    assert (
        collect_once(db.monitor_dsn, config).value("pgrb_temp_files_in_use", spcname="pg_default")
        == 0
    )
    holder = sessions.open()
    holder.execute("SET work_mem = '64kB'")
    # a cursor over a sort that spilled keeps its files until it is closed
    holder.execute("DECLARE spilled CURSOR FOR " + SPILL.replace("count(*)", "g"))
    holder.execute("FETCH 1 FROM spilled")
    listed = db.server.execute("SELECT count(*), sum(size) FROM pg_ls_tmpdir()")
    scrape = collect_once(db.monitor_dsn, config)
    assert listed[0][0] > 0
    assert scrape.value("pgrb_temp_files_in_use", spcname="pg_default") == listed[0][0]
    assert scrape.value("pgrb_temp_files_in_use_bytes", spcname="pg_default") == listed[0][1]


def test_with_logging_collector_off_the_log_check_is_skipped_with_its_reason(
    portal_db_each: PortalDb,
) -> None:
    db = portal_db_each
    if db.server.execute("SHOW logging_collector") != [("off",)]:
        pytest.skip("this server runs the logging collector")
    scrape = collect_once(db.monitor_dsn, configured(only=["server_logs"]))
    assert scrape.series("pgrb_check_skipped") == {
        frozenset({("check", "server_logs"), ("reason", "setting")}): 1.0
    }
    assert scrape.get("pgrb_check_success", check="server_logs") is None
    assert scrape.value("pgrb_check_errors_total", check="server_logs", reason="other") == 0
    assert scrape.series("pgrb_log_directory_size_bytes") == {}


def own_portal(server: ThrowawayServer) -> PortalDb:
    return Servers().portal_db(server)


def test_with_logging_collector_on_the_log_directory_is_measured(
    own_server: Callable[..., ThrowawayServer],
) -> None:
    # nothing else writes to the log while the test reads it
    server = own_server(settings={"logging_collector": True, "log_checkpoints": False})
    db = own_portal(server)

    def rotated() -> bool:
        # A file name carries its second: a rotation within the first one reuses the name.
        server.execute("SELECT pg_rotate_logfile()")
        return bool(server.execute("SELECT count(*) FROM pg_ls_logdir()")[0][0] >= 2)

    wait_for(rotated, what="a second log file")
    scrape = collect_once(db.monitor_dsn, configured(only=["server_logs"]))
    log_dir = server.data_dir / "log"
    on_disk = [log_dir / name for name in os.listdir(log_dir)]
    assert scrape.value("pgrb_log_files") == len(on_disk) >= 2
    assert scrape.value("pgrb_log_directory_size_bytes") == sum(p.stat().st_size for p in on_disk)


def test_a_restart_only_setting_changed_and_reloaded_is_one_pending_restart(
    own_server: Callable[..., ThrowawayServer],
) -> None:
    server = own_server()
    db = own_portal(server)
    config = configured(only=["pending_restart"])
    assert collect_once(db.monitor_dsn, config).value("pgrb_settings_pending_restart") == 0
    (current,) = server.execute(
        "SELECT setting::int FROM pg_settings WHERE name = 'max_wal_senders'"
    )
    server.execute(f"ALTER SYSTEM SET max_wal_senders = {current[0] + 1}")
    server.execute("SELECT pg_reload_conf()")
    found: list[Scrape] = []

    def pending() -> bool:
        found[:] = [collect_once(db.monitor_dsn, config)]
        return found[0].value("pgrb_settings_pending_restart") != 0

    wait_for(pending, what="the reload to mark the setting pending")
    assert found[0].value("pgrb_settings_pending_restart") == 1
