"""The command line as an operator meets it: ``run`` as a real process, its logs, its signals."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
import yaml

from pg_runbook_exporter.app import STATUS_WITHOUT_AUTH
from pg_runbook_exporter.pgserver.throwaway import free_port
from tests.conftest import REPO

# Nothing listens on port 1: collection fails (and says so), serving goes on.
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"


@dataclass
class Exporter:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str) -> int:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status)

    def wait_for(self, text: str, *, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.process.poll() is None, f"exited {self.process.returncode}\n{self.output()}"
            assert time.monotonic() < deadline, f"never logged {text!r}:\n{self.output()}"
            time.sleep(0.05)


@contextlib.contextmanager
def exporter(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Exporter]:
    """``python -m pg_runbook_exporter run`` on a free port, once it answers /healthz."""
    port = free_port()
    log = tmp_path / "run.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "pg_runbook_exporter", "run",
             "--web.listen-address", f"127.0.0.1:{port}", *args],
            stdout=sink, stderr=subprocess.STDOUT, cwd=REPO,
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DATABASE_URL": UNREACHABLE,
                 **(env or {})},
        )  # fmt: skip
    running = Exporter(process=process, port=port, log=log)
    try:
        running.wait_for("listening on port")
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_web_configs_own_line_is_logged(tmp_path: Path) -> None:
    # Fails when logging is set up after the web config is read: its info line is then lost.
    web_config = tmp_path / "web.yml"
    web_config.write_text("http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    with exporter(tmp_path, "--web.config.file", str(web_config)) as running:
        assert running.get("/healthz") == 200
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(timeout=30) == 0
    lines = running.output().splitlines()
    line = next((x for x in lines if "web config" in x), None)
    assert line is not None, lines
    assert line.startswith("ts=")
    assert "level=info logger=pg_runbook_exporter.web.webconfig" in line
    assert f'msg="web config {web_config}: tls=off, basic auth users=0"' in line


SERVING_IMPORTS = """
import json, os, signal, sys, threading, time, urllib.request
from pg_runbook_exporter import cli

