"""The exporter's HTTP/1.1 server: writes the exposition rendered once per collection.

One event loop in its own thread serves every connection. A scrape costs a header parse, two dict
lookups and one `write()` of a response (headers and body) built once per exposition and second;
it never renders and never waits for the database. Slow or idle clients are closed by deadline,
so none can hold the loop or a connection slot for long.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import html
import logging
import socket
import struct
import threading
from collections.abc import Callable
from http import HTTPStatus

from exporter import __version__
from exporter.exposition import Exposition, Variant, negotiate
from exporter.webconfig import BasicAuthenticator, WebConfig

logger = logging.getLogger(__name__)

_STATUS = {int(c): b"%d %s" % (c, c.phrase.encode()) for c in HTTPStatus}
_PLAIN = b"text/plain; charset=utf-8"
_CLOSE = b"Connection: close\r\n"
_VARY = b"Vary: Accept, Accept-Encoding\r\n"
_GZIP = b"Content-Encoding: gzip\r\n"


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


def _reset(transport: asyncio.Transport) -> None:
    """Drop a connection now, including what the kernel still holds to send."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _Shared:
    """State every connection of one server reads; touched only on the server's loop thread."""

    def __init__(self, server: WebServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop
        self.connections: set[_Connection] = set()
        self.date = email.utils.formatdate(usegmt=True).encode()
        self.exposition: Exposition | None = None
        # Responses by (variant, close, head): (date they carry, bytes). Rebuilt when the
        # exposition object or the second changes, so a scrape is one write of ready bytes.
        self.prepared: list[tuple[bytes, bytes] | None] = [None] * 16
        self.variants: dict[tuple[bytes, bytes], Variant] = {}
        self.tokens = float(server.rate_burst)
        self.refilled = loop.time()

    def tick(self) -> None:
        date = email.utils.formatdate(usegmt=True).encode()
        if date != self.date:
            self.date = date
        now = self.loop.time()
        for connection in [c for c in self.connections if c.deadline < now]:
            connection.timed_out()
        self.loop.call_later(self.server.tick_interval, self.tick)

    def head(
        self, status: int, content_type: bytes, length: int, *, close: bool, extra: bytes = b""
    ) -> bytes:
        fields = (
            _STATUS[status],
            self.date,
            content_type,
            length,
            extra,
            self.server.extra_headers,
        )
        head = b"HTTP/1.1 %s\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s%s" % fields
        return head + _CLOSE + b"\r\n" if close else head + b"\r\n"

    def metrics_response(self, accept: bytes, encoding: bytes, *, close: bool, head: bool) -> bytes:
        exposition = self.server.get_exposition()
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
            extra = _VARY + _GZIP if variant.gzipped else _VARY
            response = self.head(
                200, variant.content_type.encode(), len(body), close=close, extra=extra
            )
            entry = (self.date, response if head else response + body)
            self.prepared[index] = entry
        return entry[1]

    def rate_limited(self) -> bool:
        """Take a token from the server-wide bucket (web config `rate_limit`), if one is left."""
        now = self.loop.time()
        self.tokens = min(
            self.server.rate_burst, self.tokens + (now - self.refilled) / self.server.rate_interval
        )
        self.refilled = now
        if self.tokens < 1.0:
            return True
        self.tokens -= 1.0
        return False


class _Connection(asyncio.Protocol):
    def __init__(self, shared: _Shared) -> None:
        self.shared = shared
        self.server = shared.server
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.deadline = shared.loop.time() + self.server.header_timeout
        self.in_request = False  # part of a request's head has arrived
        self.auth_pending = False
        self.write_paused = False
        self.closing = False
        self.lingering = False  # our side is shut; waiting for the client's to avoid a reset

    # --- transport events -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        config = self.server.web_config
        if len(self.shared.connections) >= self.server.max_connections:
            # Not tracked, so no deadline would end a lingering close: close at once.
            self.respond(503, b"too many connections\n", close=False, extra=_CLOSE)
            self.closing = True
            transport.close()
        elif config is not None and not config.san_allowed(transport.get_extra_info("peercert")):
            logger.info(
                "client certificate without an allowed SAN from %s",
                transport.get_extra_info("peername"),
            )
            self.closing = True
            transport.close()
        else:
            self.shared.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.shared.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.buffer = self.buffer + data if self.buffer else data
        if not (self.auth_pending or self.write_paused):
            self.process()

    def eof_received(self) -> bool:
        # A client that half-closes after its request still gets the answer to a pending check.
        return self.auth_pending

    def pause_writing(self) -> None:
        # The client is not reading: stop reading its requests and bound its time with a deadline.
        self.write_paused = True
        self.deadline = self.shared.loop.time() + self.server.idle_timeout
        self.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.resume()

    def timed_out(self) -> None:
        assert self.transport is not None
        if self.lingering:
            self.lingering = False
            self.transport.close()
        elif self.closing or self.write_paused:
            # The client reads nothing. A plain close would leave the kernel sending what it
            # holds for minutes; a zero linger time resets the connection and frees it now.
            self.closing = True
            _reset(self.transport)
        elif self.in_request or self.auth_pending:
            self.respond(408, b"request head not received in time\n", close=True)
        else:
            self.closing = True
            self.transport.close()
        self.deadline = self.shared.loop.time() + self.server.header_timeout

    def pause(self) -> None:
        assert self.transport is not None
        if not self.closing:
            self.transport.pause_reading()

    def resume(self) -> None:
        assert self.transport is not None
        if not self.closing and not (self.auth_pending or self.write_paused):
            self.transport.resume_reading()
            self.process()

    # --- requests ---------------------------------------------------------------------------

    def process(self) -> None:
        buffer, start, limit = self.buffer, 0, self.server.max_header_bytes
        while start < len(buffer) and not (self.closing or self.auth_pending or self.write_paused):
            if buffer.startswith(b"\r\n", start):  # tolerated before a request (RFC 9112 2.2)
                start += 2
                continue
            end = buffer.find(b"\r\n\r\n", start)
            if end < 0 or end + 4 - start > limit:
                if len(buffer) - start > limit or end + 4 - start > limit:
                    self.respond(431, b"request head too large\n", close=True)
                elif not self.in_request:
                    self.in_request = True
                    self.deadline = self.shared.loop.time() + self.server.header_timeout
                break
            self.in_request = False
            head, start = buffer[start:end], end + 4
            self.handle(head)
        self.buffer = buffer[start:] if start else buffer
        if not (self.buffer or self.closing or self.write_paused):
            self.deadline = self.shared.loop.time() + self.server.idle_timeout

    def handle(self, head: bytes) -> None:  # noqa: PLR0912 - one flat pass over the head
        lines = head.split(b"\r\n")
        request_line = lines[0].split(b" ")
        if len(request_line) != 3:
            self.respond(400, b"malformed request line\n", close=True)
            return
        method, target, version = request_line
        if version not in (b"HTTP/1.1", b"HTTP/1.0"):
            status = 505 if version.startswith(b"HTTP/") else 400
            self.respond(status, b"HTTP/1.1 only\n", close=True)
            return
        close = version == b"HTTP/1.0"
        accept = encoding = b""
        authorization: bytes | None = None
        hosts = 0
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name[-1] in b" \t" or name[0] in b" \t":
                self.respond(400, b"malformed header line\n", close=True)
                return
            name = name.lower()
            if name == b"accept":
                accept = accept + b"," + value.strip() if accept else value.strip()
            elif name == b"accept-encoding":
                encoding = encoding + b"," + value.strip() if encoding else value.strip()
            elif name == b"authorization":
                authorization = value.strip()
            elif name == b"host":
                hosts += 1
            elif name == b"connection":
                close = close or b"close" in value.lower()
            elif name == b"transfer-encoding" or (
                name == b"content-length" and value.strip() != b"0"
            ):
                # Bodies are never read: answer, then close instead of parsing what follows.
                close = True
        if hosts != 1 and version == b"HTTP/1.1":
            self.respond(400, b"exactly one Host header is required\n", close=True)
            return
        if target[:1] != b"/":
            scheme, _, rest = target.partition(b"://")  # absolute-form: keep only the path
            target = b"/" + rest.partition(b"/")[2] if scheme in (b"http", b"https") else b""
        request = (method, target.partition(b"?")[0], accept, encoding, close)
        authenticator = self.server.authenticator
        if self.server.rate_interval and self.shared.rate_limited():
            self.respond(429, b"rate limited\n", close=close, head=method == b"HEAD")
        elif authenticator is None or (authorization and authenticator.check_cached(authorization)):
            self.route(*request)
        elif authorization:
            self.check_password(authenticator, authorization, request)
        else:
            self.unauthorized(close=close, head=method == b"HEAD")

    def check_password(
        self,
        authenticator: BasicAuthenticator,
        authorization: bytes,
        request: tuple[bytes, bytes, bytes, bytes, bool],
    ) -> None:
        # bcrypt takes tens of milliseconds: verify off the loop and hold this connection's later
        # pipelined requests until the answer is written, so responses stay in order.
        self.auth_pending = True
        self.pause()
        future = self.shared.loop.run_in_executor(
            self.server.executor, authenticator.verify, authorization
        )

        def done(result: asyncio.Future[bool]) -> None:
            self.auth_pending = False
            if self.closing:
                return
            if not result.cancelled() and result.exception() is None and result.result():
                self.route(*request)
            else:
                peer = self.transport.get_extra_info("peername") if self.transport else None
                logger.info("basic auth failed from %s", peer)
                self.unauthorized(close=request[4], head=request[0] == b"HEAD")
            self.resume()

        future.add_done_callback(done)

    def unauthorized(self, *, close: bool, head: bool) -> None:
        realm = f'WWW-Authenticate: Basic realm="{self.server.name}", charset="UTF-8"\r\n'
        self.respond(401, b"unauthorized\n", close=close, head=head, extra=realm.encode())

    def route(
        self, method: bytes, path: bytes, accept: bytes, encoding: bytes, close: bool
    ) -> None:
        head = method == b"HEAD"
        server = self.server
        if path not in server.paths:
            self.respond(404, b"not found\n", close=close, head=head)
        elif not head and method != b"GET":
            self.respond(405, b"only GET and HEAD\n", close=close, extra=b"Allow: GET, HEAD\r\n")
        elif path == server.telemetry_path:
            try:
                response = self.shared.metrics_response(accept, encoding, close=close, head=head)
            except Exception:
                logger.exception("cannot serve the exposition")
                self.respond(500, b"internal error\n", close=close, head=head)
                return
            assert self.transport is not None
            self.transport.write(response)
            if close:
                self.finish()
        elif path == b"/healthz":
            self.respond(200, b"ok\n", close=close, head=head)
        elif path == b"/readyz":
            try:
                ready, reason = server.ready()
            except Exception:
                logger.exception("readiness check failed")
                ready, reason = False, "readiness check failed"
            body = f"{reason or ('ready' if ready else 'not ready')}\n".encode()
            self.respond(200 if ready else 503, body, close=close, head=head)
        else:
            self.respond(
                200,
                server.landing,
                close=close,
                head=head,
                content_type=b"text/html; charset=utf-8",
            )

    def respond(
        self,
        status: int,
        body: bytes,
        *,
        close: bool,
        head: bool = False,
        extra: bytes = b"",
        content_type: bytes = _PLAIN,
    ) -> None:
        assert self.transport is not None
        response = self.shared.head(status, content_type, len(body), close=close, extra=extra)
        self.transport.write(response if head else response + body)
        if close:
            self.finish()

    def finish(self) -> None:
        """End the connection after the last response.

        Closing while the client still sends (a too large head, a body, a dribble) makes the
        kernel answer with a reset that can destroy the response before it is read; shutting down
        our side and discarding input until the client closes (or a short deadline) lets it arrive.
        """
        assert self.transport is not None
        self.closing = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.lingering = True
            self.deadline = self.shared.loop.time() + min(self.server.header_timeout, 2.0)
        else:
            self.transport.close()


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
        self._shared: _Shared | None = None
        self._server: asyncio.Server | None = None

    def start(self) -> int:
        """Bind and serve; returns the bound port. Raises what binding raised."""
        started: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(started,), name="web", daemon=True)
        self._thread.start()
        return started.result()

    def _run(self, started: concurrent.futures.Future[int]) -> None:
        loop = asyncio.new_event_loop()
        shared = _Shared(self, loop)
        try:
            context = self.web_config.ssl_context() if self.web_config else None
            server = loop.run_until_complete(
                loop.create_server(
                    lambda: _Connection(shared),
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
                _reset(connection.transport)
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
