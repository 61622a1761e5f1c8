"""``diagnose``: an alert's diagnosis SQL run against a real lock chain, read-only, as the shipped
monitoring role; the command's exit statuses; a hostile ``--label`` bound, never run.

The command runs as a subprocess (``python -m pg_runbook_exporter``), the module in-process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pg_runbook_exporter import diagnose, playbook
from pg_runbook_exporter.config import load_config
from pg_runbook_exporter.database_url import parse_database_url
from pg_runbook_exporter.errors import CheckError, DiagnoseError
from tests.conftest import PortalDb
from tests.support.collect import collect_once, configured, wait_for
from tests.support.sessions import Sessions, lock_chain, slow_index_build

REPO = Path(__file__).resolve().parents[2]
MARKER = "diagnose-marker-7f3a"  # in the chain's statements: no output may show query text
HOSTILE = "x'; DROP TABLE users; --"


@pytest.fixture
def sessions(portal_db: PortalDb) -> Iterator[Sessions]:
    opened = Sessions(portal_db.dsn)
    yield opened
    opened.close()


@pytest.fixture
def chain(portal_db: PortalDb, sessions: Sessions) -> int:
    pid, _row = lock_chain(sessions, portal_db.dsn, marker=MARKER)
    return pid


def _command(db: PortalDb, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": db.monitor_dsn, "PYTHONPATH": str(REPO)}
    env.pop("PGRB_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "pg_runbook_exporter", "diagnose", *args],
        capture_output=True, text=True, timeout=60, check=False, env=env, cwd=REPO,
    )  # fmt: skip


def _backend_start(db: PortalDb, pid: int) -> str:
    rows = db.server.execute(
        "SELECT to_char(backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
        "FROM pg_stat_activity WHERE pid = %s",
        (pid,),
        dbname=db.name,
    )
    return str(rows[0][0])


def test_the_root_blocker_is_found_with_its_waiters_and_a_guarded_fix(
    portal_db: PortalDb, chain: int
) -> None:
    target = parse_database_url(portal_db.monitor_dsn)
    report = diagnose.run(load_config(), target, "PostgresSessionsBlocked", {})
    rows = [dict(zip(report.columns, row, strict=True)) for row in report.rows]
    (blocker,) = rows  # the second waiter waits on the first, which is not a root
    assert blocker["pid"] == str(chain)
    assert blocker["application_name"] == "portal-bff"
    assert blocker["state"] == "idle in transaction"
    assert blocker["waiting_directly"] == "1"
    assert blocker["backend_start"] == _backend_start(portal_db, chain)
    assert report.fixes == (
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = {chain} AND "
        f"backend_start = '{blocker['backend_start']}';",
    )


def test_the_command_prints_the_blocker_and_its_fix_and_runs_nothing(
    portal_db: PortalDb, chain: int
) -> None:
    done = _command(portal_db, "PostgresSessionsBlocked")
    print(done.stdout)
    assert done.returncode == 0, done.stderr
    assert f"WHERE pid = {chain} AND backend_start = '{_backend_start(portal_db, chain)}';" in (
        done.stdout
    )
    assert "portal-bff" in done.stdout
    assert MARKER not in done.stdout + done.stderr, "query text was printed"
    # the fix was printed, not run: the blocker still holds its transaction
    state = portal_db.server.execute(
        "SELECT state FROM pg_stat_activity WHERE pid = %s", (chain,), dbname=portal_db.name
    )
    assert state == [("idle in transaction",)]


def test_the_idle_session_is_found_in_its_database(portal_db: PortalDb, chain: int) -> None:
    done = _command(portal_db, "PostgresIdleInTransaction", "--label", f"datname={portal_db.name}")
    assert done.returncode == 0, done.stderr
    assert f"WHERE pid = {chain} AND backend_start" in done.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["NoSuchAlert"], "no alert named 'NoSuchAlert'"),
        (["PgRunbookExporterDown"], "PgRunbookExporterDown has no database diagnosis"),
        (["PgRunbookExporterAbsent"], "PgRunbookExporterAbsent has no database diagnosis"),
        (["PostgresIdleInTransaction"], "needs the alert's label(s) datname: --label datname=…"),
        (["PostgresSessionsBlocked", "--label", "datname=portal"], "takes no label datname"),
        (["PostgresSessionsBlocked", "--label", "datname"], "expected NAME=VALUE"),
    ],
)
def test_what_cannot_be_diagnosed_is_said_and_exits_2(
    portal_db: PortalDb, args: list[str], says: str
) -> None:
    done = _command(portal_db, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: "), done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr


def test_a_hostile_label_is_bound_changes_nothing_and_finds_nothing(
    portal_db: PortalDb, chain: int
) -> None:
    done = _command(portal_db, "PostgresIdleInTransaction", "--label", f"datname={HOSTILE}")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "not found" in done.stdout
    tables = portal_db.server.execute(
        "SELECT count(*) FROM users WHERE id = 'chain-user'", dbname=portal_db.name
    )
    assert tables == [(1,)]


def test_nothing_blocked_is_not_found(portal_db: PortalDb) -> None:
    done = _command(portal_db, "PostgresSessionsBlocked")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "PostgresSessionsBlocked: not found" in done.stdout


def test_every_diagnosis_runs_as_the_monitoring_role(portal_db: PortalDb) -> None:
    """Each alert's SQL runs read-only as the shipped role; labels get harmless values."""
    target = parse_database_url(portal_db.monitor_dsn)
    config = load_config()
    failed = {}
    for alert, diagnosis in playbook.load().items():
        labels = {name: "nothing-here" for name in diagnosis.labels}
        try:
            report = diagnose.run(config, target, alert, labels)
        except CheckError as exc:
            failed[alert] = exc.message
            continue
        assert report.columns, alert
    assert failed == {}