def watch(port):
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            break
        except OSError:
            time.sleep(0.05)
    loaded = sorted(m for m in list(sys.modules) if m.startswith("pg_runbook_exporter"))
    print(json.dumps(loaded), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

port = int(sys.argv[1])
threading.Thread(target=watch, args=(port,), daemon=True).start()
cli.main(["run", "--web.listen-address", f"127.0.0.1:{port}"])
"""


def test_the_serving_path_imports_neither_the_mixin_nor_the_demo() -> None:
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-c", SERVING_IMPORTS, str(port)],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
        env={"PATH": os.environ["PATH"], "DATABASE_URL": UNREACHABLE},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert "pg_runbook_exporter.web.server" in loaded  # it did serve
    assert "pg_runbook_exporter.app" in loaded
    wings = tuple(f"pg_runbook_exporter.{wing}." for wing in ("mixin", "demo", "pgserver"))
    assert [m for m in loaded if f"{m}.".startswith(wings)] == []


def test_no_test_imports_the_command_line_as_a_library() -> None:
    importers = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if "pg_runbook_exporter.cli" in names:
                importers.append(str(path.relative_to(REPO)))
    # A subprocess script (a string) may run the command line; a test module may not import it.
    assert importers == []


def test_a_config_error_names_file_and_key_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "queries.yaml"
    bad.write_text(
        textwrap.dedent("""\
        checks:
          a:
            help: A.
            interval: soon
            sql: SELECT 1 AS n
            metrics: {n: {name: n, type: gauge, help: N.}}
        """)
    )
    done = subprocess.run(
        [sys.executable, "-m", "pg_runbook_exporter", "run", "--config", str(bad)],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
        env={"PATH": os.environ["PATH"], "DATABASE_URL": UNREACHABLE},
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == (
        f"error: {bad}: checks.a.interval: expected a duration such as 15s, 100ms or 5m, "
        "got 'soon'\n"
    )


def test_a_port_in_use_is_an_error_line_and_exit_1(tmp_path: Path) -> None:
    with exporter(tmp_path) as first:
        done = subprocess.run(
            [sys.executable, "-m", "pg_runbook_exporter", "run",
             "--web.listen-address", f"127.0.0.1:{first.port}"],
            capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
            env={"PATH": os.environ["PATH"], "DATABASE_URL": UNREACHABLE},
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.endswith(
        f"error: cannot listen on 127.0.0.1:{first.port}: Address already in use\n"
    )
    assert "Traceback" not in done.stderr


def test_sighup_is_logged_rereads_the_web_config_and_serving_goes_on(tmp_path: Path) -> None:
    # Fails while SIGHUP has its default action: the process ends without a word.
    web_config = tmp_path / "web.yml"
    web_config.write_text("http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    with exporter(tmp_path, "--web.config.file", str(web_config)) as running:
        loaded = f"web config {web_config}: tls=off, basic auth users=0"
        running.process.send_signal(signal.SIGHUP)
        running.wait_for("SIGHUP: re-reading the web config")
        running.wait_for(f"web config {web_config} ")  # re-read: applied, or kept for a restart
        assert running.output().count(loaded) == 2
        assert running.get("/healthz") == 200

        web_config.write_text("tls_server_config: {colour: blue}\n")  # a broken edit
        running.process.send_signal(signal.SIGHUP)
        running.wait_for("web config not reloaded, the running one stays")
        assert running.process.poll() is None
        assert running.get("/healthz") == 200

        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(timeout=30) == 0
    assert running.output().count("SIGHUP: re-reading the web config") == 2
    assert "shutting down" in running.output()


@pytest.mark.parametrize("given", ["flag", "environment"])
def test_check_warns_when_the_password_is_on_the_command_line(given: str) -> None:
    url = "postgresql://nobody:Cl1-secret@127.0.0.1:1/none"
    args = ["--database.url", url] if given == "flag" else []
    env = {"PGRB_DATABASE_URL": url} if given == "environment" else {}
    done = subprocess.run(
        [sys.executable, "-m", "pg_runbook_exporter", "check", *args],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
        env={"PATH": os.environ["PATH"], **env},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # nothing listens on port 1
    warned = [x for x in done.stderr.splitlines() if x.startswith("warning: ")]
    if given == "flag":
        assert len(warned) == 1
        assert "--database.password-file" in warned[0]
    else:
        assert warned == []
    assert "Cl1-secret" not in done.stdout + done.stderr


@pytest.mark.parametrize("auth", ["none", "basic"])
def test_check_with_web_status_warns_unless_basic_auth_guards_it(tmp_path: Path, auth: str) -> None:
    """Fails when ``check --web.status`` stops printing the warning about an unguarded status
    page, or prints it although the web config has basic auth users."""
    web_config = tmp_path / "web.yml"
    users = {"prometheus": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()}
    web_config.write_text(yaml.safe_dump({"basic_auth_users": users} if auth == "basic" else {}))
    done = subprocess.run(
        [sys.executable, "-m", "pg_runbook_exporter", "check", "--web.status",
         "--web.config.file", str(web_config)],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
        env={"PATH": os.environ["PATH"], "DATABASE_URL": UNREACHABLE},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # nothing listens on port 1
    warned = [x for x in done.stderr.splitlines() if x.startswith("warning: ")]
    assert warned == ([f"warning: {STATUS_WITHOUT_AUTH}"] if auth == "none" else [])


def test_run_with_web_status_logs_the_warning_and_serves_the_page(tmp_path: Path) -> None:
    """Fails when ``run --web.status`` serves the page without logging that nothing guards it,
    or does not serve it; without the flag it is 404 and nothing is logged."""
    with exporter(tmp_path, "--web.status") as running:
        assert running.get("/status") == 200
        assert running.get("/status.json") == 200
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(timeout=30) == 0
    warned = [x for x in running.output().splitlines() if "--web.status" in x]
    assert len(warned) == 1, running.output()
    assert f'level=warning logger=pg_runbook_exporter.app msg="{STATUS_WITHOUT_AUTH}"' in warned[0]
    with exporter(tmp_path) as running:
        with pytest.raises(urllib.error.HTTPError) as missing:
            running.get("/status")
        assert missing.value.code == 404
    assert "--web.status" not in running.output()
