"""Client sessions a test opens against a real server, some busy in a thread of their own."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import psycopg


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
        pids = [conn.info.backend_pid for conn in self.conns]
        with psycopg.connect(self.dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
        for thread in self.threads:
            thread.join(timeout=30)
        for conn in self.conns:
            with contextlib.suppress(psycopg.Error):
                conn.close()
