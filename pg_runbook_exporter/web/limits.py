"""The web server's limits (slots, deadlines, sizes, password checks) and the descriptor budget."""

from __future__ import annotations

import dataclasses
import logging
import resource
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What one client or all of them together may take; the web config's `limits` section.

    Defaults suit one Prometheus (or an HA pair) scraping every few seconds with room for curl and
    a dozen tools; every value can be set in the web config file.
    """

    max_connections: int = 1000
    """Open connections in all, TLS handshakes included; kept below the descriptor limit."""
    max_connections_per_client: int = 128
    """Open connections from one client address."""
    request_head_timeout: float = 10.0
    """Seconds from a request's first byte (or the connection's start, TLS handshake included)
    to the end of its head; nothing the client sends meanwhile moves this deadline."""
    idle_timeout: float = 60.0
    """Seconds a keep-alive connection may wait for its next request, and a client that does not
    read its responses may keep them unread."""
    max_request_head_bytes: int = 16384
    """Size of a request line and headers together."""
    max_pending_password_checks: int = 4
    """bcrypt verifications waiting behind the one running; past them a request gets 429."""

    @property
    def tick(self) -> float:
        """How often deadlines are swept: often enough to honour the shortest one closely."""
        return min(1.0, self.request_head_timeout / 4, self.idle_timeout / 4)


INTEGER_LIMITS = frozenset(
    {
        "max_connections",
        "max_connections_per_client",
        "max_request_head_bytes",
        "max_pending_password_checks",
    }
)
DURATION_LIMITS = frozenset({"request_head_timeout", "idle_timeout"})
MINIMUM = {"max_pending_password_checks": 0}  # every other limit is at least 1 (or above 0 s)


def reserve(soft: int) -> int:
    """Descriptors kept for everything but client connections: database sessions, log files,
    the listening sockets, the event loop's own."""
    return min(64, soft // 4)


def raise_descriptor_limit() -> int:
    """Raise this process's soft descriptor limit to its hard limit; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
            return soft
        logger.info("open-file limit raised from %d to %d", soft, target)
        return target
    return soft


def fit_descriptors(limits: Limits, soft: int) -> Limits:
    """`limits` with `max_connections` lowered, if need be, to fit below the descriptor limit.

    At the limit every accept fails (EMFILE): the server could not even answer 503. Keeping the
    connection limit below it means the process still has descriptors for its database sessions
    and for accepting, answering and closing a connection past the limit.
    """
    budget = max(1, soft - reserve(soft))
    if limits.max_connections <= budget:
        return limits
    logger.warning(
        "max_connections %d lowered to %d: the open-file limit is %d (raise it with ulimit -n "
        "or LimitNOFILE=)",
        limits.max_connections,
        budget,
        soft,
    )
    return dataclasses.replace(limits, max_connections=budget)
