"""State the connections of one server share: slots, rate buckets, ready-made responses, clocks.

Touched only on the server's event-loop thread, so nothing here locks.

Slots: a connection counts from its TCP accept (a TLS handshake holds a slot). When the server or
one client address is at its limit, the oldest connection that has not yet been served an
authorised request makes room; only when there is none is the newcomer refused. So clients that
never authenticate, however many, cannot keep Prometheus out, and a slow client cannot hold the
slot of one that works.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
from collections import OrderedDict
from collections.abc import Callable
from http import HTTPStatus
from typing import Protocol

from pg_runbook_exporter.web.negotiation import Bodies, Variant, negotiate
from pg_runbook_exporter.web.settings import Settings
from pg_runbook_exporter.web.statelog import StateLog

logger = logging.getLogger(__name__)

STATUS = {int(c): b"%d %s" % (c, c.phrase.encode()) for c in HTTPStatus}
CLOSE = b"Connection: close\r\n"
_VARY = b"Vary: Accept, Accept-Encoding\r\n"
_GZIP = b"Content-Encoding: gzip\r\n"
RATE_BUCKETS = 4096  # client addresses remembered by the rate limit; the oldest is forgotten


class Tracked(Protocol):
    """A connection as the slot table sees it."""

    deadline: float

    def timed_out(self) -> None: ...

    def drop(self) -> None:
        """Reset the connection now and give up its slot."""

    def close_gently(self) -> None:
        """Close after what is already written (server shutdown)."""


class Shared:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        settings: Settings,
        get_exposition: Callable[[], Bodies],
        ready: Callable[[], tuple[bool, str]],
    ) -> None:
        self.loop = loop
        self.settings = settings
        self.get_exposition = get_exposition
        self.ready = ready
        # Insertion order is age: the first untrusted entry is the one to evict.
        self.connections: dict[Tracked, str] = {}
        self.untrusted: dict[Tracked, None] = {}
        self.by_client: dict[str, dict[Tracked, None]] = {}
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.date = email.utils.formatdate(usegmt=True).encode()
        self.exposition: Bodies | None = None
        # Responses by (variant, close, head): (date they carry, bytes). Rebuilt when the
        # exposition object or the second changes, so a scrape is one write of ready bytes.
        self.prepared: list[tuple[bytes, bytes] | None] = [None] * 16
        self.variants: dict[tuple[bytes, bytes], Variant] = {}

        # Conditions a flood repeats: one line as each starts, one with the count as it ends.
        self.states: list[StateLog] = []  # each settled by the sweep

        def state(end: str, level: int = logging.WARNING) -> StateLog:
            self.states.append(StateLog(logger, end, settings.clock, level))
            return self.states[-1]

        self.at_limit = state(
            "connection limits not reached for %(seconds)g s; %(count)d connections were "
            "closed to make room or refused"
        )
        self.starved = state(
            "accepting connections again: none failed for %(seconds)g s (%(count)d had failed)"
        )
        self.auth_failures = state(
            "basic auth: no failure for %(seconds)g s; %(count)d failed attempts", logging.INFO
        )
        self.auth_busy = state(
            "password check queue not full for %(seconds)g s; %(count)d requests were answered 429"
        )
        self.bad_certificates = state(
            "no client certificate without an allowed SAN for %(seconds)g s; %(count)d refused",
            logging.INFO,
        )
        self.serve_errors = state(
            "serving the exposition again: no failure for %(seconds)g s (%(count)d failed)",
            logging.ERROR,
        )
        self.ready_errors = state(
            "readiness checks without error again for %(seconds)g s (%(count)d failed)",
            logging.ERROR,
        )

    def replace(self, settings: Settings) -> None:
        """Use `settings` from the next request on (a reload)."""
        self.settings = settings
        self.buckets.clear()
        self.prepared = [None] * 16

    # --- slots ------------------------------------------------------------------------------

    def admit(self, connection: Tracked, client: str) -> bool:
        """Give `connection` a slot, closing the oldest unproven one if need be; False: refuse."""
        limits = self.settings.limits
        mine = self.by_client.get(client)
        if mine is not None and len(mine) >= limits.max_connections_per_client:
            victim = next((c for c in mine if c in self.untrusted), None)
            if not self._make_room(
                victim, f"max_connections_per_client {limits.max_connections_per_client}, {client}"
            ):
                return False
        if len(self.connections) >= limits.max_connections:
            victim = next(iter(self.untrusted), None)
            if not self._make_room(victim, f"max_connections {limits.max_connections}"):
                return False
        self.connections[connection] = client
        self.untrusted[connection] = None
        self.by_client.setdefault(client, {})[connection] = None
        return True

    def _make_room(self, victim: Tracked | None, limit: str) -> bool:
        self.at_limit.occurred(
            "connection limit reached (%s): closing the oldest connections not yet served an "
            "authorised request to make room, refusing new ones when there is none",
            limit,
        )
        if victim is None:
            return False
        victim.drop()
        return True

    def trust(self, connection: Tracked) -> None:
        """`connection` was served an authorised request: it is no longer evicted for room."""
        self.untrusted.pop(connection, None)

    def release(self, connection: Tracked) -> None:
        client = self.connections.pop(connection, None)
        if client is None:
            return
        self.untrusted.pop(connection, None)
        mine = self.by_client[client]
        del mine[connection]
        if not mine:
            del self.by_client[client]

    def sweep(self) -> None:
        """Act on every connection past its deadline; log the end of conditions that ended."""
        now = self.settings.clock()
        for connection in [c for c in self.connections if c.deadline < now]:
            connection.timed_out()
        for state in self.states:
            state.settle(now)

    def tick(self) -> None:
        date = email.utils.formatdate(usegmt=True).encode()
        if date != self.date:
            self.date = date
        self.sweep()
        self.loop.call_later(self.settings.limits.tick, self.tick)

    def rate_limited(self, client: str) -> bool:
        """Take a token from `client`'s bucket (web config `rate_limit`), if one is left."""
        rate = self.settings.rate_limit
        if rate is None:
            return False
        now = self.settings.clock()
        tokens, refilled = self.buckets.pop(client, (float(rate.burst), now))
        tokens = min(rate.burst, tokens + (now - refilled) / rate.interval)
        limited = tokens < 1.0
        self.buckets[client] = (tokens if limited else tokens - 1.0, now)
        if len(self.buckets) > RATE_BUCKETS:
            self.buckets.popitem(last=False)
        return limited

    # --- responses --------------------------------------------------------------------------

    def head(
        self, status: int, content_type: bytes, length: int, *, close: bool, extra: bytes = b""
    ) -> bytes:
        fields = (
            STATUS[status],
            self.date,
            content_type,
            length,
            extra,
            self.settings.extra_headers,
        )
        head = b"HTTP/1.1 %s\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s%s" % fields
        return head + CLOSE + b"\r\n" if close else head + b"\r\n"

    def metrics_response(self, accept: bytes, encoding: bytes, *, close: bool, head: bool) -> bytes:
        exposition = self.get_exposition()
        if exposition is not self.exposition:
            self.exposition = exposition
            self.prepared = [None] * 16
        variant = self.variants.get((accept, encoding))
        if variant is None:
            if len(self.variants) >= 256:  # arbitrary headers must not grow the cache unbounded
                self.variants.clear()
            variant = negotiate(accept.decode("latin-1"), encoding.decode("latin-1"))
            self.variants[accept, encoding] = variant
        index = variant * 4 + close * 2 + head
        entry = self.prepared[index]
        if entry is None or entry[0] is not self.date:
            body = exposition.body(variant)
            extra = (_VARY + _GZIP if variant.gzipped else _VARY) + exposition.headers
            response = self.head(
                200, variant.content_type.encode(), len(body), close=close, extra=extra
            )
            entry = (self.date, response if head else response + body)
            self.prepared[index] = entry
        return entry[1]
