"""Client sessions a test opens against a real server, some busy in a thread of their own, and
the concurrent index builds they leave behind: one failed, one parked."""

from __future__ import annotations

import contextlib
import functools
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


def lock_chain(sessions: Sessions, dsn: str, *, marker: str = "lock-chain") -> tuple[int, str]:
    """The runbook's blocked page, for real: a session of application ``portal-bff`` updates one
    id_mappings row and stays idle in its transaction; two more sessions update the same row (the
    first waits on its transaction, the second on the first's tuple lock). Returns the blocker's
    ``pg_backend_pid()`` and the row's id; ``marker`` is in the statements' text, which no output
    may show."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(
            "INSERT INTO users (id, email, updated_at) VALUES ('chain-user', 'chain@example.com', "
            "now()) ON CONFLICT DO NOTHING"
        )
        admin.execute(
            "INSERT INTO id_mappings (id, user_id, whmcs_client_id, updated_at) "
            "VALUES ('chain-row', 'chain-user', 4711, now()) ON CONFLICT DO NOTHING"
        )
    blocker = sessions.open(application_name="portal-bff")
    pid = int(blocker.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
    update = f"UPDATE id_mappings SET updated_at = now() /* {marker} */ WHERE id = 'chain-row'"
    blocker.execute(update.encode())  # and stays idle in transaction
    for name in ("portal-bff-2", "portal-bff-3"):
        waiter = sessions.open(autocommit=True, application_name=name)
        sessions.background(waiter, update)
        # one at a time, so that the first waits on the transaction and the second on the tuple
        wait_for(functools.partial(_waiting, dsn, name), what=f"{name} to wait for its lock")
    return pid, "chain-row"


def _waiting(dsn: str, application_name: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND wait_event_type = 'Lock'",
            (application_name,),
        ).fetchone()
    return bool(row and row[0])


def slow_index_build(sessions: Sessions, dsn: str, table: str) -> int:
    """A ``CREATE INDEX`` halfway through its table scan, blocking writes for 20 s: ``table`` holds
    250 rows on two heap blocks (226 fit in the first), and the index expression sleeps a second
    on each of the last 20. Returns the build's pid once it reports block 1 of 2 scanned; it
    ends when ``sessions`` close."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(
            f"CREATE TABLE {table} (id int); INSERT INTO {table} SELECT generate_series(1, 250);"
            f"CREATE FUNCTION {table}_slow(x int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS "
            "$$BEGIN IF x > 230 THEN PERFORM pg_sleep(1); END IF; RETURN x; END$$".encode()
        )
    builder = sessions.open(autocommit=True, application_name="portal-migrations")
    sessions.background(builder, f"CREATE INDEX {table}_idx ON {table} ({table}_slow(id))")
    pid = builder.info.backend_pid

    def halfway() -> bool:
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT phase, blocks_done, blocks_total FROM pg_stat_progress_create_index"
                " WHERE pid = %s",
                (pid,),
            ).fetchall()
        return rows == [("building index: scanning table", 1, 2)]

    wait_for(halfway, what=f"{table}_idx to scan block 1 of 2")
    return pid
