"""``python -m pg_runbook_exporter.healthcheck``, the image's HEALTHCHECK and exec probe.

Run as the container runs it, against the real web server: plain, with basic auth (a 401 is
alive, no password needed), with TLS (retried over HTTPS), and against nothing at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
from prometheus_client import CollectorRegistry, Gauge

from pg_runbook_exporter.exposition import render
from pg_runbook_exporter.healthcheck import default_url
from pg_runbook_exporter.web.server import WebServer
from pg_runbook_exporter.web.webconfig import WebConfig, load_web_config
from tests.integration.test_webconfig import self_signed, write_config
from tests.support.stack import free_port


@pytest.fixture
def serve() -> Iterator[Callable[[WebConfig | None], int]]:
    registry = CollectorRegistry()
    Gauge("pgrb_up", "Whether the database answered.", registry=registry).set(0)
    exposition = render(registry)
    servers: list[WebServer] = []

    def start(config: WebConfig | None) -> int:
        server = WebServer(
            listen_address="127.0.0.1:0",
            get_exposition=lambda: exposition,
            ready=lambda: (False, "database not reachable"),
            web_config=config,
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def healthcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pg_runbook_exporter.healthcheck", "--timeout", "5", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )


@pytest.mark.parametrize(
    ("address", "url"),
    [
        (None, "http://127.0.0.1:9819/healthz"),
        (":9900", "http://127.0.0.1:9900/healthz"),
        ("0.0.0.0:9900", "http://127.0.0.1:9900/healthz"),
        ("10.1.2.3:9900", "http://10.1.2.3:9900/healthz"),
        ("[::]:9900", "http://[::1]:9900/healthz"),
        ("[::1]:9900", "http://[::1]:9900/healthz"),
    ],
)
def test_the_default_url_is_healthz_on_the_listen_address(address: str | None, url: str) -> None:
    environ = {} if address is None else {"PGRB_WEB_LISTEN_ADDRESS": address}
    assert default_url(environ) == url


def test_alive_while_the_database_is_down(serve: Callable[[WebConfig | None], int]) -> None:
    port = serve(None)
    done = healthcheck(env={**os.environ, "PGRB_WEB_LISTEN_ADDRESS": f"127.0.0.1:{port}"})
    assert (done.returncode, done.stdout) == (
        0,
        f"alive: http://127.0.0.1:{port}/healthz: HTTP 200\n",
    )


def test_a_401_with_basic_auth_on_is_alive_without_a_password(
    serve: Callable[[WebConfig | None], int], tmp_path: Path
) -> None:
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()
    port = serve(load_web_config(write_config(tmp_path, {"basic_auth_users": {"prom": hashed}})))
    done = healthcheck(f"http://127.0.0.1:{port}/healthz")
    assert (done.returncode, done.stdout) == (
        0,
        f"alive: http://127.0.0.1:{port}/healthz: HTTP 401\n",
    )


@pytest.mark.parametrize("basic_auth", [False, True], ids=["tls", "tls_and_basic_auth"])
def test_with_tls_on_it_asks_again_over_https(
    serve: Callable[[WebConfig | None], int], tmp_path: Path, basic_auth: bool
) -> None:
    cert, key = self_signed(tmp_path, "server", "IP:127.0.0.1")
    config: dict[str, object] = {
        "tls_server_config": {"cert_file": str(cert), "key_file": str(key)}
    }
    if basic_auth:
        hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()
        config["basic_auth_users"] = {"prom": hashed}
    port = serve(load_web_config(write_config(tmp_path, config)))
    done = healthcheck(f"http://127.0.0.1:{port}/healthz")
    status = 401 if basic_auth else 200
    assert (done.returncode, done.stdout) == (
        0,
        f"alive: https://127.0.0.1:{port}/healthz: HTTP {status}\n",
    )


def test_not_alive_when_nothing_listens_or_the_path_is_wrong(
    serve: Callable[[WebConfig | None], int],
) -> None:
    nothing = healthcheck(f"http://127.0.0.1:{free_port()}/healthz")
    assert nothing.returncode == 1
    assert nothing.stdout.startswith("not alive: "), nothing.stdout
    port = serve(None)
    wrong = healthcheck(f"http://127.0.0.1:{port}/nope")
    assert (wrong.returncode, wrong.stdout) == (
        1,
        f"not alive: http://127.0.0.1:{port}/nope: HTTP 404\n",
    )
