"""PostgreSQL servers only the tests need: one given by ``PGRB_TEST_DSN``, and hot standbys.

Both are ``PostgresServer``s, so tests run SQL, psql scripts and build URLs the one way the
package's ``ThrowawayServer`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo

from pg_runbook_exporter.pgserver.binaries import find_client_tool
from pg_runbook_exporter.pgserver.server import SUPERUSER, PostgresServer
from pg_runbook_exporter.pgserver.throwaway import Setting, ThrowawayServer


class ExternalServer(PostgresServer):
    """A running server given by a superuser URL; nothing here starts or stops it."""

    libpq_env = True  # psql sees what the tests' own connections see (PGSSLROOTCERT, …)

    def __init__(self, dsn: str) -> None:
        self._params: dict[str, Any] = psycopg.conninfo.conninfo_to_dict(dsn)
        self._params.pop("dbname", None)
        self.superuser = str(self._params.get("user") or SUPERUSER)
        with self.connect() as conn:
            self.major = conn.info.server_version // 10000

    def superuser_params(self) -> dict[str, Any]:
        return dict(self._params)

    def tcp_address(self) -> tuple[str, int]:
        return str(self._params.get("host", "127.0.0.1")), int(self._params.get("port", 5432))

    def superuser_password(self) -> str | None:
        password = self._params.get("password")
        return str(password) if password else None

    def psql_program(self) -> Path:
        return find_client_tool("psql", min_major=0)

    def work_dir(self) -> Path:
        return Path.cwd()


class Standby(ThrowawayServer):
    """A hot standby of a running ``ThrowawayServer``: a base backup of it (``-R``), streaming."""

    role = "standby"

    def __init__(
        self, primary: ThrowawayServer, *, settings: Mapping[str, Setting] | None = None
    ) -> None:
        # A standby needs at least the primary's max_connections and the same libraries.
        super().__init__(major=primary.major, settings={**primary.settings, **(settings or {})})
        self.primary = primary
        self.password = primary.password  # the superuser's, replicated

    def _init_data_dir(self) -> None:
        basebackup = self.binaries.tool("pg_basebackup") or find_client_tool(
            "pg_basebackup", min_major=self.major
        )
        self._as_server(
            [str(basebackup), "-h", str(self.primary.socket_dir), "-p", str(self.primary.port),
             "-U", SUPERUSER, "-D", str(self.data_dir), "-R", "-X", "stream",
             "-c", "fast", "--no-sync"],
        )  # fmt: skip

    def _created(self) -> None:
        """Nothing to set: a standby is read-only and has the primary's roles."""
