"""Security through the real commands: only the right people scrape, and the database password
never shows — proven with ``run`` and ``check`` as processes on a real PostgreSQL.

(That no check can change anything: tests/integration/test_session.py; vetting:
tests/unit/test_sqlvet.py.)
"""

from __future__ import annotations

import contextlib
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
import pytest

from pg_runbook_exporter.pgserver.throwaway import free_port
from tests.conftest import MONITOR_PASSWORD, MONITOR_ROLE, REPO, PortalDb

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
