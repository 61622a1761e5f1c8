"""Basic auth against bcrypt hashes, with a bounded cost: one verifier thread, a short queue.

bcrypt is slow by design (tens of milliseconds at cost 10, a second at 14), so without bounds a
client sending wrong passwords as fast as it can would keep every core busy and a real scrape
waiting behind its guesses. Here:

- a header checked once is not checked again: successes are remembered per user and failures in
  a bounded LRU, both keyed by an HMAC of the header under a key drawn at start (never the
  password, nor a digest anyone could recompute from a guess);
- one thread runs bcrypt; at most `max_pending` checks wait for it, past them the request is
  refused at once (429) instead of queued;
- a check whose client has gone is dropped before it runs;
- guesses cannot evict a remembered success, so Prometheus, once verified, is never queued again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Mapping

import bcrypt

MAX_BCRYPT_COST = 14
"""The highest cost accepted at load: about a second per check here; 31 would take days."""

FAILURES_REMEMBERED = 4096


def bcrypt_cost(hashed: str) -> int:
    """The cost of a `$2y$10$…` hash (its work factor: 2**cost rounds)."""
    return int(hashed[4:6])


def credentials(header: bytes) -> tuple[str, bytes] | None:
    """(user, password) of an `Authorization: Basic` value, or None when it is not one."""
    scheme, _, encoded = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user.decode("utf-8", "replace"), password) if sep else None


class BasicAuthenticator:
    """Checks `Authorization: Basic` values; every method but `_check` runs on the event loop."""

    def __init__(self, users: Mapping[str, bytes], *, max_pending: int = 4) -> None:
        if not users:
            raise ValueError("basic auth needs at least one user")
        self._users = dict(users)
        # Unknown users are checked against a configured hash, so that their answer costs as much
        # as a wrong password and does not reveal which names exist.
        self._dummy = next(iter(self._users.values()))
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}  # user -> HMAC of the header that passed
        self._failed: OrderedDict[bytes, None] = OrderedDict()
        self._pending: set[asyncio.Future[bool]] = set()
        self._capacity = 1 + max_pending  # the check running and those waiting for it
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="web-auth")

    def _digest(self, header: bytes) -> bytes:
        return hmac.new(self._key, header, hashlib.sha256).digest()

    def cached(self, header: bytes) -> bool | None:
        """The answer for a header seen before (or malformed), or None when bcrypt must decide."""
        parsed = credentials(header)
        if parsed is None:
            return False
        digest = self._digest(header)
        known = self._verified.get(parsed[0])
        if known is not None and hmac.compare_digest(known, digest):
            return True
        if digest in self._failed:
            self._failed.move_to_end(digest)
            return False
        return None

    def verify(self, loop: asyncio.AbstractEventLoop, header: bytes) -> asyncio.Future[bool] | None:
        """Queue a bcrypt check of `header`; None when the queue is full (answer 429).

        Cancelling the returned future (the client left) drops the check if it has not started.
        """
        if len(self._pending) >= self._capacity:
            return None
        future = loop.run_in_executor(self._executor, self._check, header)
        self._pending.add(future)
        future.add_done_callback(lambda done: self._settled(header, done))
        return future

    @property
    def pending(self) -> int:
        """Checks running or waiting."""
        return len(self._pending)

    def _check(self, header: bytes) -> bool:  # on the verifier thread; bcrypt releases the GIL
        parsed = credentials(header)
        if parsed is None:
            return False
        user, password = parsed
        hashed = self._users.get(user)
        try:
            return bcrypt.checkpw(password, hashed or self._dummy) and hashed is not None
        except ValueError:  # bcrypt refuses passwords over 72 bytes; none can match
            return False

    def _settled(self, header: bytes, future: asyncio.Future[bool]) -> None:
        self._pending.discard(future)
        if future.cancelled() or future.exception() is not None:
            return
        digest = self._digest(header)
        parsed = credentials(header)
        if future.result() and parsed is not None:
            self._verified[parsed[0]] = digest  # one per configured user: bounded by the file
        else:
            self._failed[digest] = None
            if len(self._failed) > FAILURES_REMEMBERED:
                self._failed.popitem(last=False)

    def close(self) -> None:
        """Drop queued checks; one already running finishes on its thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)
