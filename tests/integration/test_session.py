"""One read-only session on a real PostgreSQL: nothing a check does reaches the next check or the
database, and statements reach the server as written.

Most checks here run past the vetting that refuses them at load (tests/unit/test_sqlvet.py): they
stand for a check that got through anyway. The role they run as is the shipped least-privilege one.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pg_runbook_exporter.config import Config, SqlVariant, parse_config
from pg_runbook_exporter.database_url import parse_database_url
from pg_runbook_exporter.errors import CheckError, FailureReason
from pg_runbook_exporter.pgserver.throwaway import scram_verifier
from pg_runbook_exporter.session import Session
from tests.conftest import MONITOR_ROLE, PortalDb
from tests.support.collect import collect
from tests.support.unvetted import unvetted_config


def config_of(text: str) -> Config:
    """Checks that sleep or read tables the test made: past the vetting (test_sqlvet.py)."""
    return unvetted_config(text, source="test.yaml")


def test_the_exporter_session_is_read_only(portal_db: PortalDb) -> None:
    with psycopg.connect(portal_db.monitor_dsn) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
    config = config_of("""
checks:
  writer:
    help: Tries to write.
    sql: SELECT 0 AS n
    metrics: {n: {name: deleted, type: gauge, help: Deleted rows.}}
""")
    # Past the SQL vetting done at load: the session itself must refuse the write.
    writer = dataclasses.replace(
        config.checks[0],
        variants=(
            SqlVariant(sql="WITH d AS (DELETE FROM users RETURNING 1) SELECT count(*) AS n FROM d"),
        ),
    )
    config = dataclasses.replace(config, checks=(writer,))
    portal_db.server.execute(
        "INSERT INTO users (id, email, updated_at) VALUES ('x', 'x', now());"
        "GRANT DELETE ON users TO pgrb_exporter",
        dbname=portal_db.name,
    )
    error = collect(portal_db.monitor_dsn, config).state("writer").last_error
    assert error is not None
    assert "read-only transaction" in error.message
    assert error.reason is FailureReason.OTHER
    assert error.sqlstate == "25006"  # read_only_sql_transaction
    assert portal_db.server.execute("SELECT count(*) FROM users", dbname=portal_db.name) == [(1,)]


def test_a_percent_escaped_as_double_percent_reaches_the_server_as_one(portal_db: PortalDb) -> None:
    # No settings: the statement is still bound, so "%%" arrives as "%" (else LIKE matches none).
    config = config_of("""
checks:
  percent:
    help: Counts the words that start with a.
    sql: |
      SELECT count(*) AS n FROM (VALUES ('apple'), ('avocado'), ('pear')) w(s) WHERE s LIKE 'a%%'
    metrics: {n: {name: a_words, type: gauge, help: Words starting with a.}}
""")
    assert config.settings == ()
    assert collect(portal_db.monitor_dsn, config).scrape.value("pgrb_a_words") == 2


@contextlib.contextmanager
def session_of(db: PortalDb, **options: Any) -> Iterator[Session]:
    """A connected exporter session as the shipped monitoring role."""
    session = Session(target=parse_database_url(db.monitor_dsn), **options)
    try:
        session.connect()
        yield session
    finally:
        session.close()


def run(session: Session, text: str, *, timeout: float = 5.0) -> list[tuple[Any, ...]]:
    return session.run(text, {}, timeout=timeout, lock_timeout=0.1, max_rows=100).rows


# Everything of a session a check could change and the next one would inherit.
STATE = """
SELECT pg_backend_pid(), current_user::text, current_setting('default_transaction_read_only'),
       current_setting('standard_conforming_strings'), current_setting('search_path'),
       current_setting('row_security'),
       (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),
       (SELECT count(*) FROM pg_listening_channels()),
       (SELECT count(*) FROM pg_prepared_statements)
