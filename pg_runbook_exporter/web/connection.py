"""One HTTP/1.1 connection of the exporter's server: parse, route, write pre-built responses.

Everything here runs on the server's event-loop thread. A request costs a header parse, two dict
lookups and one ``write()`` of a response built once per exposition and second.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import socket
import struct
from http import HTTPStatus
from typing import TYPE_CHECKING

from pg_runbook_exporter.exposition import Exposition, Variant, negotiate
from pg_runbook_exporter.web.webconfig import BasicAuthenticator

if TYPE_CHECKING:
    from pg_runbook_exporter.web.server import WebServer

logger = logging.getLogger(__name__)

_STATUS = {int(c): b"%d %s" % (c, c.phrase.encode()) for c in HTTPStatus}
_PLAIN = b"text/plain; charset=utf-8"
_CLOSE = b"Connection: close\r\n"
_VARY = b"Vary: Accept, Accept-Encoding\r\n"
_GZIP = b"Content-Encoding: gzip\r\n"


def reset(transport: asyncio.Transport) -> None:
    """Drop a connection now, including what the kernel still holds to send."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class Shared:
    """State every connection of one server reads; touched only on the server's loop thread."""

    def __init__(self, server: WebServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop
        self.connections: set[Connection] = set()
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


class Connection(asyncio.Protocol):
    def __init__(self, shared: Shared) -> None:
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
            reset(self.transport)
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
