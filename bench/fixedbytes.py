"""The ceiling: an asyncio server that answers every request with the same pre-built bytes.

Run as `python -m bench.fixedbytes --port P --body FILE [--content-type T] [--gzip]`; the body is
a captured exposition, so the response is as large as the exporter's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def build_response(body: bytes, *, content_type: str, encoding: str | None) -> bytes:
    head = [
        "HTTP/1.1 200 OK",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
    ]
    if encoding:
        head.append(f"Content-Encoding: {encoding}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class _Fixed(asyncio.Protocol):
    """Answers each request (counted by its blank line; scrapes carry no body) with `response`."""

    def __init__(self, response: bytes) -> None:
        self._response = response
        self._transport: asyncio.Transport | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._tail + data
        requests = buf.count(b"\r\n\r\n")
        # Keep the last 3 bytes: a request's blank line may straddle two reads.
        self._tail = buf[-3:] if buf.endswith((b"\r", b"\r\n", b"\r\n\r")) else b""
        if requests and self._transport is not None:
            self._transport.write(self._response * requests)


async def _serve(host: str, port: int, response: bytes) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Fixed(response), host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--content-type", default="text/plain; version=0.0.4; charset=utf-8")
    parser.add_argument("--encoding", default=None, help="Content-Encoding of the body, e.g. gzip")
    args = parser.parse_args()
    response = build_response(
        args.body.read_bytes(), content_type=args.content_type, encoding=args.encoding
    )
    asyncio.run(_serve(args.host, args.port, response))


if __name__ == "__main__":
    main()
