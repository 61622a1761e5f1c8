"""What each exporter costs the database and the host: pg_stat_statements deltas per role, /proc."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import psycopg

from bench.loadgen import PacedScrapers, fetch
from bench.pgserver import Database
from bench.targets import Running, cpu_seconds, rss_bytes

logger = logging.getLogger(__name__)

ROLES = {"pgrb": "bench_pgrb", "pge": "bench_pge", "qe": "bench_qe"}


def create_roles(db: Database) -> None:
    """One login role per exporter, so pg_stat_statements tells their statements apart."""
    for role in ROLES.values():
        db.add_role(role)
        db.server.execute(
            f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};"
            # Tables created later (the extra-tables phase) are readable too.
            f" ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}",
            dbname="portal",
        )


def statements(dsn: str) -> dict[str, tuple[int, float]]:
    """Calls and execution milliseconds so far, by role."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            b"SELECT r.rolname, sum(s.calls)::bigint, sum(s.total_exec_time)::float8"
            b" FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid GROUP BY 1"
        ).fetchall()
    return {str(r[0]): (int(r[1]), float(r[2])) for r in rows}


@dataclass(frozen=True)
class Load:
    scrapers: int
    interval: float
    window: float
    scrapes: int
    failed_scrapes: int
    statements_per_min: float | None  # None: not a database client (the fixed-bytes server)
    db_ms_per_min: float | None
    cpu_s_per_min: float
    rss_mb: float
    # This exporter's own counts: checks' renders and completed check runs (None for the others)
    renders_per_min: float | None = None
    check_runs_per_min: float | None = None


RENDERS, RUNS = "pgrb_check_renders_total", "pgrb_check_runs_total"


def counted(port: int) -> tuple[float, float] | None:
    """This exporter's renders and check runs so far (sums over checks), from its exposition."""
    text = fetch("127.0.0.1", port).text()
    totals = {RENDERS: 0.0, RUNS: 0.0}
    found = False
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
            found = True
    return (totals[RENDERS], totals[RUNS]) if found else None


def measure(
    dsn: str, targets: dict[str, Running], *, scrapers: int, interval: float, window: float
) -> dict[str, Load]:
    """Run `scrapers` paced scrapers against every target for `window` seconds, all at once.

    All targets run side by side (they are told apart by role and by pid), so a window costs its
    length once, not once per exporter.
    """
    before = statements(dsn)
    counts0 = {name: counted(t.port) for name, t in targets.items() if name == "pgrb"}
    cpu0 = {name: cpu_seconds(t.proc.pid) for name, t in targets.items()}
    start = time.monotonic()
    endpoints = {name: ("127.0.0.1", t.port) for name, t in targets.items()}
    with PacedScrapers(endpoints, count=scrapers, interval=interval) as paced:
        time.sleep(window)
    elapsed = time.monotonic() - start
    cpu1 = {name: cpu_seconds(t.proc.pid) for name, t in targets.items()}
    counts1 = {name: counted(targets[name].port) for name in counts0}
    after = statements(dsn)
    minutes = elapsed / 60
    out: dict[str, Load] = {}
    for name, target in targets.items():
        role = ROLES.get(name)
        stmts = ms = None
        if role is not None:
            c0, t0 = before.get(role, (0, 0.0))
            c1, t1 = after.get(role, (0, 0.0))
            stmts, ms = (c1 - c0) / minutes, (t1 - t0) / minutes
        renders = runs = None
        was, now = counts0.get(name), counts1.get(name)
        if was is not None and now is not None:
            renders, runs = (now[0] - was[0]) / minutes, (now[1] - was[1]) / minutes
        out[name] = Load(
            scrapers=scrapers,
            interval=interval,
            window=elapsed,
            scrapes=paced.scrapes[name],
            failed_scrapes=paced.failures[name],
            statements_per_min=stmts,
            db_ms_per_min=ms,
            cpu_s_per_min=(cpu1[name] - cpu0[name]) / minutes,
            rss_mb=rss_bytes(target.proc.pid) / 2**20,
            renders_per_min=renders,
            check_runs_per_min=runs,
        )
    return out
