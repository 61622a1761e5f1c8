"""The exporters under test as child processes on loopback, and their RSS and CPU from /proc."""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import PROMETHEUS_HEADERS, fetch, series_count
from bench.pgserver import free_port

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Spec:
    """How to start one target."""

    name: str
    label: str  # for the report
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0


@dataclass
class Running:
    spec: Spec
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def port(self) -> int:
        return self.spec.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.spec.port}/metrics"


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (query-exporter and others may fork helpers)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in task.read_text().split())
    return pids


def rss_bytes(pid: int) -> int:
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * _PAGE
    return total


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of the process tree so far."""
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


def this_exporter(*, dsn: str, queries: Path, port: int) -> Spec:
    cli = shutil.which("pg-runbook-exporter")
    base = (cli,) if cli else (sys.executable, "-m", "pg_runbook_exporter")
    return Spec(
        name="pgrb",
        label="pg-runbook-exporter",
        argv=(*base, "run", "--config", str(queries), "--web.listen-address", f"127.0.0.1:{port}"),
        env={"DATABASE_URL": dsn, "PYTHONPATH": str(REPO)},
        port=port,
    )


def postgres_exporter(*, dsn: str, port: int) -> Spec:
    return Spec(
        name="pge",
        label="postgres_exporter",
        argv=("prometheus-postgres-exporter", f"--web.listen-address=127.0.0.1:{port}"),
        env={"DATA_SOURCE_NAME": dsn + "?sslmode=disable"},
        port=port,
    )


def query_exporter(*, config: Path, port: int) -> Spec:
    return Spec(
        name="qe",
        label="query-exporter",
        argv=(
            "query-exporter",
            "--config",
            str(config),
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
            "-L",
            "warning",
        ),
        port=port,
    )


def fixed_bytes(*, body: Path, content_type: str, encoding: str | None, port: int) -> Spec:
    argv = [
        sys.executable,
        "-m",
        "bench.fixedbytes",
        "--port",
        str(port),
        "--body",
        str(body),
        "--content-type",
        content_type,
    ]
    if encoding:
        argv += ["--encoding", encoding]
    return Spec(
        name="fixed",
        label="fixed bytes (ceiling)",
        argv=tuple(argv),
        env={"PYTHONPATH": str(REPO)},
        port=port,
    )


def start(spec: Spec, *, logdir: Path) -> Running:
    log = logdir / f"{spec.name}.log"
    env = {**os.environ, **spec.env}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            spec.argv,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
    return Running(spec=spec, proc=proc, log=log)


def wait_collected(target: Running, *, timeout: float, settle: float = 2.0) -> int:
    """Wait until /metrics answers and its series count has stopped changing; returns it."""
    deadline = time.monotonic() + timeout
    last, stable_since = -1, 0.0
    while time.monotonic() < deadline:
        if target.proc.poll() is not None:
            raise RuntimeError(
                f"{target.spec.label} exited ({target.proc.returncode}): "
                + target.log.read_text(errors="replace")[-2000:]
            )
        try:
            resp = fetch("127.0.0.1", target.port, headers=PROMETHEUS_HEADERS, timeout=30)
        except (OSError, http.client.HTTPException):
            time.sleep(0.3)
            continue
        n = series_count(resp.text()) if resp.status == 200 else -1
        now = time.monotonic()
        if n != last:
            last, stable_since = n, now
        elif n > 0 and now - stable_since >= settle:
            return n
        time.sleep(0.5)
    raise TimeoutError(f"{target.spec.label} did not settle within {timeout:.0f}s (last {last})")


def stop(target: Running) -> None:
    if target.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(target.proc.pid, signal.SIGTERM)
        try:
            target.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(target.proc.pid, signal.SIGKILL)
            target.proc.wait(timeout=10)


def new_port() -> int:
    return free_port()
