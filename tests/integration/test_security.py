"""Security: no check can change anything, only the right people scrape, and the database password
never shows — proven with the real ``run`` and ``check`` commands and a real PostgreSQL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import bcrypt
import psycopg
import pytest
from psycopg import sql

from pg_runbook_exporter.config import Config, SqlVariant, parse_config
from pg_runbook_exporter.pgserver.throwaway import free_port, scram_verifier
from tests.conftest import MONITOR_PASSWORD, MONITOR_ROLE, REPO, PortalDb
from tests.support.collect import collect

# --- if vetting were bypassed: the database refuses --------------------------------------------
# (Vetting itself: tests/unit/test_sqlvet.py.)

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


# --- TLS and basic auth through the real `run` command ---------------------------------------

WEB_PASSWORD = "scrape-pass-7Qx"


@dataclass
class RunningExporter:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        return self.log.read_text(errors="replace")


def start_exporter(
    args: list[str], *, env: dict[str, str] | None = None, log: Path
) -> RunningExporter:
    """``python -m pg_runbook_exporter run`` on a free port, not yet waited for."""
    port = free_port()
    base_env = {"PATH": os.environ["PATH"], "HOME": str(log.parent)}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "pg_runbook_exporter", "run", "--log.level", "debug",
             "--web.listen-address", f"127.0.0.1:{port}", *args],
            stdout=sink, stderr=subprocess.STDOUT, env={**base_env, **(env or {})}, cwd=REPO,
        )  # fmt: skip
    return RunningExporter(process=process, port=port, log=log)


def stop_quietly(running: RunningExporter) -> None:
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


@contextlib.contextmanager
def answering(running: RunningExporter, *, tls: bool = False) -> Iterator[RunningExporter]:
    """``running`` once it answers /healthz; killed on the way out if still alive."""
    try:
        deadline = time.monotonic() + 30
        while curl(running, "/healthz", insecure=tls, tls=tls)[0] == 0:
            assert running.process.poll() is None, running.log.read_text()
            assert time.monotonic() < deadline, "the exporter never answered"
            time.sleep(0.1)
        yield running
    finally:
        stop_quietly(running)


def run_exporter(
    args: list[str], *, env: dict[str, str] | None = None, log: Path, tls: bool = False
) -> contextlib.AbstractContextManager[RunningExporter]:
    return answering(start_exporter(args, env=env, log=log), tls=tls)


def curl(
    running: RunningExporter,
    path: str,
    *,
    tls: bool = False,
    insecure: bool = False,
    cacert: Path | None = None,
    user: str | None = None,
) -> tuple[int, str]:
    """(HTTP status, body) from curl; status 0 when the request failed below HTTP."""
    scheme = "https" if tls else "http"
    args = ["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}"]
    args += ["--insecure"] if insecure else []
    args += ["--cacert", str(cacert)] if cacert else []
    args += ["-u", user] if user else []
    done = subprocess.run(
        [*args, f"{scheme}://127.0.0.1:{running.port}{path}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    body, _, status = done.stdout.rpartition("\n")
    return (int(status) if status.isdigit() else 0), body


def test_tls_and_basic_auth_guard_every_endpoint_of_run(
    portal_db: PortalDb, tmp_path: Path
) -> None:
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=exporter", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    hashed = bcrypt.hashpw(WEB_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    args = ["--database.url", portal_db.monitor_dsn, "--web.config.file", str(web)]
    with run_exporter(args, log=tmp_path / "run.log", tls=True) as running:
        right = f"prometheus:{WEB_PASSWORD}"
        for path in ("/metrics", "/", "/healthz", "/readyz", "/nope"):
            assert curl(running, path, tls=True, cacert=cert)[0] == 401, path
            wrong = curl(running, path, tls=True, cacert=cert, user="prometheus:wrong")
            assert wrong[0] == 401, path
            assert (
                curl(running, path, tls=True, cacert=cert, user=f"nobody:{WEB_PASSWORD}")[0] == 401
            )
        status, body = curl(running, "/metrics", tls=True, cacert=cert, user=right)
        assert status == 200 and "pgrb_up" in body
        assert curl(running, "/", tls=True, cacert=cert, user=right)[0] == 200
        assert curl(running, "/healthz", tls=True, cacert=cert, user=right) == (200, "ok\n")
        assert curl(running, "/nope", tls=True, cacert=cert, user=right)[0] == 404
        assert curl(running, "/metrics", user=right)[0] == 0  # plain HTTP is not spoken
        assert curl(running, "/metrics", tls=True, user=right)[0] == 0  # unknown CA: refused
        log = running.stop()
    assert "basic auth failed" in log
    assert WEB_PASSWORD not in log and "wrong" not in log


# --- the database password never shows --------------------------------------------------------

WRONG_PASSWORD = "Wr0ng pa$$:w@rd/%é"  # URL delimiters, a space and a non-ASCII letter
SOURCES = ("url", "url query", "PGPASSWORD", "password file", "PGRB_DATABASE_URL_FILE")


def password_given_by(
    source: str, *, url: str, password: str, directory: Path
) -> tuple[list[str], dict[str, str]]:
    """The ``run``/``check`` arguments and environment that pass ``password`` by ``source``."""
    scheme, _, rest = url.partition("://")
    user, _, location = rest.partition("@")
    with_password = f"{scheme}://{user}:{quote(password, safe='')}@{location}"
    if source == "url":
        return ["--database.url", with_password], {}
    if source == "url query":
        return ["--database.url", f"{url}?password={quote(password, safe='')}"], {}
    if source == "PGPASSWORD":
        return ["--database.url", url], {"PGPASSWORD": password}
    if source == "password file":
        path = directory / "db-password"
        path.write_text(password + "\n")
        return ["--database.url", url, "--database.password-file", str(path)], {}
    path = directory / "db-url"
    path.write_text(with_password + "\n")
    return [], {"PGRB_DATABASE_URL_FILE": str(path)}


def forms_of(secret: str) -> list[str]:
    return [secret, quote(secret, safe=""), quote(secret), secret.encode().decode("latin-1")]


def leaks(text: str, secret: str) -> list[str]:
    return [form for form in forms_of(secret) if form in text]


@pytest.mark.parametrize("state", ["connected", "wrong password", "database down"])
def test_the_database_password_never_appears(
    portal_db: PortalDb, tmp_path: Path, state: str
) -> None:
    password = MONITOR_PASSWORD if state == "connected" else WRONG_PASSWORD
    port = free_port() if state == "database down" else urlsplit(portal_db.server.dsn()).port
    url = f"postgresql://{MONITOR_ROLE}@127.0.0.1:{port}/{portal_db.name}"
    seen: dict[str, str] = {}
    checks: dict[str, subprocess.Popen[str]] = {}
    with contextlib.ExitStack() as stack:
        # Ten exporters at once need more than the role's shipped CONNECTION LIMIT of 5.
        portal_db.server.execute(f"ALTER ROLE {MONITOR_ROLE} CONNECTION LIMIT 12")
        stack.callback(portal_db.server.execute, f"ALTER ROLE {MONITOR_ROLE} CONNECTION LIMIT 5")
        started: dict[str, RunningExporter] = {}
        for index, source in enumerate(SOURCES):  # all at once: the machine has cores to spare
            directory = tmp_path / f"s{index}"
            directory.mkdir()
            args, env = password_given_by(source, url=url, password=password, directory=directory)
            checks[source] = subprocess.Popen(
                [sys.executable, "-m", "pg_runbook_exporter", "check", "--log.level", "debug",
                 *args],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                env={"PATH": os.environ["PATH"], "HOME": str(directory), **env},
            )  # fmt: skip
            started[source] = start_exporter(args, env=env, log=directory / "run.log")
            stack.callback(stop_quietly, started[source])
        for source, check in checks.items():
            output, _ = check.communicate(timeout=120)
            assert check.returncode == (0 if state == "connected" else 1), output
            seen[f"{source}: check"] = output
        for source, running in started.items():
            exporter = stack.enter_context(answering(running))
            want = "pgrb_up 1.0" if state == "connected" else "pgrb_up 0.0"
            deadline = time.monotonic() + 30
            while want not in (metrics := curl(exporter, "/metrics")[1]):
                assert time.monotonic() < deadline, f"{source}: {want} never served"
                time.sleep(0.1)
            seen[f"{source}: /metrics"] = metrics
            for path in ("/", "/readyz", "/healthz", "/nope"):
                seen[f"{source}: {path}"] = curl(exporter, path)[1]
            seen[f"{source}: log"] = exporter.stop()
    assert {
        where: leaks(text, password) for where, text in seen.items() if leaks(text, password)
    } == {}
    for source in SOURCES:  # what was read is what the exporter said
        assert seen[f"{source}: check"].startswith("config: "), seen[f"{source}: check"]
        assert f"database postgresql://{MONITOR_ROLE}@127.0.0.1:" in seen[f"{source}: log"]
    if state != "connected":  # the failure itself is reported, by reason
        for source in SOURCES:
            assert "FAILED (connection)" in seen[f"{source}: check"]
            assert "lost the database" in seen[f"{source}: log"]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://pgrb:Secr℀t-1@127.0.0.1:5432/portal",  # ℀ normalises to a/c: a delimiter
        "postgresql://pgrb:Secr3t-2@127.0.0.1:notaport/portal",
        "postgresql://pgrb:Secr3t-3@[::1/portal",
        "postgresql://pgrb:Secr3t-4@127.0.0.1:5432/portal?sslidentity=x.p12",
        "postgresql://pgrb:Secr3t-5@127.0.0.1:5432/portal?nonsense=1",
    ],
)
def test_a_database_url_that_does_not_parse_is_a_config_error_without_its_password(
    url: str,
) -> None:
    secret = url.partition("://")[2].rpartition("@")[0].partition(":")[2]
    result = subprocess.run(
        [sys.executable, "-m", "pg_runbook_exporter", "check", "--database.url", url],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("error: database URL: ")
    assert "Traceback" not in result.stderr
    assert leaks(result.stdout + result.stderr, secret) == []
