"""A connection's deadlines against hostile clients: slowloris, CRLF trickles, clients that never
read, TLS handshakes that never end.

Deadline tests drive the server's clock by hand (``FakeClock``) and ask it to act on overdue
connections (``expire_overdue``): each proves both that nothing is closed just before the
configured deadline and that everything past it is, without waiting for it.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge

from pg_runbook_exporter.exposition import Exposition, render
from pg_runbook_exporter.web.limits import Limits
from pg_runbook_exporter.web.server import WebServer
from pg_runbook_exporter.web.statelog import HOLD_DOWN
from pg_runbook_exporter.web.webconfig import load_web_config
from tests.support.webclient import (
    REQUEST,
    Client,
    FakeClock,
    closed,
    connect,
    is_open,
    read_response,
    request,
    self_signed,
    server_factory,
    settle,
)


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
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def serve(exposition: Exposition, clock: FakeClock) -> Iterator[Callable[..., WebServer]]:
    start_server, stop_all = server_factory()

    def start(**kwargs: Any) -> WebServer:
        return start_server(
            get_exposition=lambda: exposition, ready=lambda: (True, ""), clock=clock, **kwargs
        )

    yield start
    stop_all()


def scrape(port: int, *, context: ssl.SSLContext | None = None) -> bytes:
    """One complete scrape on a fresh connection from 127.0.0.1: the body."""
    client = Client(port, context=context)
    response = client.get()
    client.close()
    assert response.status == 200
    return response.body


def test_two_hundred_slowloris_connections_get_408_at_the_deadline_however_they_dribble(
    serve: Callable[..., WebServer], exposition: Exposition, clock: FakeClock
) -> None:
    server = serve(limits=Limits(request_head_timeout=2.0, max_connections_per_client=256))
    slow = []
    for i in range(200):
        sock = connect(server.port, source="127.0.0.2")
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-%d: " % i)
        slow.append(sock)
    assert scrape(server.port) == exposition.text
    clock.advance(1.9)
    for sock in slow:
        sock.sendall(b"z")  # a byte moves no deadline: a server restarting it would fail below
    settle(server)
    server.expire_overdue()
    assert scrape(server.port) == exposition.text
    assert all(is_open(sock) for sock in slow)  # closed early, this would fail
    clock.advance(0.2)  # 2.1 s after the first byte of each head
    server.expire_overdue()
    answers = set()
    for sock in slow:
        answers.add(sock.recv(64).split(b"\r\n")[0])
        assert closed(sock)
        sock.close()
    assert answers == {b"HTTP/1.1 408 Request Timeout"}
    assert scrape(server.port) == exposition.text


def test_a_bare_crlf_now_and_then_does_not_extend_the_head_deadline(
    serve: Callable[..., WebServer], clock: FakeClock
) -> None:
    server = serve(limits=Limits(request_head_timeout=10.0, idle_timeout=60.0))
    client = Client(server.port)
    assert client.get("/healthz").status == 200
    settle(server)
    clock.advance(50)
    client.send(b"\r\n")  # the next head has begun: it has until 50 + 10 s
    settle(server)
    clock.advance(9)
    client.send(b"\r\n")  # a server restarting the idle (or head) wait here would fail below
    server.expire_overdue()
    assert is_open(client.sock)
    clock.advance(2)
    server.expire_overdue()
    assert read_response(client.file).status == 408
    assert client.closed_by_server()
    client.close()


def test_an_idle_keep_alive_connection_is_closed_at_the_idle_deadline(
    serve: Callable[..., WebServer], clock: FakeClock
) -> None:
    server = serve(limits=Limits(idle_timeout=60.0))
    client = Client(server.port)
    assert client.get("/healthz").status == 200
    settle(server)
    clock.advance(59)
    server.expire_overdue()
    assert is_open(client.sock)
    clock.advance(2)
    server.expire_overdue()
    assert client.closed_by_server()  # without a response: nothing was asked
    client.close()


def test_a_client_that_never_reads_is_reset_at_the_idle_deadline_while_others_scrape(
    serve: Callable[..., WebServer], exposition: Exposition, clock: FakeClock
) -> None:
    server = serve(limits=Limits(idle_timeout=5.0))
    hog = socket.socket()
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.bind(("127.0.0.2", 0))
    hog.connect(("127.0.0.1", server.port))
    hog.sendall(REQUEST * 500)  # ~100 MB of responses if it ever read them
    for _ in range(20):
        assert scrape(server.port) == exposition.text
    settle(server)
    clock.advance(4)
    server.expire_overdue()
    assert hog.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0  # still connected
    clock.advance(2)
    server.expire_overdue()
    # A reset, not a close: after a close the kernel would keep trying to deliver the queued
    # responses for minutes. A server without a write deadline leaves the error at 0.
    error = 0
    for _ in range(200):
        error = hog.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            break
        time.sleep(0.05)
    hog.close()
    assert error == 104  # ECONNRESET
    assert scrape(server.port) == exposition.text


def test_tls_handshakes_hold_slots_and_end_at_the_head_deadline(
    serve: Callable[..., WebServer], exposition: Exposition, clock: FakeClock, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    server = serve(web_config=load_web_config(web), limits=Limits(request_head_timeout=1.5))
    context = ssl.create_default_context(cafile=cert)
    silent = [connect(server.port, source="127.0.0.2") for _ in range(50)]
    # Half a TLS record header: the server waits for the rest of the ClientHello.
    halfway = [connect(server.port, source="127.0.0.2") for _ in range(50)]
    for sock in halfway:
        sock.sendall(b"\x16\x03\x01")
    for _ in range(10):
        assert scrape(server.port, context=context) == exposition.text
    assert server.open_connections() >= 100  # a server counting only after the handshake: 0
    clock.advance(1.4)
    server.expire_overdue()
    assert all(is_open(sock) for sock in silent + halfway)
    clock.advance(0.2)
    server.expire_overdue()
    for sock in silent + halfway:
        # Well before asyncio's own 60 s handshake timeout, which alone would fail this.
        sock.settimeout(10)
        assert closed(sock)
        sock.close()
    assert scrape(server.port, context=context) == exposition.text


def test_a_repeated_request_head_is_answered_as_parsed_and_a_changed_one_is_parsed_anew(
    serve: Callable[..., WebServer], exposition: Exposition
) -> None:
    """A scraper's identical heads skip llhttp; a cache keyed on the path, or on a connection's
    first head, would answer the third request below with OpenMetrics."""
    server = serve()
    client = Client(server.port)
    openmetrics = {"Accept": "application/openmetrics-text;version=1.0.0"}
    first, second = client.get(headers=openmetrics), client.get(headers=openmetrics)
    assert first.headers["content-type"] == second.headers["content-type"]
    assert first.headers["content-type"].startswith("application/openmetrics-text")
    assert second.body == exposition.openmetrics
    text = {"Accept": "text/plain;version=0.0.4"}
    third = client.get(headers=text)
    assert third.headers["content-type"].startswith("text/plain")
    assert third.body == exposition.text
    assert client.get("/healthz").body == b"ok\n"
    client.close()


def test_a_malformed_head_as_long_as_a_repeated_good_one_is_still_refused(
    serve: Callable[..., WebServer],
) -> None:
    """One NUL in place of a letter of the head just served: only llhttp can tell."""
    server = serve()
    client = Client(server.port)
    good = request(headers={"User-Agent": "Prometheus/3.1.0"})
    for _ in range(2):
        client.send(good)
        assert read_response(client.file).status == 200
    client.send(good.replace(b"Prometheus", b"Prome\x00heus"))
    assert read_response(client.file).status == 400
    assert client.closed_by_server()
    client.close()


def test_failing_readiness_and_exposition_log_one_traceback_each_and_one_end(
    exposition: Exposition, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Ten /readyz and ten /metrics whose callables raise, each /metrics failure followed by one
    that works. Fails when each failure logs its own traceback (20), or when a served scrape
    ends the condition: each failure then starts it again."""
    caplog.set_level(logging.INFO, logger="pg_runbook_exporter.web.shared")
    served = iter([None, exposition] * 10)

    def get_exposition() -> Exposition:
        body = next(served)
        if body is None:
            raise RuntimeError("rendering failed")
        return body

    def ready() -> tuple[bool, str]:
        raise RuntimeError("the cache is broken")

    start_server, stop_all = server_factory()
    try:
        server = start_server(get_exposition=get_exposition, ready=ready, clock=clock)
        client = Client(server.port)
        for _ in range(10):
            assert client.get("/readyz").status == 503
            assert client.get().status == 500
            assert client.get().status == 200
            clock.advance(HOLD_DOWN / 2)  # gaps shorter than the hold-down, each swept
            server.expire_overdue()
        client.close()
        assert [(r.getMessage(), r.exc_info is not None) for r in caplog.records] == [
            ("readiness check failed", True),
            ("cannot serve the exposition", True),
        ]
        caplog.clear()
        clock.advance(HOLD_DOWN / 2)
        server.expire_overdue()
        assert [r.getMessage() for r in caplog.records] == [
            "serving the exposition again: no failure for 5 s (10 failed)",
            "readiness checks without error again for 5 s (10 failed)",
        ]
    finally:
        stop_all()
