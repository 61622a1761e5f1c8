"""The soak's clients, on one asyncio loop: keep-alive authenticated scrapers, a watcher reading
`pgrb_up`, a wrong-password flood and idle sockets that never send a byte.

Every client binds a loopback source address of its own kind: the server caps connections per
client address (`max_connections_per_client`, 128 by default), so the idle sockets are spread
over several 127.0.0.x addresses, ``IDLE_PER_ADDRESS`` each, and never push out a scraper.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field

from tools.soak.exporter import USER, basic_auth

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
SCRAPER_ADDRESS = "127.0.0.1"
IDLE_PER_ADDRESS = 100  # below the default max_connections_per_client (128)
# The idle sockets are first opened over this many seconds, so that the server's
# request_head_timeout (10 s by default) ends them spread out rather than all in one tick.
IDLE_RAMP_S = 10.0
_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:\s*close", re.IGNORECASE)
_UP = re.compile(rb"^pgrb_up (\S+)$", re.MULTILINE)
_CLIENT_ERRORS = (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)


@dataclass(frozen=True)
class Failure:
    """An authenticated scrape that did not get a whole 200 response in time."""

    client: str
    sent: float  # time.monotonic()
    ended: float
    what: str


@dataclass
class LoadFigures:
    scrapes: int = 0
    failures: list[Failure] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    flood: Counter[str] = field(default_factory=Counter)  # answer status (or error) -> count
    idle_opened: int = 0
    idle_open: int = 0
    # open at once, sampled every half second once every one was opened
    idle_open_samples: list[int] = field(default_factory=list)
    idle_ended: Counter[str] = field(default_factory=Counter)  # how the server ended them
    idle_connect_errors: int = 0
    # (time the watcher's scrape was sent, pgrb_up it read); appended on the loop thread, read
    # by the fault thread (a list append is atomic)
    up: list[tuple[float, bool]] = field(default_factory=list)


def request(port: int, auth: bytes, *, gzip: bool) -> bytes:
    lines = [
        b"GET /metrics HTTP/1.1",
        b"Host: 127.0.0.1:%d" % port,
        b"Authorization: " + auth,
        b"User-Agent: pgrb-soak",
    ]
    if gzip:
        lines += [b"Accept: " + PROMETHEUS_ACCEPT.encode(), b"Accept-Encoding: gzip"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, whether the server closes) of one response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = _LENGTH.search(head)
    body = await reader.readexactly(int(length.group(1))) if length else b""
    return status, body, _CLOSE.search(head) is not None


class Load:
    """The clients against the exporter at 127.0.0.1:`port`; `start()` then `stop()`."""

    def __init__(
        self,
        port: int,
        auth: bytes,
        *,
        scrapers: int,
        scrape_interval: float,
        scrape_timeout: float,
        idle_sockets: int,
        flood_clients: int,
        flood_pause: float,
    ) -> None:
        self.port = port
        self.auth = auth
        self.scrapers = scrapers
        self.scrape_interval = scrape_interval
        self.scrape_timeout = scrape_timeout
        self.idle_sockets = idle_sockets
        self.flood_clients = flood_clients
        self.flood_pause = flood_pause
        self.figures = LoadFigures()
        self.stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        idle_addresses = math.ceil(idle_sockets / IDLE_PER_ADDRESS)
        self.idle_addresses = [f"127.0.0.{2 + i}" for i in range(idle_addresses)]
        self.flood_address = f"127.0.0.{2 + idle_addresses}"

    async def start(self, *, ready_timeout: float) -> bool:
        """Scrapers first, each verified once (the flood must not queue their first login),
        then the idle sockets and the flood. False when the scrapers could not all log in."""
        first_scrapes = [asyncio.Event() for _ in range(self.scrapers)]
        for i, served in enumerate(first_scrapes):
            self._spawn(self._scraper(i, served))
        self._spawn(self._watcher())
        try:
            await asyncio.wait_for(
                asyncio.gather(*(e.wait() for e in first_scrapes)), ready_timeout
            )
        except TimeoutError:
            return False
        for i in range(self.idle_sockets):
            self._spawn(self._idle(self.idle_addresses[i // IDLE_PER_ADDRESS]))
        for _ in range(self.flood_clients):
            self._spawn(self._flooder())
        self._spawn(self._count_idle())
        return True

    async def stop(self) -> None:
        self.stopping = True
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=max(15.0, self.scrape_timeout))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _spawn(self, coroutine: object) -> None:
        assert asyncio.iscoroutine(coroutine)
        self._tasks.append(asyncio.get_running_loop().create_task(coroutine))

    async def _connect(
        self, source: str, timeout: float
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self.port, local_addr=(source, 0)), timeout
        )

    async def _pause_until(self, when: float) -> None:
        while not self.stopping and (left := when - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.5))

    async def _scraper(self, index: int, served: asyncio.Event) -> None:
        name = f"scraper {index + 1}"
        payload = request(self.port, self.auth, gzip=True)
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        due = time.monotonic() + random.uniform(0, self.scrape_interval)  # noqa: S311
        while not self.stopping:
            await self._pause_until(due)
            if self.stopping:
                break
            due = max(due + self.scrape_interval, time.monotonic())
            streams, body = await self._scrape(name, payload, streams)
            if body is not None:
                served.set()
        if streams is not None:
            streams[1].close()

    async def _scrape(
        self,
        name: str,
        payload: bytes,
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
        *,
        counted: bool = True,
    ) -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None, bytes | None]:
        """One scrape on `streams` (connecting when None); returns the streams to reuse and the
        body, or None and None after a failure (recorded)."""
        figures = self.figures
        sent = time.monotonic()
        try:

            async def scrape() -> tuple[int, bytes, bool]:
                nonlocal streams
                if streams is None:
                    streams = await self._connect(SCRAPER_ADDRESS, self.scrape_timeout)
                streams[1].write(payload)
                return await read_response(streams[0])

            status, body, close = await asyncio.wait_for(scrape(), self.scrape_timeout)
            what = None if status == 200 else f"status {status}"
        except TimeoutError:
            what, close = "timeout", True
        except _CLIENT_ERRORS as exc:
            what, close = type(exc).__name__, True
        ended = time.monotonic()
        if close and streams is not None:
            streams[1].close()
            streams = None
        if what is not None:
            figures.failures.append(Failure(name, sent, ended, what))
            return streams, None
        if counted:
            figures.scrapes += 1
            figures.latencies.append(ended - sent)
        return streams, body

    async def _watcher(self) -> None:
        """Reads `pgrb_up` from a plain-text scrape every quarter second."""
        payload = request(self.port, self.auth, gzip=False)
        streams = None
        while not self.stopping:
            sent = time.monotonic()
            streams, body = await self._scrape("watcher", payload, streams, counted=False)
            if body is not None and (match := _UP.search(body)):
                self.figures.up.append((sent, float(match.group(1)) == 1.0))
            await self._pause_until(sent + 0.25)
        if streams is not None:
            streams[1].close()

    async def _flooder(self) -> None:
        """Wrong passwords, a new one each request: each is a bcrypt check or a 429."""
        streams = None
        while not self.stopping:
            wrong = basic_auth(USER, secrets.token_urlsafe(12))
            try:
                if streams is None:
                    streams = await self._connect(self.flood_address, 10.0)
                streams[1].write(request(self.port, wrong, gzip=False))
                status, _, close = await asyncio.wait_for(read_response(streams[0]), 10.0)
                answer = str(status)
            except TimeoutError:
                answer, close = "timeout", True
            except _CLIENT_ERRORS as exc:
                answer, close = type(exc).__name__, True
            self.figures.flood[answer] += 1
            if close and streams is not None:
                streams[1].close()
                streams = None
            await asyncio.sleep(self.flood_pause)
        if streams is not None:
            streams[1].close()

    async def _idle(self, source: str) -> None:
        """A socket that sends nothing, opened again as soon as the server ends it."""
        figures = self.figures
        await self._pause_until(time.monotonic() + random.uniform(0, IDLE_RAMP_S))  # noqa: S311
        while not self.stopping:
            try:
                reader, writer = await self._connect(source, 10.0)
            except (OSError, TimeoutError):
                figures.idle_connect_errors += 1
                await self._pause_until(time.monotonic() + 1.0)
                continue
            figures.idle_opened += 1
            figures.idle_open += 1
            try:
                figures.idle_ended[await self._hold(reader)] += 1
            finally:
                figures.idle_open -= 1
                writer.close()

    async def _hold(self, reader: asyncio.StreamReader) -> str:
        answer = ""
        while not self.stopping:
            try:
                data = await asyncio.wait_for(reader.read(4096), 1.0)
            except TimeoutError:
                continue
            except OSError as exc:
                return f"{answer} then {type(exc).__name__}" if answer else type(exc).__name__
            if not data:
                return f"{answer} then closed" if answer else "closed"
            if not answer:
                answer = data.split(b"\r\n", 1)[0].decode(errors="replace")
        return "held to the end"

    async def _count_idle(self) -> None:
        """How many idle sockets are open at once, once every one has been opened."""
        figures = self.figures
        while not self.stopping:
            if figures.idle_opened >= self.idle_sockets:
                figures.idle_open_samples.append(figures.idle_open)
            await asyncio.sleep(0.5)
