"""The exporter's HTTP/1.1 server: writes the exposition rendered once per collection.

One event loop in its own thread serves every connection. A scrape costs a parse, two dict
lookups and one `write()` of a response (headers and body) built once per exposition and second;
it never renders and never waits for the database. Deadlines, slot limits and a bounded password
check keep any one client, or many, from holding the loop, the slots or the CPU.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from pg_runbook_exporter import __version__
from pg_runbook_exporter.web.connection import Connection
from pg_runbook_exporter.web.limits import Limits, fit_descriptors, raise_descriptor_limit
from pg_runbook_exporter.web.negotiation import Bodies
from pg_runbook_exporter.web.pages import Pages
from pg_runbook_exporter.web.settings import Settings, build_settings, check_telemetry_path
from pg_runbook_exporter.web.shared import Shared
from pg_runbook_exporter.web.webconfig import WebConfig

logger = logging.getLogger(__name__)

_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_RETRY = 1.0  # seconds without accepting after the process ran out of descriptors


def listen(host: str | None, port: int, backlog: int = 512) -> list[socket.socket]:
    """Listening sockets for `host` (every address it resolves to; all when None) and `port`."""
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, resolved in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            address = resolved
            if port == 0 and len(sockets) > 1:  # one ephemeral port for every address
                address = (resolved[0], sockets[0].getsockname()[1], *resolved[2:])
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """`:9819`, `0.0.0.0:9819`, `[::1]:9819`, `localhost:9819` → (host or None for all, port)."""
    host, sep, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"listen address {address!r}: write an IPv6 address as [addr]:port")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"listen address {address!r}: expected host:port, e.g. :9819")
    return host or None, int(port_text)


class WebServer:
    """Serves `/metrics`, `/`, `/healthz`, `/readyz` and the given pages from a thread of its own.

    `get_exposition` and `ready` are called on the server's thread for every request that needs
    them: they must only read state the collection side publishes (an attribute read), never block.
    `limits` are the defaults; a web config's `limits` section overrides them key by key.
    `pages` are the application's own paths (see `web/pages.py`), `links` what `/` lists of them.
    """

    def __init__(
        self,
        *,
        listen_address: str,
        get_exposition: Callable[[], Bodies],
        ready: Callable[[], tuple[bool, str]],
        telemetry_path: str = "/metrics",
        web_config: WebConfig | None = None,
        name: str = "pg-runbook-exporter",
        version: str = __version__,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
        pages: Pages | None = None,
        links: tuple[tuple[str, str], ...] = (),
    ) -> None:
        check_telemetry_path(telemetry_path)
        self._pages = dict(pages or {})
        self._links = links
        self.host, self.port = parse_listen_address(listen_address)
        self.web_config = web_config
        self._get_exposition = get_exposition
        self._ready = ready
        self._telemetry_path = telemetry_path
        self._name = name
        self._version = version
        self._limits = limits or Limits()
        self._clock = clock
        self._descriptors = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._shared: Shared | None = None
        self._sockets: list[socket.socket] = []

    def _settings(self, web_config: WebConfig | None) -> Settings:
        limits = web_config.apply_limits(self._limits) if web_config else self._limits
        return build_settings(
            telemetry_path=self._telemetry_path,
            name=self._name,
            version=self._version,
            limits=fit_descriptors(limits, self._descriptors),
            clock=self._clock,
            web_config=web_config,
            pages=self._pages,
            links=self._links,
        )

    def start(self) -> int:
        """Bind and serve; returns the bound port. Raises what binding or the TLS files raised."""
        self._descriptors = raise_descriptor_limit()
        settings = self._settings(self.web_config)
        started: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(settings, started), name="web", daemon=True
        )
        self._thread.start()
        return started.result()

    def _run(self, settings: Settings, started: concurrent.futures.Future[int]) -> None:
        loop = asyncio.new_event_loop()
        shared = Shared(loop, settings, self._get_exposition, self._ready)
        try:
            sockets = listen(self.host, self.port)
        except BaseException as exc:
            loop.close()
            started.set_exception(exc)
            return
        self._loop, self._shared, self._sockets = loop, shared, sockets
        self.port = sockets[0].getsockname()[1]
        for sock in sockets:
            loop.add_reader(sock, self._accept, shared, sock)
        loop.call_later(settings.limits.tick, shared.tick)
        logger.info(
            "serving %s on %s port %d%s",
            self._telemetry_path,
            self.host or "all addresses",
            self.port,
            " with TLS" if settings.ssl_context else "",
        )
        started.set_result(self.port)
        try:
            loop.run_forever()
        finally:
            for sock in sockets:
                sock.close()
            loop.close()

    def _accept(self, shared: Shared, sock: socket.socket) -> None:
        """Accept what the backlog holds (a bounded batch, so the loop serves others too)."""
        loop = shared.loop
        for _ in range(64):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                # Linux keeps the listener readable: stop watching it for a while, and log the
                # shortage once (asyncio's own accept loop logs a traceback per attempt).
                shared.starved.occurred(
                    "cannot accept connections: %s (%d open); retrying each second",
                    exc,
                    len(shared.connections),
                )
                loop.remove_reader(sock)
                loop.call_later(ACCEPT_RETRY, self._resume_accepting, shared, sock)
                return
            conn.setblocking(False)
            loop.create_task(self._connect(shared, conn))

    @staticmethod
    async def _connect(shared: Shared, conn: socket.socket) -> None:
        try:
            await shared.loop.connect_accepted_socket(lambda: Connection(shared), conn)
        except OSError as exc:  # the client left before its transport was made
            logger.debug("dropped a connection before serving it: %s", exc)
            conn.close()

    def _resume_accepting(self, shared: Shared, sock: socket.socket) -> None:
        if sock.fileno() >= 0 and self._sockets:
            shared.loop.add_reader(sock, self._accept, shared, sock)

    def _call(self, function: Callable[[Shared], Any]) -> Any:
        """Run `function(shared)` on the server's loop and return its result."""
        loop, shared = self._loop, self._shared
        assert loop is not None and shared is not None, "the server is not running"

        async def call() -> Any:
            return function(shared)

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)

    def reload(self, web_config: WebConfig | None) -> None:
        """Serve with `web_config` from the next request on, TLS certificates included.

        The new TLS files are read here: when they fail, this raises and the server keeps the
        configuration it had. Open connections keep their TLS session; their next request is
        checked against the new users, headers and rate limit.
        """
        if self._loop is None:  # not serving yet: start() reads it
            self.web_config = web_config
            return
        settings = self._settings(web_config)

        def swap(shared: Shared) -> Settings:
            previous = shared.settings
            shared.replace(settings)
            return previous

        old: Settings = self._call(swap)
        self.web_config = web_config
        if old.authenticator is not None:
            old.authenticator.close()
        logger.info(
            "web config %s: reloaded: tls=%s, basic auth users=%d",
            web_config.source if web_config else "(none)",
            "on" if settings.ssl_context else "off",
            len(web_config.basic_auth_users) if web_config else 0,
        )

    def expire_overdue(self) -> None:
        """Act now on every connection past its deadline (the server also does so each tick)."""
        self._call(Shared.sweep)

    def open_connections(self) -> int:
        """Connections holding a slot, TLS handshakes included."""
        count: int = self._call(lambda shared: len(shared.connections))
        return count

    async def _close(self, grace: float) -> None:
        assert self._shared is not None
        for sock in self._sockets:
            self._shared.loop.remove_reader(sock)
            sock.close()
        self._sockets = []
        for connection in list(self._shared.connections):
            connection.close_gently()
        waited = 0.0
        while self._shared.connections and waited < grace:
            await asyncio.sleep(0.01)
            waited += 0.01
        for connection in list(self._shared.connections):
            connection.drop()
        await asyncio.sleep(0)

    def stop(self, grace: float = 1.0) -> None:
        """Stop accepting, close every connection (after `grace` s, forcibly), end the thread."""
        loop, thread, shared = self._loop, self._thread, self._shared
        if loop is None or thread is None or shared is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(grace), loop).result(timeout=grace + 5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if shared.settings.authenticator is not None:
            shared.settings.authenticator.close()
        self._loop = self._thread = None
