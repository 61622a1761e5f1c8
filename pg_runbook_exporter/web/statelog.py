"""One log line when a condition starts and one when it ends, however often it recurs between."""

from __future__ import annotations

import logging


class StateLog:
    """Logs the first occurrence of a condition, counts the rest, and logs the end with the count.

    A flood (a descriptor shortage retried on every accept, a password guessed a thousand times)
    then costs two lines instead of one per event.
    """

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING) -> None:
        self.logger = logger
        self.level = level
        self.active = False
        self.count = 0

    def occurred(self, message: str, *args: object, exc_info: bool = False) -> None:
        self.count += 1
        if not self.active:
            self.active = True
            self.logger.log(self.level, message, *args, exc_info=exc_info)

    def ended(self, message: str) -> None:
        """Log `message` with `%(count)d` filled in, if the condition was active."""
        if self.active:
            self.logger.log(self.level, message, {"count": self.count})
            self.active = False
            self.count = 0
