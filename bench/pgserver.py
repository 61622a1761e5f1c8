"""The PostgreSQL server the benchmark runs against: a `ThrowawayServer` tuned for bulk seeding."""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from pg_runbook_exporter.pgserver.throwaway import ThrowawayServer

logger = logging.getLogger(__name__)

# pg_stat_statements is what the database-load figures are read from; the rest makes seeding
# millions of rows quick (nothing here has to survive a crash).
SETTINGS: dict[str, str | int | bool] = {
    "pg_stat_statements.track": "all",
    "pg_stat_statements.max": 10000,
    "shared_buffers": "512MB",
    "maintenance_work_mem": "512MB",
    "max_wal_size": "8GB",
    "synchronous_commit": False,
    "full_page_writes": False,
    "autovacuum": False,
    # 5,000 extra tables with their indexes are created in a few transactions.
    "max_locks_per_transaction": 1024,
}


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Database:
    """The `portal` database on a running server, with a password per login role."""

    server: ThrowawayServer
    passwords: dict[str, str]

    @property
    def dsn(self) -> str:
        """Superuser URL (seeding, pg_stat_statements)."""
        return self.server.dsn(dbname="portal")

    @property
    def major(self) -> int:
        return self.server.major

    def role_dsn(self, role: str) -> str:
        return self.server.dsn(user=role, password=self.passwords[role], dbname="portal")

    def add_role(self, role: str) -> str:
        """A login role with a fresh password (TCP logins use scram-sha-256)."""
        password = secrets.token_urlsafe(12)
        self.server.execute(
            f"CREATE ROLE {role} LOGIN PASSWORD '{password}' IN ROLE pg_monitor", dbname="portal"
        )
        self.passwords[role] = password
        return role


@contextlib.contextmanager
def start(*, major: int) -> Iterator[Database]:
    """A started server with pg_stat_statements loaded and an empty `portal` database."""
    with ThrowawayServer(major=major, settings=SETTINGS, max_connections=200) as server:
        server.create_database("portal")
        logger.info("PostgreSQL %s on 127.0.0.1:%d", server.binaries.version, server.port)
        yield Database(server=server, passwords={})
