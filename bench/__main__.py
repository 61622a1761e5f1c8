"""`python -m bench`: this exporter, postgres_exporter, query-exporter and a fixed-bytes ceiling,
side by side on one throwaway PostgreSQL; writes docs/benchmarks/README.md and a PNG chart.

Needs wrk and prometheus-postgres-exporter (apt) and query-exporter, matplotlib and py-spy (pip;
without py-spy the report has no CPU profile).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
import time
from pathlib import Path

from bench import chart, report
from bench.run import QE_CONFIG_NAME, Options, run

logger = logging.getLogger(__name__)

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
_SCALE = re.compile(r"^(\d+(?:\.\d+)?)([kKmM]?)$")


def scale(text: str) -> int:
    """`1M`, `250k`, `5000` → an integer."""
    match = _SCALE.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (e.g. 1M, 250k, 5000)")
    factor = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
    return int(float(match.group(1)) * factor)


def scales(text: str) -> tuple[int, ...]:
    return tuple(scale(x) for x in text.split(","))


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small scale and 2 s wrk runs, to try the command out (~3 min)",
    )
    p.add_argument("--major", type=int, default=17, help="PostgreSQL major (default 17)")
    p.add_argument("--users", type=scale, default=None, help="users rows (default 1M)")
    p.add_argument(
        "--mappings",
        type=scales,
        default=None,
        help="id_mappings sizes to measure the integrity checks at, grown in turn "
        "(default: as many as users; e.g. 1M,10M)",
    )
    p.add_argument(
        "--extra-tables",
        type=scale,
        default=0,
        help="after the main phase, create this many tables and measure again",
    )
    p.add_argument("--connections", type=ints, default=(1, 8, 64))
    p.add_argument("--duration", type=float, default=None, help="seconds per wrk run (10)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3)")
    p.add_argument(
        "--load-window", type=float, default=None, help="seconds of each database-load window (60)"
    )
    p.add_argument(
        "--load-scrapers",
        type=ints,
        default=(1, 2, 4),
        help="scrapers per exporter in each load window; 2 is the headline figure",
    )
    p.add_argument("--scrape-interval", type=float, default=15.0)
    p.add_argument(
        "--timing-runs",
        type=int,
        default=None,
        help="runs of every check (and psql passes) behind each per-check median (5; --quick 3)",
    )
    p.add_argument(
        "--integrity-timeout",
        type=float,
        default=60.0,
        help="statement_timeout for each integrity-check shape (s)",
    )
    p.add_argument(
        "--only",
        type=lambda s: tuple(s.split(",")),
        default=("pgrb", "pge", "qe"),
        help="exporters to run (pgrb,pge,qe); the fixed-bytes ceiling always runs",
    )
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--no-write", action="store_true", help="print the table only")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def options(ns: argparse.Namespace) -> Options:
    quick = ns.quick
    users = ns.users or (20_000 if quick else 1_000_000)
    return Options(
        major=ns.major,
        users=users,
        mappings=ns.mappings or (users,),
        extra_tables=ns.extra_tables,
        connections=ns.connections,
        duration=ns.duration or (2.0 if quick else 10.0),
        rounds=ns.rounds or (1 if quick else 3),
        load_window=ns.load_window or (15.0 if quick else 60.0),
        load_scrapers=ns.load_scrapers,
        scrape_interval=ns.scrape_interval if not quick else min(ns.scrape_interval, 5.0),
        integrity_timeout=ns.integrity_timeout if not quick else min(ns.integrity_timeout, 10.0),
        only=ns.only,
        timing_runs=ns.timing_runs or (3 if quick else 5),
        quick=quick,
        profile_window=15.0 if quick else 60.0,
    )


def main(argv: list[str] | None = None) -> int:
    ns = parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
        datefmt="%H:%M:%S",
    )
    missing = [t for t in ("wrk", "psql") if shutil.which(t) is None]
    if "pge" in ns.only and shutil.which("prometheus-postgres-exporter") is None:
        missing.append("prometheus-postgres-exporter")
    if "qe" in ns.only and shutil.which("query-exporter") is None:
        missing.append("query-exporter")
    if missing:
        logger.error(
            "missing: %s (apt install wrk prometheus-postgres-exporter "
            "postgresql-client; pip install '.[bench]')",
            ", ".join(missing),
        )
        return 2
    opts = options(ns)
    started = time.monotonic()
    results = run(opts)
    results["wall_seconds"] = time.monotonic() - started
    results["environment"] = report.environment(opts.major)
    table = report.markdown(results)
    print(table)
    if not ns.no_write:
        out: Path = ns.out
        out.mkdir(parents=True, exist_ok=True)
        (out / QE_CONFIG_NAME).write_text(results.pop("query_exporter_config"))
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
        (out / "README.md").write_text(table)
        chart.chart(results, out / "scrapes.png")
        logger.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
