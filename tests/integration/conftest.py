"""Fixtures the web-config tests share: a one-gauge exposition and servers started on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry, Gauge

from pg_runbook_exporter.exposition import Exposition, render
from pg_runbook_exporter.web.webconfig import WebConfig
from tests.support.webclient import server_factory


@pytest.fixture
def exposition() -> Exposition:
    registry = CollectorRegistry()
    Gauge("pgrb_up", "Whether the database answered.", registry=registry).set(1)
    return render(registry)


@pytest.fixture
def serve(exposition: Exposition) -> Iterator[Callable[[WebConfig], int]]:
    start_server, stop_all = server_factory()

    def start(config: WebConfig) -> int:
        server = start_server(
            get_exposition=lambda: exposition, ready=lambda: (True, ""), web_config=config
        )
        return server.port

    yield start
    stop_all()