"""


START = (MONITOR_ROLE, "on", "on", 'pg_catalog,"public",pg_temp', "off", 0, 0, 0)


def advisory_locks_of(db: PortalDb, pid: int) -> list[tuple[Any, ...]]:
    return db.server.execute(
        "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND pid = %s", (pid,)
    )


def test_whatever_a_check_changed_in_the_session_is_gone_before_the_next_run(
    portal_db: PortalDb,
) -> None:
    with session_of(portal_db) as session:
        ((pid, *start),) = run(session, STATE)
        assert tuple(start) == START
        # Settings, the role, a session-level advisory lock, a LISTEN, a prepared statement:
        # without the reset each of these stayed for every later check on the session.
        run(
            session,
            "SELECT set_config('default_transaction_read_only', 'off', false),"
            " set_config('standard_conforming_strings', 'off', false),"
            " set_config('search_path', 'public', false),"
            " set_config('row_security', 'on', false),"
            " set_config('role', 'pg_monitor', false),"
            " pg_advisory_lock(4242)::text",
        )
        assert advisory_locks_of(portal_db, pid) == []  # released when the run ended
        run(session, "LISTEN portal_events")
        run(session, "PREPARE leftover AS SELECT 1")
        # A failed run is reset too: its session-level lock outlives the failed statement.
        with pytest.raises(CheckError, match="division by zero"):
            run(session, "SELECT pg_advisory_lock(4243)::text, 1 / 0")
        assert advisory_locks_of(portal_db, pid) == []
        assert run(session, STATE) == [(pid, *START)]  # same backend: reset, not reconnected


def test_a_check_cannot_leave_its_session_without_statement_timeout(portal_db: PortalDb) -> None:
    with session_of(portal_db) as session:
        # Both runs have the same timeouts: before, the second reused what the session held.
        run(session, "SELECT set_config('statement_timeout', '0', false)", timeout=0.5)
        with pytest.raises(CheckError) as caught:
            run(session, "SELECT pg_sleep(2)::text", timeout=0.5)
        assert (caught.value.reason, str(caught.value)) == (
            FailureReason.TIMEOUT,
            "canceling statement due to statement timeout",
        )


def test_the_session_keeps_its_settings_whatever_the_role_and_database_default(
    portal_db: PortalDb,
) -> None:
    for setting, value in [
        ("standard_conforming_strings", "off"),
        ("default_transaction_read_only", "off"),
        ("search_path", "portal_tricks"),
        ("row_security", "on"),
        ("statement_timeout", "0"),
        ("lock_timeout", "0"),
    ]:
        portal_db.server.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = {}").format(
                sql.Identifier(MONITOR_ROLE),
                sql.Identifier(portal_db.name),
                sql.Identifier(setting),
                sql.Literal(value),
            )
        )
    # Read as the vetter reads it, this is two strings; with standard_conforming_strings off
    # (the role's default now) the backslash escapes the quote and the rest runs as SQL.
    smuggled = "SELECT 'x\\', ' , pg_try_advisory_lock(7) --' AS n"
    with psycopg.connect(portal_db.monitor_dsn, autocommit=True) as plain:  # no pinned options
        assert plain.execute("SHOW standard_conforming_strings").fetchone() == ("off",)
        assert plain.execute(smuggled).fetchone() == ("x', ", True)  # the lock was taken
    with session_of(portal_db) as session:
        ((pid, *state),) = run(session, STATE)
        assert tuple(state) == START
        # (each run sets its own timeouts, so the default is read in the server facts' way)
        timeouts = (
            "SELECT name, setting FROM pg_settings "
            "WHERE name IN ('statement_timeout', 'lock_timeout') ORDER BY name"
        )
        assert session._execute(timeouts, {}).rows == [
            ("lock_timeout", "100"),
            ("statement_timeout", "5000"),
        ]
        assert run(session, smuggled) == [("x\\", " , pg_try_advisory_lock(7) --")]
        assert advisory_locks_of(portal_db, pid) == []


def test_a_session_that_cannot_be_reset_is_closed(portal_db: PortalDb) -> None:
    with session_of(portal_db) as session:
        ((pid,),) = run(session, "SELECT pg_backend_pid()")
        run(session, "BEGIN")  # DISCARD ALL cannot run in the transaction it leaves open
        assert not session.connected
        assert portal_db.server.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
        ) == [(0,)]
        session.connect()
        ((again,),) = run(session, "SELECT pg_backend_pid()")
        assert again != pid


def test_a_session_whose_settings_changed_under_it_is_dropped(portal_db: PortalDb) -> None:
    with session_of(portal_db) as session:
        # What a pooler handing over a server connection with other settings would do; a check
        # cannot (its run ends with the reset), so the test changes it on the connection itself.
        assert session._conn is not None
        session._conn.execute("SET standard_conforming_strings = off")
        with pytest.raises(CheckError) as caught:
            session.ensure_facts(max_age=0)
        assert (caught.value.reason, str(caught.value)) == (
            FailureReason.CONNECTION,
            "the session does not have the settings it was opened with: "
            "standard_conforming_strings is 'off', not 'on'",
        )
        assert not session.connected


def test_a_portal_table_replaced_by_a_view_or_guarded_by_row_security_counts_as_absent(
    portal_db: PortalDb,
) -> None:
    # Both would run code their owner chose in the exporter's session: here, an advisory lock.
    portal_db.server.execute(
        "ALTER TABLE users RENAME TO users_data;"
        "CREATE VIEW users AS SELECT id FROM users_data WHERE pg_try_advisory_lock(1);"
        f"GRANT SELECT ON users TO {MONITOR_ROLE};"
        "ALTER TABLE id_mappings ENABLE ROW LEVEL SECURITY;"
        "CREATE POLICY lock ON id_mappings USING (pg_try_advisory_lock(2));"
        "INSERT INTO id_mappings (id, user_id, updated_at) VALUES ('m1', 'u1', now())",
        dbname=portal_db.name,
    )
    probed = ["users", "id_mappings", "_prisma_migrations"]
    with session_of(portal_db, probe_relations=probed) as session:
        assert session.facts is not None
        assert session.facts.relations == {"_prisma_migrations"}  # checks on the others skip
        # Read anyway, the policy is not applied: the statement fails (row_security off).
        with pytest.raises(CheckError) as caught:
            run(session, "SELECT count(*) FROM id_mappings")
        assert str(caught.value) == (
            'query would be affected by row-level security policy for table "id_mappings"'
        )
        ((pid,),) = run(session, "SELECT pg_backend_pid()")
        assert advisory_locks_of(portal_db, pid) == []


# (name, SQL) of harmful checks, run on the database past the vetting.
HARMFUL = [
    ("deletes", "WITH d AS (DELETE FROM users RETURNING 1) SELECT count(*) AS n FROM d"),
    ("updates", "WITH u AS (UPDATE id_mappings SET sf_account_id = NULL RETURNING 1) "
     "SELECT count(*) AS n FROM u"),
    ("creates", "CREATE TABLE pwned (n int)"),
    ("drops", "DROP TABLE users"),
    ("advances", "SELECT nextval('ticket_seq') AS n"),
    ("terminates", "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
     "WHERE usename = 'portal_app'"),
    ("cancels", "SELECT count(pg_catalog.pg_cancel_backend(pid)) AS n FROM pg_stat_activity "
     "WHERE usename = 'portal_app'"),
    ("reloads", "SELECT pg_reload_conf()::int AS n"),
    ("imports", "SELECT lo_import('/etc/hostname')::bigint AS n"),
    ("unlocks_writes", "SELECT length(set_config('default_transaction_read_only', 'off', false)) "
     "AS n"),
]  # fmt: skip


def unvetted(checks: list[tuple[str, str]]) -> Config:
    """A config whose checks run ``checks``' SQL as is: built past the loader and its vetting."""
    placeholder = "checks:\n" + "".join(
        f"  {name}:\n    help: Harmful.\n    sql: SELECT 1 AS n\n"
        f"    metrics: {{n: {{name: {name}, type: gauge, help: N.}}}}\n"
        for name, _ in checks
    )
    config = parse_config(placeholder, source="unvetted.yaml")
    sqls = dict(checks)
    return dataclasses.replace(
        config,
        checks=tuple(
            dataclasses.replace(c, variants=(SqlVariant(sql=sqls[c.name]),)) for c in config.checks
        ),
    )


