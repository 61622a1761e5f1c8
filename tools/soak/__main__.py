"""`python -m tools.soak`: the exporter under 64 keep-alive scrapers for 10 minutes while the
database restarts every 2 minutes, its sessions are terminated between restarts, wrong passwords
flood in and 500 sockets sit idle; prints the figures and exits 1 when an invariant failed.

Invariants: no failed authenticated scrape outside the restart windows (a window runs from just
before `pg_ctl stop` until the exporter is back on the new server, plus a margin), no traceback in
the exporter's log, one 'lost the database' and one 'connected again' line per restart and per
terminated session, RSS within 5 MiB after the warm-up, no wrong password served, no password in
the log. Everything listens on 127.0.0.x; the server and files are removed at the end (the files
are kept when an invariant failed).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

from pg_runbook_exporter.pgserver.binaries import BinariesUnavailable
from pg_runbook_exporter.pgserver.throwaway import ThrowawayServer
from tools.soak.run import Options, SoakError, soak

_HELP = {
    "duration": "seconds of load",
    "restart_every": "seconds between database restarts",
    "terminate_every": "seconds between terminations of the exporter's sessions",
    "down_for": "seconds the database stays stopped in a restart",
    "scrapers": "keep-alive authenticated scrapers",
    "scrape_interval": "seconds between one scraper's scrapes",
    "scrape_timeout": "seconds a scrape may take before it counts as failed",
    "idle_sockets": "sockets held open without sending a byte",
    "flood_clients": "clients sending wrong passwords",
    "flood_pause": "seconds each flood client waits between requests",
    "check_interval": "interval of every check, seconds",
    "bcrypt_cost": "cost of the web config's bcrypt hash",
    "warm_up": "seconds of RSS left out before judging it flat",
    "max_rss_spread_mib": "largest RSS spread (max - min) after the warm-up",
    "window_margin": "seconds a restart window stays open after the exporter is back",
    "settle_timeout": "seconds the exporter may take to come back after a fault",
}


def parse(argv: list[str]) -> tuple[Options, int]:
    parser = argparse.ArgumentParser(
        prog="python -m tools.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = Options()
    for option in fields(Options):
        default = getattr(defaults, option.name)
        parser.add_argument(
            "--" + option.name.replace("_", "-"),
            type=type(default),
            default=default,
            help=f"{_HELP[option.name]} (default {default:g})",
        )
    parser.add_argument("--major", type=int, default=17, help="PostgreSQL major (default 17)")
    args = vars(parser.parse_args(argv))
    major = args.pop("major")
    return Options(**args), major


def main(argv: list[str]) -> int:
    options, major = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    workdir = Path(tempfile.mkdtemp(prefix="pgrb-soak-"))
    try:
        with ThrowawayServer(major=major) as server:
            verdict = soak(server, options, workdir)
    except (SoakError, BinariesUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"command: python -m tools.soak {' '.join(argv)}".rstrip())
    print(verdict.summary())
    if verdict.passed:
        shutil.rmtree(workdir, ignore_errors=True)
        return 0
    print(f"files kept in {workdir}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
