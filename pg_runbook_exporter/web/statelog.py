"""One log line when a condition starts and one when it has been absent a while, however often
it recurs between."""

from __future__ import annotations

import logging
from collections.abc import Callable

HOLD_DOWN = 5.0
"""Seconds without an occurrence before a condition counts as ended."""


class StateLog:
    """Logs the first occurrence of a condition, counts the rest, and logs `end` with the count
    once the condition has not occurred for `HOLD_DOWN` seconds.

    A flood (a descriptor shortage retried on every accept, a password guessed a thousand times)
    then costs two lines instead of one per event, also when it comes and goes between events:
    a password queue that drains between guesses, a scraper's login between failed ones. The end
    is noticed at the next occurrence or at `settle`, which the server calls each tick.
    """

    def __init__(
        self,
        logger: logging.Logger,
        end: str,
        clock: Callable[[], float],
        level: int = logging.WARNING,
    ) -> None:
        self.logger = logger
        self.end = end
        """Logged with `%(count)d` (occurrences) and `%(seconds)g` (the hold-down) filled in."""
        self.clock = clock
        self.level = level
        self.count = 0
        self.last: float | None = None  # the latest occurrence, while the condition lasts

    def occurred(self, message: str, *args: object, exc_info: bool = False) -> None:
        now = self.clock()
        self.settle(now)
        if self.last is None:
            self.logger.log(self.level, message, *args, exc_info=exc_info)
        self.count += 1
        self.last = now

    def settle(self, now: float) -> None:
        """Log the end if the condition has lasted and not occurred for `HOLD_DOWN` seconds."""
        if self.last is not None and now - self.last >= HOLD_DOWN:
            self.logger.log(self.level, self.end, {"count": self.count, "seconds": HOLD_DOWN})
            self.last = None
            self.count = 0