def test_control_characters_of_a_value_are_shown_escaped() -> None:
    assert diagnose.cell("portal\x1b[31m\nbff") == "portal\\x1b[31m\\nbff"
    with pytest.raises(DiagnoseError):
        diagnose.parse_labels(["a=1", "a=2"])


def test_a_prepared_transaction_is_named_by_its_gid_and_rolled_back_by_it(
    portal_db: PortalDb, sessions: Sessions
) -> None:
    gid = "settle-7'b"  # a quote in the gid: the fix quotes it as a literal
    portal_db.server.execute(
        "INSERT INTO id_mappings (id, user_id, updated_at) VALUES ('p1', 'u1', now())",
        dbname=portal_db.name,
    )
    with psycopg.connect(portal_db.dsn) as holder:
        holder.execute("UPDATE id_mappings SET updated_at = now() WHERE id = 'p1'")
        holder.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(gid)))
    try:
        waiter = sessions.open(autocommit=True, application_name="portal-bff")
        sessions.background(waiter, "UPDATE id_mappings SET updated_at = now() WHERE id = 'p1'")
        wait_for(
            lambda: bool(portal_db.server.execute(
                "SELECT 1 FROM pg_locks WHERE NOT granted", dbname=portal_db.name)),
            what="the update to wait for the prepared transaction",
        )  # fmt: skip
        done = _command(portal_db, "PostgresLockWait")
    finally:
        portal_db.server.execute(
            sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)), dbname=portal_db.name
        )
    assert done.returncode == 0, done.stderr
    assert "  ROLLBACK PREPARED 'settle-7''b';" in done.stdout.splitlines()


def _prepare(db: PortalDb, gid: str, *rows: str) -> None:
    """A prepared transaction ``gid`` holding the row locks of id_mappings ``rows``."""
    db.server.execute(
        "INSERT INTO id_mappings (id, user_id, updated_at) SELECT i, 'u-' || i, now()"
        " FROM unnest(%s::text[]) AS i",
        (list(rows),),
        dbname=db.name,
    )
    with psycopg.connect(db.dsn) as holder:
        holder.execute(
            "UPDATE id_mappings SET updated_at = now() WHERE id = ANY(%s)", (list(rows),)
        )
        holder.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(gid)))


def _rollback(db: PortalDb, *gids: str) -> None:
    for gid in gids:
        db.server.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)), dbname=db.name)