@dataclass(frozen=True)
class Portal:
    """What the harmful checks could damage, read as the superuser."""

    users: int
    mapped_sf_ids: int
    tables: int
    ticket_seq: str
    large_objects: int
    app_sessions: int


def portal_state(db: PortalDb) -> Portal:
    (row,) = db.server.execute(
        "SELECT (SELECT count(*) FROM users), (SELECT count(sf_account_id) FROM id_mappings), "
        "  (SELECT count(*) FROM pg_tables WHERE schemaname = 'public'), "
        "  (SELECT (last_value, is_called) FROM ticket_seq)::text, "
        "  (SELECT count(*) FROM pg_largeobject_metadata), "
        "  (SELECT count(*) FROM pg_stat_activity WHERE usename = 'portal_app')",
        dbname=db.name,
    )
    return Portal(*row)


EXPECTED_REFUSALS = {
    # PostgreSQL names the statement's top level: a SELECT with a writing WITH clause
    "deletes": ("other", "cannot execute SELECT in a read-only transaction"),
    "updates": ("other", "cannot execute SELECT in a read-only transaction"),
    "creates": ("other", "cannot execute CREATE TABLE in a read-only transaction"),
    "drops": ("other", "cannot execute DROP TABLE in a read-only transaction"),
    "advances": ("permission", "permission denied for sequence ticket_seq"),
    "terminates": ("permission", "permission denied to terminate process"),
    "cancels": ("permission", "permission denied to cancel query"),
    "reloads": ("permission", "permission denied for function pg_reload_conf"),
    "imports": ("permission", "permission denied for function lo_import"),
}


