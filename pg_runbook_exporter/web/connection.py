"""One HTTP/1.1 connection: TLS, parse (llhttp), authorise, route, write pre-built responses.

Everything here runs on the server's event-loop thread. A scrape costs a parse (or, for a head
byte for byte the connection's last, one comparison), two dict lookups and one `write()` of a
response built once per exposition and second. The connection reads
`shared.settings` (frozen) and the two callables `shared` carries; it never sees the server.

Deadlines are absolute: a request head must be complete `request_head_timeout` after its first
byte (for the first request: after the accept, TLS handshake included); bytes that end no request
head, such as a bare CRLF, never move a deadline. Only a served request starts the idle wait.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct

from pg_runbook_exporter.web.auth import BasicAuthenticator
from pg_runbook_exporter.web.request import Head, HeadReader, ParseError, Request
from pg_runbook_exporter.web.shared import CLOSE, Shared

logger = logging.getLogger(__name__)

_PLAIN = b"text/plain; charset=utf-8"


def reset(transport: asyncio.Transport) -> None:
    """Drop a connection now, including what the kernel still holds to send."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class Connection(asyncio.Protocol):
    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.raw: asyncio.Transport | None = None  # the TCP transport; under TLS, below `transport`
        self.transport: asyncio.Transport | None = None  # None until a TLS handshake completes
        self.client = ""
        self.reader = HeadReader()
        # The last request head parsed whole from one read, and what llhttp made of it: a scraper
        # sends the same bytes every time, and the same bytes always parse the same way.
        self.repeat = b""
        self.repeated: Head | None = None
        self.buffer = b""  # received, not yet fed to the parser
        self.head_bytes = 0  # fed since the last complete request head
        self.in_head = True  # a byte of the next request head has arrived (or none was served)
        self.deadline = 0.0
        self.auth: asyncio.Future[bool] | None = None
        self.write_paused = False
        self.closing = False
        self.lingering = False  # our side is shut; waiting for the client's to avoid a reset

    # --- transport events -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.raw = transport
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else ""
        settings = self.shared.settings
        if not self.shared.admit(self, self.client):
            self.closing = True
            if settings.ssl_context is None:
                self.transport = transport
                # Not tracked, so no deadline would end a lingering close: close at once.
                self.respond(503, b"too many connections\n", close=False, extra=CLOSE)
            transport.close()
            return
        self.deadline = settings.clock() + settings.limits.request_head_timeout
        if settings.ssl_context is None:
            self.transport = transport
        else:
            transport.pause_reading()
            self.shared.loop.create_task(self._handshake(settings.ssl_context))

    async def _handshake(self, context: ssl.SSLContext) -> None:
        assert self.raw is not None
        try:
            # asyncio's own handshake timeout (60 s) is only a backstop: the head deadline,
            # swept by the server, ends a handshake that has not completed in time.
            tls = await self.shared.loop.start_tls(self.raw, self, context, server_side=True)
        except Exception as exc:  # any failure ends the connection; none is worth more than this
            logger.debug("TLS handshake with %s failed: %s", self.client, exc)
            tls = None
        if tls is None or self.closing:  # None: the connection was lost during the handshake
            self.closing = True
            self.shared.release(self)
            return
        assert isinstance(tls, asyncio.Transport)
        self.transport = tls
        tls_config = self.shared.settings.tls
        if tls_config is not None and not tls_config.san_allowed(tls.get_extra_info("peercert")):
            self.shared.bad_certificates.occurred(
                "client certificate without an allowed SAN from %s; further ones are counted "
                "and logged when they stop",
                self.client,
            )
            self.closing = True
            tls.close()
            return
        if self.buffer:
            self.process()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.shared.release(self)
        if self.auth is not None:
            self.auth.cancel()  # its client has gone: the check is dropped if not yet running

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if not self.in_head:
            self.in_head = True
            settings = self.shared.settings
            self.deadline = settings.clock() + settings.limits.request_head_timeout
        self.buffer = self.buffer + data if self.buffer else data
        if self.auth is not None:
            # Reading goes on during a password check, so that a client leaving is noticed (and
            # its check dropped); what it pipelines meanwhile is held, up to one head's size.
            if len(self.buffer) > self.shared.settings.limits.max_request_head_bytes:
                self.pause()
        elif not self.write_paused and self.transport is not None:
            self.process()

    def eof_received(self) -> bool:
        # The client has given up (as Prometheus does at its scrape timeout): a check still
        # waiting for it is dropped, and the connection closed.
        if self.auth is not None:
            self.auth.cancel()
            self.auth = None
        return False

    def pause_writing(self) -> None:
        # The client is not reading: stop reading its requests and bound its time with a deadline.
        self.write_paused = True
        settings = self.shared.settings
        self.deadline = settings.clock() + settings.limits.idle_timeout
        self.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.resume()

    def timed_out(self) -> None:
        transport = self.transport
        settings = self.shared.settings
        if self.lingering and transport is not None:
            self.lingering = False
            transport.close()
        elif transport is None or self.closing or self.write_paused:
            # A handshake not done, or a client that reads nothing. A plain close would leave
            # the kernel sending what it holds for minutes; a reset frees the slot now.
            self.drop()
        elif self.in_head or self.auth is not None:
            if self.auth is not None:
                self.auth.cancel()
                self.auth = None
            self.respond(408, b"request head not received in time\n", close=True)
        else:
            self.closing = True
            transport.close()
        self.deadline = settings.clock() + settings.limits.request_head_timeout

    def drop(self) -> None:
        """Reset now (a newer connection needs the slot, or a deadline passed)."""
        self.closing = True
        self.shared.release(self)
        transport = self.transport or self.raw
        if transport is not None:
            reset(transport)

    def close_gently(self) -> None:
        self.closing = True
        transport = self.transport or self.raw
        if transport is not None:
            transport.close()  # flushes what is already written

    def pause(self) -> None:
        if not self.closing and self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        if not self.closing and not (self.auth or self.write_paused) and self.transport:
            self.transport.resume_reading()
            self.process()

    # --- requests ---------------------------------------------------------------------------

    def process(self) -> None:
        """Feed the parser one request head at a time, so that a request waiting for its
        password check or for the client to read holds back the ones pipelined after it."""
        if self.buffer == self.repeat and not self.head_bytes and self.repeated is not None:
            self.serve_repeat(self.repeated)
            return
        buffer, start, limit = self.buffer, 0, self.shared.settings.limits.max_request_head_bytes
        view = None
        while start < len(buffer) and not (self.closing or self.auth or self.write_paused):
            end = buffer.find(b"\r\n\r\n", start)
            stop = len(buffer) if end < 0 else end + 4
            self.head_bytes += stop - start
            if self.head_bytes > limit:
                self.respond(431, b"request head too large\n", close=True)
                break
            if start == 0 and stop == len(buffer):
                chunk: bytes | memoryview = buffer  # the common case: one request, one read
            else:
                view = view or memoryview(buffer)
                chunk = view[start:stop]
            try:
                head = self.reader.feed(chunk)
            except ParseError:
                self.respond(400, b"malformed request\n", close=True)
                break
            start = stop
            if head is not None:
                if chunk is buffer and head[2] is None and not head[0][4]:
                    self.repeat, self.repeated = buffer, head
                self.head_bytes, self.in_head = 0, False
                self.handle(*head)
        self.buffer = buffer[start:] if start else buffer
        if self.closing or self.auth or self.write_paused:
            return
        settings = self.shared.settings
        if self.buffer:
            if not self.in_head:
                self.in_head = True
                self.deadline = settings.clock() + settings.limits.request_head_timeout
        elif not self.in_head:
            self.deadline = settings.clock() + settings.limits.idle_timeout

    def serve_repeat(self, head: Head) -> None:
        """Answer a head equal to the last one parsed; llhttp sits between messages, as then."""
        self.buffer, self.in_head = b"", False
        self.handle(*head)
        if not (self.closing or self.auth or self.write_paused):
            settings = self.shared.settings
            self.deadline = settings.clock() + settings.limits.idle_timeout

    def handle(
        self, request: Request, authorization: bytes | None, error: tuple[int, bytes] | None
    ) -> None:
        if error is not None:
            self.respond(error[0], error[1], close=True)
            return
        authenticator = self.shared.settings.authenticator
        if authenticator is None:
            self.authorised(request)
            return
        verdict = authenticator.cached(authorization) if authorization else False
        if verdict is None:
            assert authorization is not None
            self.check_password(authenticator, authorization, request)
        elif verdict:
            self.authorised(request)
        else:
            self.unauthorised(request)

    def check_password(
        self, authenticator: BasicAuthenticator, authorization: bytes, request: Request
    ) -> None:
        future = authenticator.verify(self.shared.loop, authorization)
        if future is None:
            self.shared.auth_busy.occurred(
                "password checks queued to the limit (limits.max_pending_password_checks): "
                "answering 429 to new ones while it is full"
            )
            self.respond(
                429,
                b"too many password checks in progress\n",
                close=request[4],
                head=request[0] == b"HEAD",
                extra=b"Retry-After: 1\r\n",
            )
            return
        # Hold this connection's later pipelined requests until the answer is written, so
        # responses stay in order.
        self.auth = future

        def done(result: asyncio.Future[bool]) -> None:
            if self.auth is not result:
                return  # timed out meanwhile: already answered 408
            self.auth = None
            if self.closing:
                return
            if not result.cancelled() and result.exception() is None and result.result():
                self.authorised(request)
            else:
                self.unauthorised(request)
            self.resume()

        future.add_done_callback(done)

    def unauthorised(self, request: Request) -> None:
        self.shared.auth_failures.occurred(
            "basic auth failed from %s; further failures are counted and logged when they stop",
            self.client,
        )
        settings = self.shared.settings
        self.respond(
            401, b"unauthorized\n", close=request[4], head=request[0] == b"HEAD",
            extra=settings.realm,
        )  # fmt: skip

    def authorised(self, request: Request) -> None:
        shared = self.shared
        if shared.rate_limited(self.client):
            self.respond(429, b"rate limited\n", close=request[4], head=request[0] == b"HEAD")
            return
        shared.trust(self)
        self.route(*request)

    def route(
        self, method: bytes, path: bytes, accept: bytes, encoding: bytes, close: bool
    ) -> None:
        head = method == b"HEAD"
        shared = self.shared
        settings = shared.settings
        if path not in settings.paths:
            self.respond(404, b"not found\n", close=close, head=head)
        elif not head and method != b"GET":
            self.respond(405, b"only GET and HEAD\n", close=close, extra=b"Allow: GET, HEAD\r\n")
        elif path == settings.telemetry_path:
            try:
                response = shared.metrics_response(accept, encoding, close=close, head=head)
            except Exception:
                shared.serve_errors.occurred("cannot serve the exposition", exc_info=True)
                self.respond(500, b"internal error\n", close=close, head=head)
                return
            assert self.transport is not None
            self.transport.write(response)
            if close:
                self.finish()
        elif path in settings.pages:
            page = settings.pages[path]()
            self.respond(
                200, page.body, close=close, head=head, extra=page.headers,
                content_type=page.content_type,
            )  # fmt: skip
        elif path == b"/healthz":
            self.respond(200, b"ok\n", close=close, head=head)
        elif path == b"/readyz":
            try:
                ready, reason = shared.ready()
            except Exception:
                shared.ready_errors.occurred("readiness check failed", exc_info=True)
                ready, reason = False, "readiness check failed"
            body = f"{reason or ('ready' if ready else 'not ready')}\n".encode()
            self.respond(200 if ready else 503, body, close=close, head=head)
        else:
            html = b"text/html; charset=utf-8"
            self.respond(200, settings.landing, close=close, head=head, content_type=html)

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
            settings = self.shared.settings
            self.deadline = settings.clock() + min(settings.limits.request_head_timeout, 2.0)
        else:
            self.transport.close()
