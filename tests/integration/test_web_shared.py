"""Slots under pressure: a client over its cap and a full server make room from the oldest
connections not yet served, never from the ones that work."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge

from pg_runbook_exporter.exposition import Exposition, render
from pg_runbook_exporter.web.limits import Limits
from pg_runbook_exporter.web.server import WebServer
from pg_runbook_exporter.web.statelog import HOLD_DOWN
from tests.support.webclient import (
    Client,
    FakeClock,
    closed,
    connect,
    is_open,
    read_response,
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


def test_a_client_over_its_cap_loses_its_oldest_unserved_connections_not_others(
    serve: Callable[..., WebServer], exposition: Exposition
) -> None:
    server = serve(limits=Limits(max_connections_per_client=3))
    crowd = [connect(server.port, source="127.0.0.2") for _ in range(5)]
    assert scrape(server.port) == exposition.text  # another address: unaffected
    assert [closed(sock) for sock in crowd[:2]] == [True, True]  # reset to make room
    assert all(is_open(sock) for sock in crowd[2:])
    for sock in crowd:
        sock.close()


def test_at_the_connection_limit_the_oldest_unserved_connection_makes_room(
    serve: Callable[..., WebServer], exposition: Exposition
) -> None:
    server = serve(limits=Limits(max_connections=4))
    served = Client(server.port)
    assert served.get("/healthz").status == 200  # served: kept whatever comes after
    idle = [connect(server.port, source="127.0.0.2") for _ in range(3)]
    newcomers = []
    for i in range(3):  # each pushes out the oldest connection that has asked nothing yet
        newcomers.append(Client(server.port))
        assert newcomers[-1].get().body == exposition.text
        assert closed(idle[i])  # a server refusing at the limit would answer 503 instead
        assert all(is_open(sock) for sock in idle[i + 1 :])
    assert served.get().body == exposition.text
    assert server.open_connections() == 4
    fifth = Client(server.port)  # every slot is held by a served connection: refused
    assert read_response(fifth.file).status == 503
    for client in [served, fifth, *newcomers]:
        client.close()


def test_a_client_at_its_cap_again_and_again_logs_one_start_and_one_end(
    serve: Callable[..., WebServer], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Five connections past one client's cap, each followed by a scrape from another address
    that is below every limit. Fails when that scrape ends the condition: each crowding then
    logs a start again (and the scrape an end), 10 lines instead of 2."""
    caplog.set_level(logging.INFO, logger="pg_runbook_exporter.web.shared")
    server = serve(limits=Limits(max_connections_per_client=2, request_head_timeout=60))
    crowd = [connect(server.port, source="127.0.0.2") for _ in range(2)]
    for _ in range(5):
        crowd.append(connect(server.port, source="127.0.0.2"))  # the oldest makes room
        settle(server)
        scrape(server.port)
        clock.advance(HOLD_DOWN / 2)  # gaps shorter than the hold-down, each swept
        server.expire_overdue()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "connection limit reached (max_connections_per_client 2, 127.0.0.2): closing the oldest "
        "connections not yet served an authorised request to make room, refusing new ones when "
        "there is none"
    ]
    clock.advance(HOLD_DOWN / 2)
    server.expire_overdue()
    assert [r.getMessage() for r in caplog.records] == [
        *lines,
        "connection limits not reached for 5 s; 5 connections were closed to make room or refused",
    ]
    for sock in crowd:
        sock.close()
