"""The last result of every check, recorded by the collection threads and read as snapshots.

The cache holds states only: rendering them is the renderer's job (``collector.py``), which is
handed a snapshot after each run. State changes (a check starts failing, recovers, is skipped) are
logged once, never once per retry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pg_runbook_exporter.config import Check, Config
from pg_runbook_exporter.errors import CheckError, FailureReason, SkipReason
from pg_runbook_exporter.samples import Samples

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckState:
    """What is known about one check; replaced, never mutated, so snapshots are cheap."""

    check: Check
    samples: Samples | None = None
    success: bool | None = None  # None: never ran, or skipped
    skipped: SkipReason | None = None
    duration: float | None = None
    last_success: float | None = None  # wall clock, exported
    last_success_monotonic: float | None = None  # decides staleness
    errors: tuple[tuple[FailureReason, int], ...] = tuple((r, 0) for r in FailureReason)
    last_error: CheckError | None = None
    runs: int = 0  # completed: succeeded, failed or skipped

    @property
    def ran(self) -> bool:
        return self.success is not None or self.skipped is not None

    def serving(self, now: float) -> Samples | None:
        """The samples to export now: the last success's, until they are too old."""
        if self.samples is None or self.skipped is not None:
            return None
        if self.success:
            return self.samples
        if self.last_success_monotonic is None:
            return None
        fresh = now - self.last_success_monotonic <= self.check.stale_after
        return self.samples if fresh else None


@dataclass(frozen=True)
class Snapshot:
    config: Config
    up: bool | None
    states: tuple[CheckState, ...]
    taken_at: float = field(default_factory=time.monotonic)


class ResultCache:
    def __init__(
        self,
        *,
        config: Config,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()
        self._states = {c.name: CheckState(check=c) for c in config.checks}
        self._up: bool | None = None

    # -- recording ------------------------------------------------------------------------

    def record_success(self, name: str, samples: Samples, duration: float) -> None:
        with self._lock:
            old = self._states[name]
            if old.success is False:
                logger.info("check %s: recovered", name)
            elif old.skipped is not None:
                logger.info("check %s: runs again (was skipped: %s)", name, old.skipped)
            if samples.truncated and not (old.samples and old.samples.truncated):
                logger.warning(
                    "check %s: more rows than max_series=%d; the rest are dropped",
                    name,
                    old.check.max_series,
                )
            self._states[name] = replace(
                old,
                samples=samples,
                success=True,
                skipped=None,
                duration=duration,
                last_success=self._wall_clock(),
                last_success_monotonic=self._clock(),
                last_error=None,
                runs=old.runs + 1,
            )

    def record_failure(self, name: str, error: CheckError, duration: float) -> None:
        with self._lock:
            old = self._states[name]
            was = old.last_error.reason if old.last_error is not None else None
            if old.success is not False or was is not error.reason:
                # a lost connection is logged once by the session, not once per check
                level = (
                    logging.DEBUG if error.reason is FailureReason.CONNECTION else logging.WARNING
                )
                logger.log(level, "check %s failed (%s): %s", name, error.reason, error.message)
            errors = tuple((r, n + 1 if r is error.reason else n) for r, n in old.errors)
            self._states[name] = replace(
                old,
                success=False,
                skipped=None,
                duration=duration,
                errors=errors,
                last_error=error.detached(),
                runs=old.runs + 1,
            )

    def record_skip(self, name: str, reason: SkipReason) -> None:
        with self._lock:
            old = self._states[name]
            if old.skipped != reason:
                logger.info("check %s: skipped (%s)", name, reason)
            self._states[name] = replace(
                old,
                samples=None,
                success=None,
                skipped=reason,
                duration=None,
                last_error=None,
                runs=old.runs + 1,
            )

    def set_up(self, up: bool) -> None:
        with self._lock:
            self._up = up

    # -- reading --------------------------------------------------------------------------

    def state(self, name: str) -> CheckState:
        """The check's state now (states are replaced, never changed)."""
        with self._lock:
            return self._states[name]

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                config=self.config,
                up=self._up,
                states=tuple(self._states.values()),
                taken_at=self._clock(),
            )

    def ready(self) -> tuple[bool, str]:
        """Ready once the database answered and every check has run at least once."""
        snap = self.snapshot()
        if not snap.up:
            return False, "database not reachable" if snap.up is False else "not connected yet"
        waiting = [s.check.name for s in snap.states if not s.ran]
        if waiting:
            return False, f"first collection not finished: {', '.join(waiting)}"
        return True, "ready"
