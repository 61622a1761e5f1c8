"""The whole soak on a started server: the portal database, the exporter with basic auth, the
load and the faults for `Options.duration`, then the verdict."""

from __future__ import annotations

import asyncio
import logging
import resource
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pg_runbook_exporter import demo
from pg_runbook_exporter.pgserver.throwaway import ThrowawayServer, free_port
from pg_runbook_exporter.web.limits import raise_descriptor_limit
from tools.soak.exporter import (
    USER,
    Exporter,
    LogFigures,
    basic_auth,
    write_config,
    write_web_config,
)
from tools.soak.faults import FaultFigures, Faults
from tools.soak.load import Load, LoadFigures
from tools.soak.verdict import Verdict

logger = logging.getLogger(__name__)


class SoakError(RuntimeError):
    """The soak could not be set up (not a failed invariant)."""


@dataclass(frozen=True)
class Options:
    duration: float = 600.0
    restart_every: float = 120.0
    terminate_every: float = 30.0
    down_for: float = 5.0
    scrapers: int = 64
    scrape_interval: float = 0.25
    scrape_timeout: float = 2.0
    idle_sockets: int = 500
    flood_clients: int = 8
    flood_pause: float = 0.02
    check_interval: float = 5.0
    bcrypt_cost: int = 10
    warm_up: float = 60.0
    max_rss_spread_mib: float = 5.0
    window_margin: float = 5.0
    settle_timeout: float = 120.0


def soak(server: ThrowawayServer, options: Options, workdir: Path) -> Verdict:
    """Run the soak against `server` (started, empty), its files in `workdir`."""
    _descriptors(options)
    url = demo.prepare(server)
    password = secrets.token_urlsafe(18)
    exporter = Exporter(
        workdir,
        database_url=url,
        config=write_config(workdir, options.check_interval),
        web_config=write_web_config(workdir, password, cost=options.bcrypt_cost),
        port=free_port(),
        auth=basic_auth(USER, password),
    )
    try:
        if not exporter.wait_ready(timeout=120.0):
            raise SoakError(f"the exporter did not become ready; see {exporter.log_path}")
        load, faults, rss, started = asyncio.run(_drive(server, exporter, options))
    finally:
        exit_status = exporter.stop()
    database_password = unquote(urlsplit(url).password or "")
    log = LogFigures.read(exporter.log_path, (password, database_password, server.password))
    return Verdict(
        load=load,
        faults=faults,
        log=log,
        rss=rss,
        started=started,
        duration=options.duration,
        warm_up=options.warm_up,
        max_rss_spread_mib=options.max_rss_spread_mib,
        exit_status=exit_status,
    )


def _descriptors(options: Options) -> None:
    """This process holds every client socket: raise its descriptor limit, or say why not."""
    needed = options.idle_sockets + options.scrapers + options.flood_clients + 64
    soft = raise_descriptor_limit()
    if soft < needed:
        raise SoakError(f"needs {needed} open files, the limit is {soft} (ulimit -n)")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    logger.info("open-file limit %d (hard %d), %d needed", soft, hard, needed)


async def _drive(
    server: ThrowawayServer, exporter: Exporter, options: Options
) -> tuple[LoadFigures, FaultFigures, list[tuple[float, int]], float]:
    load = Load(
        exporter.port,
        exporter.auth,
        scrapers=options.scrapers,
        scrape_interval=options.scrape_interval,
        scrape_timeout=options.scrape_timeout,
        idle_sockets=options.idle_sockets,
        flood_clients=options.flood_clients,
        flood_pause=options.flood_pause,
    )
    if not await load.start(ready_timeout=60.0):
        await load.stop()
        raise SoakError("the scrapers did not all get a first scrape within 60 s")
    started = time.monotonic()
    faults = Faults(
        server,
        role=demo.MONITOR_ROLE,
        up=load.figures.up,
        started=started,
        duration=options.duration,
        restart_every=options.restart_every,
        down_for=options.down_for,
        terminate_every=options.terminate_every,
        settle_timeout=options.settle_timeout,
        margin=options.window_margin,
    )
    faults.start()
    logger.info(
        "load running: %d scrapers, %d idle sockets on %s, %d wrong-password clients on %s",
        options.scrapers,
        options.idle_sockets,
        ", ".join(load.idle_addresses),
        options.flood_clients,
        load.flood_address,
    )
    rss: list[tuple[float, int]] = []
    while (elapsed := time.monotonic() - started) < options.duration:
        if not exporter.alive():
            faults.figures.problems.append(f"the exporter exited at {elapsed:.0f} s")
            break
        if (kib := exporter.rss_kib()) is not None:
            rss.append((elapsed, kib))
        await asyncio.sleep(1.0)
    # The load goes on while the last fault settles: its window closes under load too.
    faults.stopping.set()
    await asyncio.to_thread(faults.join, options.settle_timeout + 150.0)
    if faults.is_alive():
        faults.figures.problems.append("the fault driver did not finish")
    await load.stop()
    return load.figures, faults.figures, rss, started
