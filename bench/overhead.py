"""The exporter's own overhead: its check run times against the same SQL through psql, and the
cost of the id_mappings integrity checks in the runbook's shape and in the anti-join shape."""

from __future__ import annotations

import logging
import re
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

import psycopg

from bench.checks import Check
from bench.loadgen import fetch

logger = logging.getLogger(__name__)

_TIME = re.compile(r"^Time: ([0-9.]+) ms", re.MULTILINE)
_SAMPLE = re.compile(r'^(\w+)\{check="([^"]*)"\} ([0-9.eE+-]+)$', re.MULTILINE)


def psql_times(dsn: str, checks: tuple[Check, ...], *, repeat: int) -> dict[str, float]:
    """Median seconds of each check's SQL run by psql in one session (`\\timing`)."""
    script = "\\timing on\n" + "".join(f"{c.sql};\n" for c in checks) * repeat
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as f:
        f.write(script)
        f.flush()
        proc = subprocess.run(
            [
                "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-o",
                "/dev/null",
                "-v",
                "ON_ERROR_STOP=0",
                "-d",
                dsn,
                "-f",
                f.name,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
    times = [float(m) / 1000 for m in _TIME.findall(proc.stdout)]
    if len(times) != len(checks) * repeat:
        raise RuntimeError(f"psql timed {len(times)} of {len(checks) * repeat}: {proc.stderr}")
    return {
        c.name: statistics.median(times[i + k * len(checks)] for k in range(repeat))
        for i, c in enumerate(checks)
    }


def _by_check(exposition: str, metric: str) -> dict[str, float]:
    return {
        check: float(value) for name, check, value in _SAMPLE.findall(exposition) if name == metric
    }


class DurationSampler:
    """Collects this exporter's check run times while it runs undisturbed (the load windows).

    Every run of a check is recorded once, keyed by its last-success timestamp, so a check that
    ran several times contributes several samples; `medians()` gives the typical run.
    """

    def __init__(
        self, port: int, *, namespace: str, every: float = 1.0, since: float = 0.0
    ) -> None:
        self._since = since  # Unix time: runs that succeeded earlier are ignored
        self._port = port
        self._ns = namespace
        self._every = every
        self._runs: dict[str, dict[float, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="durations")

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            try:
                text = fetch("127.0.0.1", self._port, timeout=10).text()
            except OSError:
                continue
            durations = _by_check(text, f"{self._ns}_check_duration_seconds")
            stamps = _by_check(text, f"{self._ns}_check_last_success_timestamp_seconds")
            for check, secs in durations.items():
                if stamps.get(check, 0.0) >= self._since:
                    self._runs.setdefault(check, {})[stamps[check]] = secs

    def __enter__(self) -> DurationSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def medians(self) -> dict[str, float]:
        return {c: statistics.median(runs.values()) for c, runs in self._runs.items() if runs}

    def samples(self) -> dict[str, int]:
        return {c: len(runs) for c, runs in self._runs.items()}


_FAULT_METRICS = {
    "orphaned_mappings": "id_mappings_orphaned",
    "duplicate_whmcs_groups": "id_mappings_duplicate_whmcs_ids",
    "duplicate_sf_groups": "id_mappings_duplicate_sf_ids",
}


def reported_faults(exposition: str) -> dict[str, float]:
    """The integrity counts an exporter reports (any namespace, labels ignored, values summed)."""
    found: dict[str, float] = {}
    for line in exposition.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        for fault, suffix in _FAULT_METRICS.items():
            if name.endswith(suffix):
                found[fault] = found.get(fault, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


@dataclass(frozen=True)
class Shape:
    name: str
    sql: str
    seconds: float | None  # None: cancelled at the statement timeout
    estimated_cost: float
    result: int | None


# The runbook's own statements (its DELETE's condition counted instead of deleted) beside the
# shape queries.yaml uses.
SHAPES = {
    "runbook NOT IN": (
        "SELECT count(*) FROM id_mappings WHERE user_id NOT IN (SELECT id FROM users)"
    ),
    "runbook LEFT JOIN … IS NULL": (
        "SELECT count(*) FROM id_mappings m LEFT JOIN users u ON m.user_id = u.id"
        " WHERE u.id IS NULL"
    ),
    "NOT EXISTS (anti-join)": (
        "SELECT count(*) FROM id_mappings m"
        " WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = m.user_id)"
    ),
    "runbook duplicate WHMCS": (
        "SELECT count(*) FROM (SELECT whmcs_client_id FROM id_mappings"
        " WHERE whmcs_client_id IS NOT NULL GROUP BY whmcs_client_id HAVING COUNT(*) > 1) d"
    ),
    "runbook duplicate Salesforce": (
        "SELECT count(*) FROM (SELECT sf_account_id FROM id_mappings"
        " WHERE sf_account_id IS NOT NULL GROUP BY sf_account_id HAVING COUNT(*) > 1) d"
    ),
}


def _cost(conn: psycopg.Connection[tuple[object, ...]], sql: str) -> float:
    row = conn.execute(f"EXPLAIN (FORMAT JSON) {sql}".encode()).fetchone()
    plan = row[0] if row else [{}]
    return float(plan[0]["Plan"]["Total Cost"])  # type: ignore[index]


def integrity_shapes(
    dsn: str, *, checks: tuple[Check, ...], timeout_s: float, repeat: int = 3
) -> list[Shape]:
    """Time each shape (median of `repeat`; one try for a shape that hits the timeout)."""
    shapes = dict(SHAPES)
    for check in checks:
        shapes[f"queries.yaml {check.name}"] = check.sql
    out: list[Shape] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET statement_timeout = '{int(timeout_s * 1000)}ms'".encode())
        for name, sql in shapes.items():
            cost = _cost(conn, sql)
            runs: list[float] = []
            result: int | None = None
            for _ in range(repeat):
                start = time.perf_counter()
                try:
                    row = conn.execute(sql.encode()).fetchone()
                except psycopg.errors.QueryCanceled:
                    runs = []
                    break
                runs.append(time.perf_counter() - start)
                first = row[0] if row else None
                result = int(str(first)) if isinstance(first, int) else None
            out.append(
                Shape(
                    name=name,
                    sql=sql,
                    seconds=statistics.median(runs) if runs else None,
                    estimated_cost=cost,
                    result=result,
                )
            )
            logger.info("integrity %s: %s s", name, out[-1].seconds)
    return out