@pytest.mark.parametrize("alert", ["PostgresLockWait", "PostgresSessionsBlocked"])
def test_a_prepared_transaction_that_blocks_nobody_is_not_found(
    portal_db: PortalDb, alert: str
) -> None:
    """Fails when the diagnosis lists every prepared transaction: it then exits 0 and offers to
    roll back a healthy one."""
    _prepare(portal_db, "harmless-2pc", "h1")
    try:
        done = _command(portal_db, alert)
    finally:
        _rollback(portal_db, "harmless-2pc")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{alert}: not found" in done.stdout
    assert "ROLLBACK PREPARED" not in done.stdout


def test_only_the_prepared_transaction_a_waiter_waits_for_is_named_with_its_own_waiters(
    portal_db: PortalDb, sessions: Sessions
) -> None:
    """Two sessions wait for one prepared transaction's rows; another prepared transaction and a
    session blocked by a session are beside it. Fails when a harmless prepared transaction is
    listed, or when a gid gets the count of every session blocked by any prepared one."""
    _prepare(portal_db, "blocking-2pc", "b1", "b2")
    _prepare(portal_db, "harmless-2pc", "h1")
    try:
        waiters = []
        for row in ("b1", "b2"):
            waiter = sessions.open(autocommit=True, application_name=f"portal-bff-{row}")
            sessions.background(
                waiter, f"UPDATE id_mappings SET updated_at = now() WHERE id = '{row}'"
            )
            waiters.append(waiter.info.backend_pid)
        wait_for(
            lambda: portal_db.server.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid = ANY(%s)",
                (waiters,), dbname=portal_db.name) == [(2,)],
            what="both updates to wait for the prepared transaction",
        )  # fmt: skip
        report = diagnose.run(
            load_config(), parse_database_url(portal_db.monitor_dsn), "PostgresLockWait", {}
        )
    finally:
        _rollback(portal_db, "blocking-2pc", "harmless-2pc")
    rows = [dict(zip(report.columns, row, strict=True)) for row in report.rows]
    assert [(r["pid"], r["gid"], r["waiting_directly"]) for r in rows] == [
        ("0", "blocking-2pc", "2")
    ]
    assert report.fixes == ("ROLLBACK PREPARED 'blocking-2pc';",)


def test_a_blocking_create_index_is_cancelled_as_the_page_says(
    portal_db: PortalDb, sessions: Sessions
) -> None:
    """A CREATE INDEX halfway through its table blocks an UPDATE. Fails when the diagnosis does
    not say the command and its progress, or chooses another fix than the page, which fills the
    same playbook fix (``Diagnosis.fix_for``) from the lock_blockers series."""
    builder = slow_index_build(sessions, portal_db.dsn, "slowt")
    waiter = sessions.open(autocommit=True, application_name="portal-bff")
    sessions.background(waiter, "UPDATE slowt SET id = id WHERE id = 1")
    wait_for(
        lambda: bool(portal_db.server.execute(
            "SELECT 1 FROM pg_locks WHERE NOT granted AND pid = %s", (waiter.info.backend_pid,),
            dbname=portal_db.name)),
        what="the update to wait for the index build",
    )  # fmt: skip
    report = diagnose.run(
        load_config(), parse_database_url(portal_db.monitor_dsn), "PostgresLockWait", {}
    )
    config = configured(only=["lock_blockers"], settings={"offender_lock_wait_seconds": 0})
    scrape = collect_once(portal_db.monitor_dsn, config)
    (series,) = scrape.series("pgrb_lock_blocker_waiting_sessions")

    rows = [dict(zip(report.columns, row, strict=True)) for row in report.rows]
    (row,) = rows
    start = _backend_start(portal_db, builder)
    assert (row["pid"], row["backend_start"], row["state"]) == (str(builder), start, "active")
    assert (row["command"], row["percent_done"], row["waiting_directly"]) == (
        "CREATE INDEX", "50.0", "1")  # fmt: skip
    cancel = (
        f"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid = {builder} AND "
        f"backend_start = '{start}';"
    )
    assert report.fixes == (cancel,)
    page = playbook.load()["PostgresLockWait"].fix_for(dict(series))
    assert page == cancel
