"""The exporter's HTTP/1.1 server: writes the exposition rendered once per collection.

One event loop in its own thread serves every connection. A scrape costs a header parse, two dict
lookups and one `write()` of a response (headers and body) built once per exposition and second;
it never renders and never waits for the database. Slow or idle clients are closed by deadline,
so none can hold the loop or a connection slot for long.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import logging
import threading
from collections.abc import Callable

from pg_runbook_exporter import __version__
from pg_runbook_exporter.exposition import Exposition
from pg_runbook_exporter.web.connection import Connection, Shared, reset
from pg_runbook_exporter.web.webconfig import WebConfig

logger = logging.getLogger(__name__)


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
    """Serves `/metrics`, `/`, `/healthz` and `/readyz` from a thread of its own.

    `get_exposition` and `ready` are called on the server's thread for every request that needs
    them: they must only read state the collection side publishes (an attribute read), never block.
    """

    def __init__(
        self,
        *,
        listen_address: str,
        get_exposition: Callable[[], Exposition],
        ready: Callable[[], tuple[bool, str]],
        telemetry_path: str = "/metrics",
        web_config: WebConfig | None = None,
        name: str = "pg-runbook-exporter",
        version: str = __version__,
        header_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        max_connections: int = 1000,
        max_header_bytes: int = 16384,
    ) -> None:
        if not telemetry_path.startswith("/") or telemetry_path in ("/", "/healthz", "/readyz"):
            raise ValueError(f"telemetry path {telemetry_path!r} must start with / and be its own")
        self.host, self.port = parse_listen_address(listen_address)
        self.get_exposition = get_exposition
        self.ready = ready
        self.telemetry_path = telemetry_path.encode()
        self.paths = frozenset({self.telemetry_path, b"/", b"/healthz", b"/readyz"})
        self.web_config = web_config
        self.authenticator = web_config.authenticator() if web_config else None
        self.extra_headers = b"".join(
            f"{key}: {value}\r\n".encode()
            for key, value in (web_config.headers if web_config else ())
        )
        rate = web_config.rate_limit if web_config else None
        self.rate_interval = rate.interval if rate else 0.0
        self.rate_burst = rate.burst if rate else 0
        self.name = name
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.tick_interval = min(1.0, header_timeout / 4, idle_timeout / 4)
        self.max_connections = max_connections
        self.max_header_bytes = max_header_bytes
        self.executor = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="web-auth")
        self.landing = _landing_page(name, version, telemetry_path)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._shared: Shared | None = None
        self._server: asyncio.Server | None = None

    def start(self) -> int:
        """Bind and serve; returns the bound port. Raises what binding raised."""
        started: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(started,), name="web", daemon=True)
        self._thread.start()
        return started.result()

    def _run(self, started: concurrent.futures.Future[int]) -> None:
        loop = asyncio.new_event_loop()
        shared = Shared(self, loop)
        try:
            context = self.web_config.ssl_context() if self.web_config else None
            server = loop.run_until_complete(
                loop.create_server(
                    lambda: Connection(shared),
                    self.host,
                    self.port,
                    ssl=context,
                    backlog=512,
                    reuse_address=True,
                    ssl_handshake_timeout=self.header_timeout if context else None,
                )
            )
        except BaseException as exc:
            loop.close()
            started.set_exception(exc)
            return
        self._loop, self._shared, self._server = loop, shared, server
        self.port = server.sockets[0].getsockname()[1]
        loop.call_later(self.tick_interval, shared.tick)
        logger.info(
            "serving %s on %s port %d%s",
            self.telemetry_path.decode(),
            self.host or "all addresses",
            self.port,
            " with TLS" if context else "",
        )
        started.set_result(self.port)
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _close(self, grace: float) -> None:
        assert self._server is not None and self._shared is not None
        self._server.close()
        connections = list(self._shared.connections)
        for connection in connections:
            connection.closing = True
            if connection.transport is not None:
                connection.transport.close()  # flushes what is already written
        waited = 0.0
        while self._shared.connections and waited < grace:
            await asyncio.sleep(0.01)
            waited += 0.01
        for connection in list(self._shared.connections):
            if connection.transport is not None:
                reset(connection.transport)
        await asyncio.sleep(0)
        await self._server.wait_closed()

    def stop(self, grace: float = 1.0) -> None:
        """Stop accepting, close every connection (after `grace` s, forcibly), end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            self.executor.shutdown(wait=False)
            return
        asyncio.run_coroutine_threadsafe(self._close(grace), loop).result(timeout=grace + 5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._loop = self._thread = None


def _landing_page(name: str, version: str, telemetry_path: str) -> bytes:
    name, version, path = (html.escape(s) for s in (name, version, telemetry_path))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{name}</title></head>
<body><h1>{name}</h1><p>Version {version}</p><ul>
<li><a href="{path}">{path}</a> metrics</li>
<li><a href="/healthz">/healthz</a> liveness</li>
<li><a href="/readyz">/readyz</a> readiness</li>
</ul></body></html>
""".encode()
