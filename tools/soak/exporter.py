"""The exporter under soak: `pg-runbook-exporter run` as a process with basic auth on, its RSS and
what its log says about losing and regaining the database."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import yaml

from pg_runbook_exporter.config import default_config_path
from pg_runbook_exporter.validation import parse_duration

REPO = Path(__file__).resolve().parents[2]
USER = "prometheus"
# What the session logs once per lost session and once when it is back (session.py); each other
# line names a state change of its own (a check failing or recovering, a limit reached or left).
LOST = re.compile(r"^session \d+: lost the database ")
BACK = re.compile(r"^session \d+: connected to .* again$")
TRACEBACK = "Traceback (most recent call last)"


def basic_auth(user: str, password: str) -> bytes:
    return b"Basic " + b64encode(f"{user}:{password}".encode())


def write_web_config(directory: Path, password: str, *, cost: int) -> Path:
    """An exporter-toolkit web config with one bcrypt user, readable by its owner only."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()
    path = directory / "web-config.yml"
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump({"basic_auth_users": {USER: hashed}}))
    return path


def write_config(directory: Path, interval: float) -> Path:
    """The shipped queries.yaml with every check due each `interval` seconds."""
    raw = yaml.safe_load(default_config_path().read_text())
    default_timeout = parse_duration(raw["defaults"]["timeout"])
    for check in raw["checks"].values():
        check["interval"] = f"{interval:g}s"
        timeout = parse_duration(check.get("timeout", default_timeout))
        check["timeout"] = f"{min(timeout, interval):g}s"
    path = directory / "queries.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@dataclass
class LogFigures:
    """What the exporter logged: lines by kind, tracebacks, and whether a secret leaked."""

    lines: int = 0
    lost: int = 0
    back: int = 0
    tracebacks: int = 0
    leaked_secrets: int = 0
    by_level: Counter[str] = field(default_factory=Counter)
    # Messages at warning or above other than the lost/back lines, with how often each came
    # (numbers and addresses blanked, so one kind is one entry).
    others: Counter[str] = field(default_factory=Counter)

    @classmethod
    def read(cls, path: Path, secrets: tuple[str, ...]) -> LogFigures:
        text = path.read_text(errors="replace")
        figures = cls(tracebacks=text.count(TRACEBACK))
        figures.leaked_secrets = sum(text.count(s) for s in secrets if s)
        for line in text.splitlines():
            figures.lines += 1
            try:
                record = json.loads(line)
                message, level = str(record["msg"]), str(record["level"])
            except (ValueError, KeyError, TypeError):
                message, level = line, "unstructured"  # e.g. an interpreter's own stderr
            figures.by_level[level] += 1
            if LOST.match(message):
                figures.lost += 1
            elif BACK.match(message):
                figures.back += 1
            elif level in ("warning", "error", "critical", "unstructured"):
                figures.others[re.sub(r"0x[0-9a-f]+|\d+", "N", message)[:160]] += 1
        return figures


class Exporter:
    """`python -m pg_runbook_exporter run` on 127.0.0.1, its log in ``log_path`` (JSON lines)."""

    def __init__(
        self,
        workdir: Path,
        *,
        database_url: str,
        config: Path,
        web_config: Path,
        port: int,
        auth: bytes,
    ) -> None:
        self.port = port
        self.auth = auth
        self.log_path = workdir / "exporter.log"
        # The URL by environment: a password on the command line is readable in /proc.
        env = {**os.environ, "PYTHONPATH": str(REPO), "DATABASE_URL": database_url}
        env.pop("PGRB_DATABASE_URL", None)
        args = [
            sys.executable, "-m", "pg_runbook_exporter", "run",
            "--config", str(config),
            "--web.config.file", str(web_config),
            "--web.listen-address", f"127.0.0.1:{port}",
            "--log.format", "json",
        ]  # fmt: skip
        with self.log_path.open("wb") as sink:
            self.process = subprocess.Popen(
                args, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=workdir, start_new_session=True,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def get(self, path: str, *, timeout: float = 2.0) -> int:
        """The status of an authenticated GET (0 when nothing answered)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", headers={"Authorization": self.auth.decode()}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310
                reply.read()
                return int(reply.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def wait_ready(self, timeout: float) -> bool:
        """Whether `/readyz` answered 200 (connected, every check ran once) within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            if self.get("/readyz") == 200:
                return True
            time.sleep(0.25)
        return False

    def rss_kib(self) -> int | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL past `timeout`; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode
