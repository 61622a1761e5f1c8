"""The integrity counts an exporter reports, and the cost of the id_mappings integrity checks in
the runbook's shape and in the anti-join shape (per-check run times: bench.timing)."""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass

import psycopg

from bench.checks import Check

logger = logging.getLogger(__name__)

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
