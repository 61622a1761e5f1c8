"""Where this exporter's CPU goes: py-spy samples of its process under paced scrapers, by kind.

py-spy (PyPI) samples every thread's Python stack 1,000 times a second without pausing the
process. It leaves out threads the OS reports idle, but a thread about to block still shows up;
samples whose innermost frame is a wait (a lock, a selector, a socket) are counted as idle here,
so the kinds share the busy time. Each stack counts for the first kind any of its frames belongs to.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import PacedScrapers
from bench.targets import Running, cpu_seconds

logger = logging.getLogger(__name__)

RATE = 1000  # samples a second
# (kind, path fragments of its frames), most specific first: a scheduler frame is in every
# collection stack, so rendering and SQL are looked for before it.
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "rendering the exposition",
        ("pg_runbook_exporter/collector.py", "pg_runbook_exporter/exposition.py"),
    ),
    ("the status page", ("pg_runbook_exporter/status/",)),
    (
        "running SQL and reading rows",
        ("psycopg", "pg_runbook_exporter/session.py", "pg_runbook_exporter/samples.py"),
    ),
    ("serving scrapes", ("pg_runbook_exporter/web/", "asyncio/")),
    ("scheduling and state", ("pg_runbook_exporter/scheduler.py", "pg_runbook_exporter/state.py")),
)
OTHER = "other (logging, threads, the interpreter)"
# Innermost frames that wait rather than work.
WAITS = (
    "Condition.wait ",
    "Event.wait ",
    "EpollSelector.select ",
    "Connection.wait (psycopg/",
    "Watcher._round ",
)


@dataclass(frozen=True)
class Profile:
    seconds: float
    scrapers: int
    interval: float
    samples: int  # busy samples, RATE a second
    cpu_s_per_min: float  # from /proc over the same window
    by_kind: dict[str, int] = field(default_factory=dict)

    def shares(self) -> list[tuple[str, float]]:
        """Each kind's share of the busy samples, largest first."""
        total = self.samples or 1
        return sorted(((k, n / total) for k, n in self.by_kind.items()), key=lambda kv: -kv[1])


def kind_of(stack: str) -> str:
    for kind, fragments in KINDS:
        if any(f in stack for f in fragments):
            return kind
    return OTHER


def tally(raw: str) -> dict[str, int]:
    """py-spy's raw output (`frame;frame;… count` a line) counted by kind."""
    by_kind: dict[str, int] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit() and not stack.rpartition(";")[2].startswith(WAITS):
            kind = kind_of(stack)
            by_kind[kind] = by_kind.get(kind, 0) + int(count)
    return by_kind


def measure(
    target: Running, *, scrapers: int, interval: float, window: float, workdir: Path
) -> Profile | None:
    """Sample `target` for `window` seconds while `scrapers` scrape it every `interval` s.

    None when py-spy is not installed (`pip install py-spy`).
    """
    spy = shutil.which("py-spy")
    if spy is None:
        logger.warning("py-spy not found: no CPU profile (pip install py-spy)")
        return None
    out = workdir / "py-spy.txt"
    seconds = max(1, round(window))
    argv = [spy, "record", "--pid", str(target.proc.pid), "--duration", str(seconds)]
    argv += ["--rate", str(RATE), "--format", "raw", "--nonblocking", "-o", str(out)]
    endpoints = {target.spec.name: ("127.0.0.1", target.port)}
    cpu0 = cpu_seconds(target.proc.pid)
    start = time.monotonic()
    with PacedScrapers(endpoints, count=scrapers, interval=interval):
        proc = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=seconds + 60
        )
    elapsed = time.monotonic() - start
    cpu = (cpu_seconds(target.proc.pid) - cpu0) / (elapsed / 60)
    if proc.returncode != 0 or not out.exists():
        logger.warning("py-spy failed (%d): %s", proc.returncode, proc.stderr[-500:])
        return None
    by_kind = tally(out.read_text())
    return Profile(
        seconds=elapsed,
        scrapers=scrapers,
        interval=interval,
        samples=sum(by_kind.values()),
        cpu_s_per_min=cpu,
        by_kind=by_kind,
    )
