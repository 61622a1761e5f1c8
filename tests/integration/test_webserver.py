"""The HTTP side: content negotiation, keep-alive, limits and endpoints, over real sockets."""

from __future__ import annotations

import gzip
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from pg_runbook_exporter import __version__
from pg_runbook_exporter.exposition import EMPTY, Exposition, render
from pg_runbook_exporter.web.limits import Limits
from pg_runbook_exporter.web.negotiation import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    Variant,
    negotiate,
)
from pg_runbook_exporter.web.server import WebServer, parse_listen_address
from tests.support.webclient import Client, read_response, request, server_factory

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def small_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    connections = Gauge(
        "pgrb_connections", "Client connections by state.", ["datname", "state"], registry=registry
    )
    connections.labels("portal", "active").set(3)
    connections.labels("portal", "idle").set(7)
    Counter("pgrb_check_runs", "Completed check runs.", ["check"], registry=registry).labels(
        "locks"
    ).inc(5)
    return registry


@dataclass
class Holder:
    """What the collection side publishes: plain attributes the server reads."""

    exposition: Exposition
    ready: tuple[bool, str] = (True, "")


@pytest.fixture
def exposition() -> Exposition:
    return render(small_registry())


@pytest.fixture
def serve(exposition: Exposition) -> Iterator[Callable[..., tuple[int, Holder]]]:
    start_server, stop_all = server_factory()

    def start(**kwargs: Any) -> tuple[int, Holder]:
        holder = Holder(exposition)
        server = start_server(
            get_exposition=lambda: holder.exposition, ready=lambda: holder.ready, **kwargs
        )
        return server.port, holder

    yield start
    stop_all()


@pytest.fixture
def client(serve: Callable[..., tuple[int, Holder]]) -> Iterator[Client]:
    port, _ = serve()
    connection = Client(port)
    yield connection
    connection.close()


@pytest.mark.parametrize(
    ("accept", "encoding", "expected"),
    [
        ("", "", Variant.TEXT),
        (PROMETHEUS_ACCEPT, "gzip", Variant.OPENMETRICS_GZIP),
        (PROMETHEUS_ACCEPT, "", Variant.OPENMETRICS),
        ("text/plain;version=0.0.4", "gzip, deflate", Variant.TEXT_GZIP),
        ("*/*", "", Variant.TEXT),
        ("application/openmetrics-text;q=0.4,text/plain;q=0.5", "", Variant.TEXT),
        ("application/openmetrics-text;q=0.6,text/plain;q=0.5", "", Variant.OPENMETRICS),
        ("application/openmetrics-text;q=0, */*", "", Variant.TEXT),
        ("application/*", "", Variant.OPENMETRICS),
        ("text/plain", "gzip;q=0", Variant.TEXT),
        ("text/plain", "identity", Variant.TEXT),
        ("text/plain", "*", Variant.TEXT_GZIP),
        ("text/plain", "gzip;q=0, *", Variant.TEXT),
    ],
)
def test_negotiate_honours_media_and_coding_q_values(
    accept: str, encoding: str, expected: Variant
) -> None:
    assert negotiate(accept, encoding) is expected


