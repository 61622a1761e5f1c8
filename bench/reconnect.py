"""`python -m bench.reconnect`: how fast the exporter notices a lost session and is back, measured
on a throwaway PostgreSQL on loopback (figures, not a test).

Every database check runs each 60 s, so "back" is the time until every check that succeeded before
has succeeded again: a check run at its interval would take a minute. Three figures, each repeated:
``pg_terminate_backend`` of the exporter's session → every check run again; ``pg_ctl restart``
(fast) → every check run again, counted from the server accepting connections; a proxy that stops
relaying mid-session → ``pgrb_up`` 0 (checks every second here, so a run meets the hung path).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Callable

from pg_runbook_exporter.config import Config, load_config
from pg_runbook_exporter.pgserver.throwaway import ThrowawayServer
from pg_runbook_exporter.session import APPLICATION_NAME
from tests.support.collect import Serving, serving
from tests.support.proxy import HangingProxy


@dataclasses.dataclass(frozen=True)
class Limit:
    """How long to wait for one figure; past it the figure is reported as "> limit"."""

    seconds: float = 150.0


def database_checks(interval: float) -> Config:
    config = load_config()
    checks = tuple(
        dataclasses.replace(c, interval=interval) for c in config.checks if c.source is None
    )
    return dataclasses.replace(config, checks=checks)


def poll(predicate: Callable[[], bool], limit: Limit = Limit()) -> float | None:
    """Seconds until ``predicate()`` holds, polled every 10 ms; None past the limit."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > limit.seconds:
            return None
        time.sleep(0.01)
    return time.monotonic() - start


def successes(served: Serving) -> dict[str, float | None]:
    return {s.check.name: s.last_success_monotonic for s in served.cache.snapshot().states}


def all_ran_again(served: Serving, before: dict[str, float | None]) -> Callable[[], bool]:
    ran = [name for name, at in before.items() if at is not None]

    def holds() -> bool:
        now = successes(served)
        return served.cache.snapshot().up is True and all(now[n] != before[n] for n in ran)

    return holds


def settled(served: Serving) -> dict[str, float | None]:
    """After the first collection (every check ran once)."""
    poll(lambda: all(s.ran for s in served.cache.snapshot().states))
    return successes(served)


def shown(seconds: float | None, limit: Limit) -> str:
    return f"> {limit.seconds:g} s" if seconds is None else f"{seconds:.2f} s"


def terminate(server: ThrowawayServer, repeat: int, limit: Limit) -> list[float | None]:
    figures: list[float | None] = []
    with serving(server.dsn(), database_checks(60.0)) as served:
        for _ in range(repeat):
            before = settled(served)
            time.sleep(1)  # idle between runs, as most of the time
            server.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (APPLICATION_NAME,),
            )
            figures.append(poll(all_ran_again(served, before), limit))
    return figures


def restart(server: ThrowawayServer, repeat: int, limit: Limit) -> list[float | None]:
    figures: list[float | None] = []
    with serving(server.dsn(), database_checks(60.0)) as served:
        for _ in range(repeat):
            before = settled(served)
            time.sleep(1)
            server.stop("fast")
            server.start()  # returns once the server accepts connections
            figures.append(poll(all_ran_again(served, before), limit))
    return figures


def hung(server: ThrowawayServer, repeat: int, limit: Limit) -> list[float | None]:
    return [hang_once(server, limit) for _ in range(repeat)]


def hang_once(server: ThrowawayServer, limit: Limit) -> float | None:
    proxy = HangingProxy(server.tcp_address())
    host, port = server.tcp_address()
    dsn = server.dsn().replace(f"@{host}:{port}/", f"@127.0.0.1:{proxy.port}/")
    try:
        with serving(dsn, database_checks(1.0)) as served:
            settled(served)
            poll(lambda: served.cache.snapshot().up is True)
            proxy.hang()
            figure = poll(lambda: served.cache.snapshot().up is False, limit)
            proxy.relay()  # so that stopping does not wait on the hung path
            return figure
    finally:
        proxy.close()


FIGURES = (
    ("terminate", "`pg_terminate_backend` of its session → every check ran again", terminate),
    ("restart", "restart (from accepting connections) → every check ran again", restart),
    ("hung", "a proxy that stops relaying → `pgrb_up` 0", hung),
)


def measure(
    *, major: int, repeat: int, limit: Limit = Limit(), only: tuple[str, ...] = ()
) -> dict[str, list[float | None]]:
    """Each figure's seconds, `repeat` times, on a throwaway server of its own."""
    found: dict[str, list[float | None]] = {}
    with ThrowawayServer(major=major) as server:
        for name, _, figure in FIGURES:
            if not only or name in only:
                found[name] = figure(server, repeat, limit)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--major", type=int, default=17)
    parser.add_argument("--limit", type=float, default=150.0, help="seconds to wait per figure")
    parser.add_argument("--only", choices=("terminate", "restart", "hung"), action="append")
    args = parser.parse_args()
    limit = Limit(args.limit)
    logging.basicConfig(level=logging.ERROR)
    found = measure(major=args.major, repeat=args.repeat, limit=limit, only=tuple(args.only or ()))
    for name, what, _ in FIGURES:
        if name in found:
            print(f"{what}: {', '.join(shown(f, limit) for f in found[name])}", flush=True)


if __name__ == "__main__":
    main()
