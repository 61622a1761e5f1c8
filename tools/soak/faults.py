"""What the soak does to the database: a restart every few minutes (down for a few seconds, so
the exporter retries while it is down) and, between them, the exporter's sessions terminated;
each restart opens a window that closes only once the exporter is back on the new server, so no
figure depends on how fast it reconnects.

After every fault the driver waits until the exporter has a session again (seen in
`pg_stat_activity`, at least ``SETTLED_S`` old, so past its connect-time queries) and a scrape
sent after that says `pgrb_up 1`. The next fault comes only then: each fault is one lost and one
regained database for the exporter, never two merged into one.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field

import psycopg

from pg_runbook_exporter.pgserver.throwaway import ThrowawayServer
from pg_runbook_exporter.session import APPLICATION_NAME

logger = logging.getLogger(__name__)

SETTLED_S = 2.0
QUIET_TAIL_S = 15.0  # no fault starts this close to the end: the last one settles in time
_EXPORTER_SESSIONS = """
SELECT count(*) FROM pg_stat_activity
WHERE usename = %(role)s AND application_name = %(app)s
  AND backend_start <= now() - make_interval(secs => %(age)s)
"""
_TERMINATE = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE usename = %(role)s AND application_name = %(app)s
"""


@dataclass
class Window:
    """A restart: from just before `pg_ctl stop` until the exporter is back, plus `margin`."""

    start: float
    margin: float
    database_back: float | None = None
    exporter_back: float | None = None

    @property
    def end(self) -> float:
        """Open (infinite) while the exporter has not come back."""
        return math.inf if self.exporter_back is None else self.exporter_back + self.margin


@dataclass(frozen=True)
class Termination:
    at: float
    backends: int  # exporter sessions pg_terminate_backend ended
    exporter_back: float | None


@dataclass
class FaultFigures:
    windows: list[Window] = field(default_factory=list)
    terminations: list[Termination] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def state_changes(self) -> int:
        """Times the exporter lost the database: each restart and each terminated session."""
        return len(self.windows) + sum(t.backends for t in self.terminations)


class Faults(threading.Thread):
    """Drives the faults from `started` for `duration` seconds (see the module docstring)."""

    def __init__(
        self,
        server: ThrowawayServer,
        *,
        role: str,
        up: list[tuple[float, bool]],
        started: float,
        duration: float,
        restart_every: float,
        down_for: float,
        terminate_every: float,
        settle_timeout: float,
        margin: float,
    ) -> None:
        super().__init__(name="soak-faults", daemon=True)
        self.server = server
        self.role = role
        self.up = up
        self.started = started
        self.duration = duration
        self.restart_every = restart_every
        self.down_for = down_for
        self.terminate_every = terminate_every
        self.settle_timeout = settle_timeout
        self.margin = margin
        self.figures = FaultFigures()
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            self._drive()
        except Exception as exc:  # reported in the verdict: the soak itself broke
            self.figures.problems.append(f"the fault driver stopped: {exc!r}")

    def _drive(self) -> None:
        quiet_from = self.started + self.duration - QUIET_TAIL_S
        next_restart = self.started + self.restart_every
        next_terminate = self.started + self.terminate_every
        while not self.stopping.is_set():
            due = [
                (at, kind)
                for at, kind in [(next_restart, "restart"), (next_terminate, "terminate")]
                if at < quiet_from
            ]
            if not due:
                return
            at, kind = min(due)  # a restart first when both are due
            if time.monotonic() < at:
                self.stopping.wait(at - time.monotonic())
            elif kind == "restart":
                self._restart()
                next_restart += self.restart_every
            else:
                self._terminate()
                next_terminate += self.terminate_every

    def _restart(self) -> None:
        window = Window(start=time.monotonic(), margin=self.margin)
        self.figures.windows.append(window)
        self.server.stop("fast")
        # Down long enough for the exporter to retry a few times: a line per retry would show.
        time.sleep(self.down_for)
        self.server.start()
        window.database_back = time.monotonic()
        window.exporter_back = self._settle(f"restart {len(self.figures.windows)}")
        logger.info("restart %d done", len(self.figures.windows))

    def _terminate(self) -> None:
        at = time.monotonic()
        rows = self.server.execute(_TERMINATE, {"role": self.role, "app": APPLICATION_NAME})
        ended = sum(1 for (done,) in rows if done)
        back = self._settle(f"termination {len(self.figures.terminations) + 1}")
        self.figures.terminations.append(Termination(at=at, backends=ended, exporter_back=back))

    def _settle(self, after: str) -> float | None:
        """When the exporter was back (see the module docstring), or None past the timeout."""
        deadline = time.monotonic() + self.settle_timeout
        connected_at: float | None = None
        while time.monotonic() < deadline:
            if connected_at is None and self._exporter_sessions() > 0:
                connected_at = time.monotonic()
            if connected_at is not None and self._up_since(connected_at):
                return time.monotonic()
            time.sleep(0.25)
        self.figures.problems.append(
            f"the exporter was not back within {self.settle_timeout:g} s after {after}"
        )
        return None

    def _exporter_sessions(self) -> int:
        params = {"role": self.role, "app": APPLICATION_NAME, "age": SETTLED_S}
        try:
            rows = self.server.execute(_EXPORTER_SESSIONS, params)
        except psycopg.Error:
            return 0  # still starting up
        return int(rows[0][0])

    def _up_since(self, since: float) -> bool:
        for sent, up in reversed(self.up):
            if sent < since:
                return False
            if up:
                return True
        return False
