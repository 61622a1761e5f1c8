"""The watcher of every database socket: statement deadlines, and idle sessions the server ended.

A statement waits in its own thread for an answer that a hung network path never brings, and
neither TCP keepalives nor a cancel request (a new connection through the same path) end that wait.
So one thread outside the waiting ones keeps the deadlines and, when one passes, shuts the socket
down: the waiting thread's read returns at once and the statement fails. The same thread polls the
sockets of idle sessions: the server ending one (``pg_terminate_backend``, a shutdown, a crash)
makes it readable, and the session's owner is told at once instead of at its next run. And when
to try again: at once after one failure, then backing off, and always backing off when the server
has no connection slot left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pg_runbook_exporter.errors import CheckError, FailureReason

logger = logging.getLogger(__name__)

# Beyond a statement's own timeout, how long the server may take to say it cancelled it.
DEADLINE_GRACE = 2.0
# SQLSTATE 53300 (too_many_connections). A refused connection attempt carries no SQLSTATE in
# psycopg, so the server's (English) words are read too.
_TOO_MANY_CONNECTIONS = re.compile(
    r"too many (clients|connections)|remaining connection slots are reserved"
)


def too_many_connections(exc: BaseException) -> bool:
    """Whether the server refused the session for want of connection slots."""
    sqlstate = getattr(exc, "sqlstate", None)
    return sqlstate == "53300" or bool(_TOO_MANY_CONNECTIONS.search(str(exc)))


def retry_delay(failures: int, exc: BaseException, max_backoff: float) -> float:
    """Seconds until the next connection attempt after ``failures`` in a row, ``exc`` the last.

    None after one failure (a terminated session is back at once); then capped, jittered
    exponential backoff; the full backoff whenever the server is out of connection slots, where
    every attempt takes a slot someone else is waiting for.
    """
    if too_many_connections(exc):
        delay = max_backoff
    elif failures <= 1:
        return 0.0
    else:
        delay = min(max_backoff, 0.25 * 2 ** min(failures - 1, 10))
    return random.uniform(delay / 2, delay)  # noqa: S311


def ended(conn: psycopg.Connection[Any] | None) -> psycopg.Error | None:
    """Why the idle connection whose socket became readable is gone, or None if it is not (what
    the server sent, a notice or a parameter, is read into libpq for it to parse)."""
    try:
        if conn is not None:
            conn.pgconn.consume_input()
            if conn.pgconn.status == psycopg.pq.ConnStatus.OK and not at_eof(conn.pgconn.socket):
                return None
    except psycopg.Error as exc:
        return exc
    return psycopg.OperationalError("the server closed the connection")


@dataclass(eq=False)
class Deadline:
    """One armed deadline; ``expired`` once the watcher shut the socket down."""

    fd: int
    at: float
    owner: Liveness | None = None
    expired: bool = field(default=False)


def shut_down(fd: int) -> None:
    """End the connection on ``fd`` for every reader and writer, leaving the descriptor open."""
    with contextlib.suppress(OSError):
        # A duplicate, so closing it leaves the owner's descriptor alone; shutdown acts on the
        # socket itself, which both descriptors share.
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


def at_eof(fd: int) -> bool:
    """Whether the peer closed the connection on ``fd`` (nothing is read from it)."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.close()


