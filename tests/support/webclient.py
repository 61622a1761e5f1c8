"""Raw-socket HTTP clients, a hand-driven clock and certificates for the web server's tests.

``serve_web(...)``  a ``WebServer`` on an ephemeral loopback port, stopped at exit.
``Client``          one keep-alive connection; ``get()`` sends a request and reads the response.
``FakeClock``       the server's deadline clock, moved by the test (``advance``), so a deadline
                    test proves the configured value is honoured without waiting for it.
``self_signed``     a certificate and key for 127.0.0.1 (openssl); ``make_pki`` a server and a
                    client certificate; ``https`` a client trusting the server's.
``write_config``    a web config file from a mapping (or text); ``basic`` an Authorization header;
``get``             one request on an ``http.client`` connection: (status, headers, body).
``settle``          wait until the server has read what a test just sent (before moving the clock).
``is_open``         whether the server still holds a connection open, without waiting.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from pg_runbook_exporter.web.server import WebServer

REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def read_response(stream: BinaryIO, *, head: bool = False) -> Response:
    """One response from a buffered socket file; the body by Content-Length."""
    reader = stream.readline
    status_line = reader()
    assert status_line, "connection closed before a response"
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := reader()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if head else int(headers["content-length"])
    body = stream.read(length) if length else b""
    return Response(status, headers, body)


def request(
    path: str = "/metrics", *, method: str = "GET", headers: dict[str, str] | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(
    port: int, *, source: str = "127.0.0.1", context: ssl.SSLContext | None = None
) -> socket.socket:
    """A connection from `source` (any 127.x.y.z address on Linux' loopback)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    return context.wrap_socket(sock, server_hostname="127.0.0.1") if context else sock


class Client:
    def __init__(
        self, port: int, *, source: str = "127.0.0.1", context: ssl.SSLContext | None = None
    ) -> None:
        self.sock = connect(port, source=source, context=context)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def get(
        self, path: str = "/metrics", *, method: str = "GET", headers: dict[str, str] | None = None
    ) -> Response:
        self.send(request(path, method=method, headers=headers))
        return read_response(self.file, head=method == "HEAD")

    def closed_by_server(self) -> bool:
        try:
            return self.file.read(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextlib.contextmanager
def serve_web(**kwargs: Any) -> Iterator[WebServer]:
    server = WebServer(listen_address="127.0.0.1:0", **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def server_factory() -> tuple[Callable[..., WebServer], Callable[[], None]]:
    """A function starting servers and one stopping all it started (for fixtures)."""
    stack = contextlib.ExitStack()

    def start(**kwargs: Any) -> WebServer:
        return stack.enter_context(serve_web(**kwargs))

    return start, stack.close


def settle(server: WebServer) -> None:
    """Return once the server's loop has handled what was sent to it before the call.

    On loopback, bytes are in the server's socket when `sendall` returns; a round trip through
    the loop (twice: the call is queued before the loop polls its sockets) lets it read them.
    """
    server.open_connections()
    server.open_connections()


def is_open(sock: socket.socket) -> bool:
    """True while the server keeps `sock` open and silent; reads nothing that is there."""
    sock.setblocking(False)
    try:
        data = sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except (ConnectionResetError, ssl.SSLError):
        return False
    finally:
        sock.setblocking(True)
    return bool(data)


def closed(sock: socket.socket) -> bool:
    """Whether the server closed (or reset) this connection; reads whatever is left first."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:  # still open after the socket's timeout
        return False
    return True


def self_signed(
    directory: Path, name: str = "server", san: str = "IP:127.0.0.1"
) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def make_pki(directory: Path) -> dict[str, Path]:
    """A server certificate for 127.0.0.1 and a client one for DNS:prometheus.example."""
    server_cert, server_key = self_signed(directory, "server", "IP:127.0.0.1")
    client_cert, client_key = self_signed(directory, "client", "DNS:prometheus.example")
    return {
        "dir": directory,
        "server_cert": server_cert,
        "server_key": server_key,
        "client_cert": client_cert,
        "client_key": client_key,
    }


def https(
    port: int, pki: dict[str, Path], *, client_cert: bool = False
) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=pki["server_cert"])
    if client_cert:
        context.load_cert_chain(pki["client_cert"], pki["client_key"])
    return http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)


def write_config(directory: Path, content: object, name: str = "web.yml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(content) if not isinstance(content, str) else content)
    return path


def authorization(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": authorization(user, password)}


def get(
    connection: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
