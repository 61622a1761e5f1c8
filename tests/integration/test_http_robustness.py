"""Hostile HTTP clients en masse, beyond test_webserver.py's one-at-a-time cases: many slowloris
connections, a client that never reads its responses, and TLS clients that never finish
the handshake. Other scrapers are served all the while, and every bad connection is closed.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge

from pg_runbook_exporter.exposition import Exposition, render
from pg_runbook_exporter.web.server import WebServer
from pg_runbook_exporter.web.webconfig import load_web_config

REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def big_exposition(series: int = 3000) -> Exposition:
    registry = CollectorRegistry()
    gauge = Gauge("pgrb_table_size_bytes", "Size.", ["schemaname", "relname"], registry=registry)
    for i in range(series):
        gauge.labels("public", f"table_{i:05d}").set(i * 8192)
    return render(registry)


@pytest.fixture(scope="module")
def exposition() -> Exposition:
    return big_exposition()


@pytest.fixture
def serve(exposition: Exposition) -> Iterator[Callable[..., WebServer]]:
    servers: list[WebServer] = []

    def start(**kwargs: object) -> WebServer:
        server = WebServer(
            listen_address="127.0.0.1:0",
            get_exposition=lambda: exposition,
            ready=lambda: (True, ""),
            **kwargs,  # type: ignore[arg-type]
        )
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def scrape(port: int, *, context: ssl.SSLContext | None = None) -> bytes:
    """One complete scrape on a fresh connection: the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1") if context else raw
        sock.sendall(REQUEST)
        stream = sock.makefile("rb")
        assert stream.readline().startswith(b"HTTP/1.1 200")
        length = 0
        while (line := stream.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return stream.read(length)


def closed(sock: socket.socket) -> bool:
    """Whether the server closed (or reset) this connection; reads whatever is left."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:  # still open after the socket's timeout
        return False
    return True


def test_two_hundred_slowloris_connections_do_not_block_scrapers(
    serve: Callable[..., WebServer], exposition: Exposition
) -> None:
    server = serve(header_timeout=2.0)
    slow = []
    for i in range(200):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-%d: " % i)
        slow.append(sock)
    scrapes = 0
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # while every slow head is still open
        for sock in slow[::20]:
            sock.sendall(b"z")
        assert scrape(server.port) == exposition.text
        scrapes += 1
    assert scrapes >= 1
    answers = set()
    for sock in slow:
        answers.add(sock.recv(64).split(b"\r\n")[0])
        assert closed(sock)
        sock.close()
    assert answers == {b"HTTP/1.1 408 Request Timeout"}
    assert scrape(server.port) == exposition.text


def test_a_client_that_never_reads_is_dropped_while_others_scrape(
    serve: Callable[..., WebServer], exposition: Exposition
) -> None:
    server = serve(idle_timeout=1.0)
    hog = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    pipelined = 500  # ~100 MB of responses if it ever read them
    hog.sendall(REQUEST * pipelined)
    for _ in range(20):
        assert scrape(server.port) == exposition.text
    time.sleep(1.5)  # past the idle timeout with the hog's window still full
    received = 0
    with contextlib.suppress(ConnectionResetError):
        while chunk := hog.recv(1 << 20):
            received += len(chunk)
    hog.close()
    assert received < pipelined * len(exposition.text)  # cut off, not served in full
    assert scrape(server.port) == exposition.text


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=exporter", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_clients_that_never_finish_the_handshake_do_not_block_scrapers(
    serve: Callable[..., WebServer], exposition: Exposition, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    server = serve(web_config=load_web_config(web), header_timeout=1.5)
    context = ssl.create_default_context(cafile=cert)
    silent = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(50)]
    # Half a TLS record header: the server waits for the rest of the ClientHello.
    halfway = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(50)]
    for sock in halfway:
        sock.sendall(b"\x16\x03\x01")
    for _ in range(10):
        assert scrape(server.port, context=context) == exposition.text
    for sock in silent + halfway:
        assert closed(sock)  # by the handshake timeout
        sock.close()
    assert scrape(server.port, context=context) == exposition.text