@pytest.mark.parametrize(
    ("headers", "variant"),
    [
        ({}, Variant.TEXT),
        ({"Accept-Encoding": "gzip"}, Variant.TEXT_GZIP),
        ({"Accept": PROMETHEUS_ACCEPT}, Variant.OPENMETRICS),
        ({"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}, Variant.OPENMETRICS_GZIP),
    ],
)
def test_scrape_serves_the_rendered_bytes_for_the_negotiated_variant(
    client: Client, exposition: Exposition, headers: dict[str, str], variant: Variant
) -> None:
    response = client.get(headers=headers)
    assert response.status == 200
    assert response.body == exposition.body(variant)
    assert response.headers["content-length"] == str(len(exposition.body(variant)))
    assert response.headers["content-type"] == variant.content_type
    assert response.headers["vary"] == "Accept, Accept-Encoding"
    assert response.headers.get("content-encoding") == ("gzip" if variant.gzipped else None)
    if variant.gzipped:
        plain = exposition.openmetrics if variant >= Variant.OPENMETRICS else exposition.text
        assert gzip.decompress(response.body) == plain


def test_content_types_are_the_two_exposition_formats() -> None:
    assert TEXT_CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    assert OPENMETRICS_CONTENT_TYPE == "application/openmetrics-text; version=1.0.0; charset=utf-8"


def test_a_new_exposition_is_served_as_soon_as_it_is_published(
    serve: Callable[..., tuple[int, Holder]], exposition: Exposition
) -> None:
    port, holder = serve()
    client = Client(port)
    assert client.get().body == exposition.text
    registry = small_registry()
    Gauge("pgrb_extra", "Published later.", registry=registry).set(1)
    holder.exposition = render(registry)
    response = client.get()
    assert response.body == holder.exposition.text
    assert b"pgrb_extra 1.0" in response.body
    client.close()


def test_empty_exposition_before_the_first_collection(
    serve: Callable[..., tuple[int, Holder]],
) -> None:
    port, holder = serve()
    holder.exposition = EMPTY
    client = Client(port)
    assert client.get().body == b""
    assert client.get(headers={"Accept": PROMETHEUS_ACCEPT}).body == b"# EOF\n"
    client.close()


def test_keep_alive_serves_pipelined_requests_in_order(
    client: Client, exposition: Exposition
) -> None:
    client.send(request("/healthz") + request("/metrics") + request("/readyz") + request("/x"))
    assert read_response(client.file).body == b"ok\n"
    assert read_response(client.file).body == exposition.text
    assert read_response(client.file).body == b"ready\n"
    assert read_response(client.file).status == 404
    assert client.get("/healthz").status == 200  # the same connection is still open


def test_connection_close_is_honoured(client: Client) -> None:
    response = client.get("/healthz", headers={"Connection": "close"})
    assert response.status == 200
    assert response.headers["connection"] == "close"
    assert client.closed_by_server()


def test_http_1_0_gets_one_response_then_close(client: Client) -> None:
    client.send(b"GET /healthz HTTP/1.0\r\n\r\n")
    assert read_response(client.file).body == b"ok\n"
    assert client.closed_by_server()


def test_head_sends_the_headers_of_get_without_a_body(
    client: Client, exposition: Exposition
) -> None:
    client.send(request("/metrics", method="HEAD") + request("/healthz"))
    head = read_response(client.file, head=True)
    assert head.status == 200
    assert head.headers["content-length"] == str(len(exposition.text))
    # The next bytes on the wire are the next response, so no body was sent.
    assert read_response(client.file).body == b"ok\n"


def test_unknown_path_is_404_and_other_methods_are_405(client: Client) -> None:
    assert client.get("/nope").status == 404
    response = client.get("/metrics", method="DELETE")
    assert response.status == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert client.get("/metrics?x=1").status == 200  # the query string does not change the path


def test_request_with_a_body_is_answered_then_closed(client: Client) -> None:
    client.send(b"POST /metrics HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
    assert read_response(client.file).status == 405
    assert client.closed_by_server()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /metrics HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET /metrics HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n", 400),  # two
        (b"GET /metrics\r\nHost: h\r\n\r\n", 400),  # HTTP/0.9
        (b"GET /metrics HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        (b"GET /metrics HTTP/1.1\r\nHost : h\r\n\r\n", 400),  # space before the colon
        (b"GET /metrics HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n", 400),  # bare CR
        (b"GET /metrics HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n", 400),  # NUL
        (b"GET /metrics HTTP/1.1\r\nHost: h\r\nX(A): a\r\n\r\n", 400),  # not a token
        (b"GET /metrics HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n", 400),  # folded
        (b"GET /metrics HTTP/1.1\nHost: h\n\n", 400),  # LF without CR
        (b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400),  # space in the target
        (b"G(T /metrics HTTP/1.1\r\nHost: h\r\n\r\n", 400),  # no such method
        (b"POST /metrics HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n", 400),  # smuggling: both body framings
    ],
)  # fmt: skip
def test_malformed_requests_are_refused_and_the_connection_closed(
    serve: Callable[..., tuple[int, Holder]], raw: bytes, status: int
) -> None:
    port, _ = serve()
    client = Client(port)
    client.send(raw + request("/healthz"))  # never answered: nothing after a bad head is read
    response = read_response(client.file)
    assert response.status == status
    assert response.headers["connection"] == "close"
    assert client.closed_by_server()
    client.close()


def test_many_pipelined_requests_in_one_packet_are_answered_in_order(client: Client) -> None:
    paths = ["/healthz", "/readyz", "/nope"] * 300
    client.send(b"".join(request(path) for path in paths))
    statuses = [read_response(client.file).status for _ in paths]
    assert statuses == [200, 200, 404] * 300


def test_oversized_request_head_gets_431_and_close(client: Client) -> None:
    client.send(request(headers={"X-Big": "a" * 17000}))
    response = read_response(client.file)
    assert response.status == 431
    assert client.closed_by_server()


def test_connections_over_the_limit_get_503(serve: Callable[..., tuple[int, Holder]]) -> None:
    port, _ = serve(limits=Limits(max_connections=2))
    first, second = Client(port), Client(port)
    assert first.get("/healthz").status == 200
    assert second.get("/healthz").status == 200
    third = Client(port)
    assert read_response(third.file).status == 503
    assert third.closed_by_server()
    for client in (first, second, third):
        client.close()
    fourth = Client(port)  # slots are freed when connections close
    for _ in range(50):
        response = fourth.get("/healthz")
        if response.status == 200:
            break
        fourth.close()
        fourth = Client(port)
    assert response.status == 200
    fourth.close()


def test_landing_page_links_the_endpoints(serve: Callable[..., tuple[int, Holder]]) -> None:
    port, _ = serve(telemetry_path="/custom", name="pg-runbook-exporter")
    client = Client(port)
    response = client.get("/")
    assert response.status == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.body.decode()
    assert "pg-runbook-exporter" in page
    assert __version__ in page
    for link in ('href="/custom"', 'href="/healthz"', 'href="/readyz"'):
        assert link in page
    assert client.get("/custom").status == 200
    assert client.get("/metrics").status == 404
    client.close()


def test_readyz_is_503_with_the_reason_until_ready(
    serve: Callable[..., tuple[int, Holder]],
) -> None:
    port, holder = serve()
    holder.ready = (False, "no check run completed yet")
    client = Client(port)
    response = client.get("/readyz")
    assert (response.status, response.body) == (503, b"no check run completed yet\n")
    assert client.get("/healthz").body == b"ok\n"
    holder.ready = (True, "")
    assert client.get("/readyz").status == 200
    client.close()


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (":9819", (None, 9819)),
        ("0.0.0.0:9819", ("0.0.0.0", 9819)),
        ("[::1]:9819", ("::1", 9819)),
        ("localhost:9819", ("localhost", 9819)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
    ],
)
def test_listen_address_in_prometheus_form(address: str, expected: tuple[str | None, int]) -> None:
    assert parse_listen_address(address) == expected


@pytest.mark.parametrize("address", ["9819", "::1:9819", "host:", "host:70000", "host:http"])
def test_bad_listen_address_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match="listen address"):
        parse_listen_address(address)


def test_start_raises_when_the_port_is_taken(serve: Callable[..., tuple[int, Holder]]) -> None:
    port, _ = serve()
    server = WebServer(
        listen_address=f"127.0.0.1:{port}", get_exposition=lambda: EMPTY, ready=lambda: (True, "")
    )
    with pytest.raises(OSError):
        server.start()
    server.stop()


def test_promtool_accepts_the_served_exposition(client: Client) -> None:
    body = client.get().body
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=body, capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == b""


def test_stop_closes_the_listener_and_open_connections(exposition: Exposition) -> None:
    server = WebServer(
        listen_address="127.0.0.1:0", get_exposition=lambda: exposition, ready=lambda: (True, "")
    )
    port = server.start()
    client = Client(port)
    response = client.get("/healthz")
    assert response.status == 200
    assert "date" in response.headers
    server.stop()
    assert client.closed_by_server()
    client.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