class Watcher:
    """Deadlines and idle sockets, watched by one thread started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deadlines: set[Deadline] = set()
        self._idle: dict[int, Callable[[], None]] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def deadline(
        self, fd: int, timeout: float, errors: type[Exception], owner: Liveness | None = None
    ) -> Iterator[None]:
        """Shut ``fd`` down if the block is still running ``timeout`` + grace from now (or when
        ``owner`` is stopped); the block's error (one of ``errors``) then becomes a CheckError:
        ``timeout``, or ``connection`` when stopped."""
        seconds = timeout + DEADLINE_GRACE
        armed = Deadline(fd=fd, at=time.monotonic() + seconds, owner=owner)
        with self._lock:
            self._idle.pop(fd, None)  # a statement's answer is not an idle socket waking up
            self._deadlines.add(armed)
            if owner is not None and owner.stopping:
                self._expire(armed)
            self._ensure_thread()
        self._wake()
        try:
            yield
        except errors:
            if not armed.expired:
                raise
        finally:
            with self._lock:  # once out, the watcher never touches fd again (it may be closed)
                self._deadlines.discard(armed)
        if armed.expired and owner is not None and owner.stopping:
            raise CheckError(FailureReason.CONNECTION, "stopping: the connection was shut down")
        if armed.expired:
            raise CheckError(
                FailureReason.TIMEOUT,
                f"no answer within {seconds:g}s (timeout {timeout:g}s and {DEADLINE_GRACE:g}s "
                "grace); the connection was shut down",
            )

    def stop(self, owner: Liveness) -> None:
        """End ``owner``'s statement now, and each later one at its start, by shutting its socket
        down: a cancel request would need a new connection, which a hung path never completes."""
        with self._lock:
            owner.stopping = True
            for armed in [d for d in self._deadlines if d.owner is owner]:
                self._expire(armed)

    def _expire(self, armed: Deadline) -> None:  # under the lock
        armed.expired = True
        self._deadlines.discard(armed)
        shut_down(armed.fd)

    def watch(self, fd: int, on_readable: Callable[[], None]) -> None:
        """Call ``on_readable`` (in the watcher's thread) once ``fd`` becomes readable, once."""
        with self._lock:
            self._idle[fd] = on_readable
            self._ensure_thread()
        self._wake()

    def unwatch(self, fd: int) -> None:
        """Before ``fd`` is used or closed."""
        with self._lock:
            self._idle.pop(fd, None)
        self._wake()

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="liveness", daemon=True)
            self._thread.start()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a wake-up is already pending
            os.write(self._wake_w, b"x")

    def _serve(self) -> None:
        while True:
            try:
                self._round()
            except Exception:  # a bug must not end the watching, nor log once per round
                logger.debug("liveness watcher round failed", exc_info=True)
                time.sleep(0.1)

    def _round(self) -> None:
        with self._lock:
            now = time.monotonic()
            for armed in [d for d in self._deadlines if d.at <= now]:
                self._expire(armed)
            wait = min((d.at - now for d in self._deadlines), default=None)
            idle = list(self._idle)
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        for fd in idle:
            poller.register(fd, select.POLLIN)
        events = poller.poll(None if wait is None else max(0, wait * 1000))
        woken: list[Callable[[], None]] = []
        with self._lock:
            for fd, _ in events:
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                elif (callback := self._idle.pop(fd, None)) is not None:
                    woken.append(callback)
        for callback in woken:
            callback()


class Liveness:
    """One session's share of a watcher: its deadlines, its idle watch, and when to reconnect."""

    def __init__(
        self,
        watcher: Watcher,
        *,
        max_backoff: float,
        on_deadline: Callable[[CheckError], None],
        on_idle_readable: Callable[[], None] | None = None,
    ) -> None:
        self._watcher = watcher
        self._max_backoff = max_backoff
        self._on_deadline = on_deadline
        self._on_idle_readable = on_idle_readable
        self._watched: int | None = None
        self.failures = 0  # in a row; 0 once connected
        self.stopping = False  # set under the watcher's lock (``stop``)
        self._next_attempt = 0.0

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self._next_attempt = time.monotonic() + retry_delay(self.failures, exc, self._max_backoff)

    def retry_in(self) -> float:
        """Seconds until the next connection attempt is allowed (0: now)."""
        return max(0.0, self._next_attempt - time.monotonic())

    @contextlib.contextmanager
    def deadline(self, fd: int, timeout: float) -> Iterator[None]:
        """``Watcher.deadline`` for a statement on ``fd``, off the idle watch while it runs; past
        the deadline ``on_deadline`` is told before the block fails (not when stopped)."""
        self._watched = None
        try:
            with self._watcher.deadline(fd, timeout, psycopg.Error, self):
                yield
        except CheckError as error:
            if not self.stopping:
                self._on_deadline(error)
            raise

    def stop(self) -> None:
        """Fail the running statement now and every later one at once (the exporter stops)."""
        self._watcher.stop(self)

    def idle(self, fd: int) -> None:
        """Tell the session's owner as soon as ``fd``, idle from now on, becomes readable."""
        if self._on_idle_readable is not None:
            self._watched = fd
            self._watcher.watch(fd, self._on_idle_readable)

    def unwatch(self) -> None:
        """Before the socket closes (and its descriptor number is reused)."""
        if self._watched is not None:
            self._watcher.unwatch(self._watched)
            self._watched = None


# The process's one watcher, shared by every session that is not given its own (one thread).
PROCESS_WATCHER = Watcher()