@contextlib.contextmanager
def app_session(db: PortalDb) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """The portal app's own session, which no check may end."""
    db.server.execute(
        sql.SQL("CREATE ROLE portal_app LOGIN PASSWORD {}").format(
            sql.Literal(scram_verifier("app"))
        )
    )
    conn = psycopg.connect(db.server.dsn(user="portal_app", password="app", dbname=db.name))
    try:
        yield conn
    finally:
        conn.close()
        db.server.execute("DROP ROLE portal_app")


def refusals_of(db: PortalDb, checks: list[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Run ``checks`` once, in order, on one session; (reason, message) of each failed one."""
    collected = collect(db.monitor_dsn, unvetted(checks))
    refusals = {}
    for name, _ in checks:
        state = collected.state(name)
        if not state.success:
            error = state.last_error
            refusals[name] = (str(error.reason), error.message) if error else ("", "")
    return refusals


def grant_refusals(db: PortalDb, checks: list[tuple[str, str]]) -> dict[str, str]:
    """The first line of each error of ``checks`` run as the exporter's role, read-write."""
    refusals = {}
    options = "-c default_transaction_read_only=off"
    with psycopg.connect(db.monitor_dsn, autocommit=True, options=options) as conn:
        for name, query in checks:
            try:
                conn.execute(query)
            except psycopg.Error as exc:
                refusals[name] = str(exc).splitlines()[0]
    return refusals


def test_a_harmful_check_that_got_past_vetting_fails_and_changes_nothing(
    portal_db: PortalDb,
) -> None:
    portal_db.server.execute(
        "CREATE SEQUENCE ticket_seq;"
        "INSERT INTO users (id, email, updated_at) VALUES ('u1', 'u1@example.com', now());"
        "INSERT INTO id_mappings (id, user_id, sf_account_id, updated_at) "
        "VALUES ('m1', 'u1', '001A', now())",
        dbname=portal_db.name,
    )
    harmful = [(name, query) for name, query in HARMFUL if name != "unlocks_writes"]
    unlock = next((name, query) for name, query in HARMFUL if name == "unlocks_writes")
    with app_session(portal_db) as app:
        before = portal_state(portal_db)
        assert before.app_sessions == 1
        # The read-only session refuses writes and DDL; the role's grants refuse the rest.
        assert refusals_of(portal_db, harmful) == EXPECTED_REFUSALS
        # set_config() runs even read-only (vetting is what stops it), but the session is reset
        # after every check: the checks after it meet read-only exactly as before. (Without
        # the reset they ran read-write and only the grants below refused them.)
        assert refusals_of(portal_db, [unlock, *harmful]) == EXPECTED_REFUSALS
        # On a session that is read-write from the start, the grants alone refuse every write.
        expected = {
            **{name: message for name, (_, message) in EXPECTED_REFUSALS.items()},
            "deletes": "permission denied for table users",
            "updates": "permission denied for table id_mappings",
            "creates": "permission denied for schema public",
            "drops": "must be owner of table users",
        }
        if portal_db.server.major < 15:  # PUBLIC may still CREATE in schema public before 15
            expected["creates"] = EXPECTED_REFUSALS["creates"][1]
        assert grant_refusals(portal_db, harmful) == expected
        assert app.execute("SELECT 1").fetchone() == (1,)  # the app's session is alive
        assert portal_state(portal_db) == before


def test_the_tests_run_as_the_shipped_least_privilege_role(portal_db: PortalDb) -> None:
    role = MONITOR_ROLE
    rows = portal_db.server.execute(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, "
        "  ARRAY(SELECT b.rolname::text FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid "
        "        WHERE m.member = r.oid ORDER BY 1), "
        "  pg_has_role(r.oid, 'pg_signal_backend', 'USAGE'), "
        "  has_table_privilege(r.oid, 'users', 'INSERT, UPDATE, DELETE, TRUNCATE'), "
        "  has_column_privilege(r.oid, 'users', 'email', 'SELECT'), "
        "  has_schema_privilege(r.oid, 'public', 'CREATE') "
        "FROM pg_roles r WHERE rolname = %s",
        (role,),
        dbname=portal_db.name,
    )
    public_create = portal_db.server.major < 15
    assert rows == [(False, False, False, False, False, ["pg_monitor"], False, False, False,
                     public_create)]  # fmt: skip
    with psycopg.connect(portal_db.monitor_dsn) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
