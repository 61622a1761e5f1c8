"""Client sessions a test opens against a real server, some busy in a thread of their own, and
the concurrent index builds they leave behind: one failed, one parked."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import psycopg

from tests.support.collect import wait_for


class Sessions:
    """Client sessions a test opens, some running a statement in a thread of their own."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conns: list[psycopg.Connection[Any]] = []
        self.threads: list[threading.Thread] = []

    def open(
        self, *, autocommit: bool = False, application_name: str = ""
    ) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.dsn, autocommit=autocommit, application_name=application_name)
        self.conns.append(conn)
        return conn

    def background(self, conn: psycopg.Connection[Any], statement: str) -> None:
        def run() -> None:
            with contextlib.suppress(psycopg.Error):  # ended at teardown
                conn.execute(statement.encode())

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def close(self) -> None:
        # End the backends from the server side, wait for the threads using them to see it, and
        # only then close: closing a connection another thread is using is not safe.
        pids = [conn.info.backend_pid for conn in self.conns if not conn.closed]  # twice is fine
        with psycopg.connect(self.dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
        for thread in self.threads:
            thread.join(timeout=30)
        for conn in self.conns:
            with contextlib.suppress(psycopg.Error):
                conn.close()


def fail_unique_build(dsn: str, index: str, table: str, column: str) -> None:
    """``CREATE UNIQUE INDEX CONCURRENTLY`` over duplicates: it fails and leaves ``index``
    invalid (as a failed migration does)."""
    statement = f"CREATE UNIQUE INDEX CONCURRENTLY {index} ON {table} ({column})"
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute(statement.encode())
        except psycopg.errors.UniqueViolation:
            return
    raise AssertionError(f"{index} was built: {table}.{column} has no duplicates")


def park_a_build(sessions: Sessions, index: str, table: str, column: str) -> int:
    """A ``CREATE INDEX CONCURRENTLY`` waiting in "waiting for old snapshots" for a repeatable-read
    transaction that took its snapshot first; returns the build's pid. It finishes once
    ``sessions`` close."""
    holder = sessions.open(application_name="maintenance-holder")
    holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    holder.execute("SELECT count(*) FROM pg_class")  # the snapshot the build waits for
    builder = sessions.open(autocommit=True, application_name="maintenance-build")
    sessions.background(builder, f"CREATE INDEX CONCURRENTLY {index} ON {table} ({column})")
    pid = builder.info.backend_pid

    def parked() -> bool:
        with psycopg.connect(sessions.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT phase FROM pg_stat_progress_create_index WHERE pid = %s", (pid,)
            ).fetchall()
        return rows == [("waiting for old snapshots",)]

    wait_for(parked, what=f"{index} to wait for old snapshots")
    return pid
