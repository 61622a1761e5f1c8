"""Per-check run times: this exporter against the same SQL through psql, in a quiet window.

A separate exporter process runs a copy of queries.yaml whose intervals are all lowered to one
value (the longest check timeout, as the loader refuses a timeout longer than the interval), so
every check runs once per cycle, in the same order, every `interval` seconds. Nothing else
touches the database meanwhile. After each cycle, psql runs the same statements in the same
order in one long-lived session, in the gap before the next cycle; a psql pass that ran into the
next cycle is discarded. Exporter runs and psql passes therefore alternate, so drift on the shared
machine affects both alike.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import statistics
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
import yaml

from bench import targets
from bench.checks import Check, Resolved
from bench.loadgen import fetch

logger = logging.getLogger(__name__)

_TIME = re.compile(r"^Time: ([0-9.]+) ms", re.MULTILINE)
_SAMPLE = re.compile(r'^(\w+)\{check="([^"]*)"\} ([0-9.eE+-]+)$', re.MULTILINE)
_MARK = "BENCH-PASS-END"
_PSQL = ("psql", "-X", "-q", "-A", "-t", "-o", "/dev/null", "-v", "ON_ERROR_STOP=0")
# A psql pass must end this long before the next exporter cycle is due to count as quiet.
_SLACK = 0.2


def timing_config(source: Path, dest: Path, *, interval: float) -> Path:
    """A copy of `source` whose every check runs each `interval` seconds; nothing else changes."""
    doc = yaml.safe_load(source.read_text())
    for spec in (doc.get("checks", {}) or {}).values():
        spec["interval"] = f"{interval:g}s"
    dest.write_text(yaml.safe_dump(doc, sort_keys=False, width=100))
    return dest


def _by_check(exposition: str, metric: str) -> dict[str, float]:
    return {
        check: float(value) for name, check, value in _SAMPLE.findall(exposition) if name == metric
    }


class PsqlSession:
    """One psql process kept open: every pass runs in the same server session (`\\timing`)."""

    def __init__(self, dsn: str, *, workdir: Path) -> None:
        self._out_path = workdir / "psql-timing.out"
        self._err_path = workdir / "psql-timing.err"
        self._dsn = dsn
        self._proc: subprocess.Popen[str] | None = None
        self._marks = 0
        self._read = 0  # Time lines already taken
        self.errors: list[str] = []

    def __enter__(self) -> PsqlSession:
        with self._out_path.open("w") as out, self._err_path.open("w") as err:
            self._proc = subprocess.Popen(
                [*_PSQL, "-d", self._dsn],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                text=True,
            )
        self._send("\\timing on\n")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is None:
            return
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)

    def _send(self, text: str) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(text)
        self._proc.stdin.flush()

    def run_pass(self, checks: tuple[Check, ...], *, timeout: float) -> list[float]:
        """Seconds of each statement, in order. psql prints a Time line for a failed statement
        too, so the lines stay aligned; the error text is kept in `errors`."""
        self._marks += 1
        # \warn goes to stderr unbuffered: once the mark is there, the pass has finished.
        self._send("".join(f"{c.sql};\n" for c in checks) + f"\\warn {_MARK}\n")
        deadline = time.monotonic() + timeout
        while self._err_path.read_text().count(_MARK) < self._marks:
            if time.monotonic() > deadline:
                raise RuntimeError(f"psql pass did not finish within {timeout:.0f}s")
            time.sleep(0.02)
        times: list[float] = []
        while len(times) < len(checks):
            times = [float(t) / 1000 for t in _TIME.findall(self._out_path.read_text())]
            times = times[self._read : self._read + len(checks)]
            if time.monotonic() > deadline:
                raise RuntimeError(f"psql printed {len(times)} of {len(checks)} Time lines")
            time.sleep(0.02)
        self._read += len(checks)
        errors = [
            line
            for line in self._err_path.read_text().splitlines()
            if line.strip() and _MARK not in line
        ]
        for line in errors[len(self.errors) :]:
            logger.warning("psql: %s", line)
        self.errors = errors
        return times


@dataclasses.dataclass(frozen=True)
class Window:
    interval: float
    exporter: dict[str, list[float]]  # check → seconds of each run
    psql: dict[str, list[float]]  # check → seconds of each clean pass
    discarded_passes: int
    psql_errors: tuple[str, ...]
    seconds: float


def _checkpoint(superuser_dsn: str) -> None:
    # Dirty buffers left by seeding would otherwise be written out during the window.
    with psycopg.connect(superuser_dsn, autocommit=True) as conn:
        conn.execute(b"CHECKPOINT")


def measure(
    *,
    role_dsn: str,
    superuser_dsn: str,
    resolved: Resolved,
    queries: Path,
    workdir: Path,
    runs: int,
    name: str,
) -> Window:
    """Run the exporter alone on the lowered intervals until every check ran `runs` times and
    psql made `runs` clean passes (or a deadline passed; the counts then say how many)."""
    checks = resolved.checks
    interval = max(c.timeout for c in checks)
    config = timing_config(queries, workdir / f"{name}-queries.yaml", interval=interval)
    _checkpoint(superuser_dsn)
    spec = targets.this_exporter(dsn=role_dsn, queries=config, port=targets.new_port())
    since = time.time()
    running = targets.start(dataclasses.replace(spec, name=name), logdir=workdir)
    started = time.monotonic()
    deadline = started + (runs + 3) * interval + 60
    seen: dict[str, dict[float, float]] = {}  # check → last-success stamp → duration
    psql: dict[str, list[float]] = {c.name: [] for c in checks}
    discarded, tried = 0, 0
    metric_d = f"{resolved.namespace}_check_duration_seconds"
    metric_t = f"{resolved.namespace}_check_last_success_timestamp_seconds"
    try:
        with PsqlSession(role_dsn, workdir=workdir) as session:
            while time.monotonic() < deadline:
                if running.proc.poll() is not None:
                    raise RuntimeError(
                        f"timing exporter exited: {running.log.read_text(errors='replace')[-2000:]}"
                    )
                try:
                    text = fetch("127.0.0.1", running.port, timeout=10).text()
                except OSError:
                    time.sleep(0.25)
                    continue
                durations, stamps = _by_check(text, metric_d), _by_check(text, metric_t)
                for check, secs in durations.items():
                    if stamps.get(check, 0.0) >= since:
                        seen.setdefault(check, {})[stamps[check]] = secs
                cycles = min((len(seen.get(c.name, {})) for c in checks), default=0)
                clean = min(len(v) for v in psql.values())
                if cycles >= runs and clean >= runs:
                    break
                if cycles > tried:
                    # The cycle just ended; the next one starts one interval after this one did.
                    tried = cycles
                    latest = [max(seen[c.name].items()) for c in checks]
                    next_cycle = min(stamp - secs for stamp, secs in latest) + interval
                    times = session.run_pass(checks, timeout=interval * 3)
                    if time.time() <= next_cycle - _SLACK:
                        for timed, secs in zip(checks, times, strict=True):
                            psql[timed.name].append(secs)
                    else:
                        discarded += 1
                        logger.warning("%s: a psql pass overlapped the next cycle", name)
                time.sleep(0.25)
            errors = tuple(session.errors)
    finally:
        targets.stop(running)
    window = Window(
        interval=interval,
        exporter={c: list(v.values()) for c, v in seen.items()},
        psql=psql,
        discarded_passes=discarded,
        psql_errors=errors,
        seconds=time.monotonic() - started,
    )
    logger.info(
        "%s: %d-%d exporter runs per check, %d clean psql passes in %.0fs",
        name,
        min((len(v) for v in window.exporter.values()), default=0),
        max((len(v) for v in window.exporter.values()), default=0),
        min(len(v) for v in psql.values()),
        window.seconds,
    )
    return window


def summary(window: Window) -> dict[str, Any]:
    """Median of each side per check, and the whole cycle as the sum of per-check medians."""
    both = [c for c in window.psql if window.psql[c] and window.exporter.get(c)]
    per_check: dict[str, dict[str, Any]] = {
        c: {
            "exporter_s": statistics.median(window.exporter[c]),
            "psql_s": statistics.median(window.psql[c]),
            "runs": len(window.exporter[c]),
            "psql_runs": len(window.psql[c]),
            "exporter_runs_s": window.exporter[c],
            "psql_runs_s": window.psql[c],
        }
        for c in both
    }
    return {
        "per_check": per_check,
        "exporter_cycle_s": sum(x["exporter_s"] for x in per_check.values()),
        "psql_cycle_s": sum(x["psql_s"] for x in per_check.values()),
        "interval_s": window.interval,
        "psql_passes": min((x["psql_runs"] for x in per_check.values()), default=0),
        "discarded_psql_passes": window.discarded_passes,
        "psql_errors": list(window.psql_errors),
        "window_s": window.seconds,
    }
