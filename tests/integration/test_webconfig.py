"""The exporter-toolkit web config: validation, TLS, client certificates and basic auth."""

from __future__ import annotations

import base64
import http.client
import logging
import re
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge

from pg_runbook_exporter.errors import WebConfigError
from pg_runbook_exporter.exposition import Exposition, render
from pg_runbook_exporter.web.server import WebServer
from pg_runbook_exporter.web.webconfig import BasicAuthenticator, WebConfig, load_web_config

PASSWORD = "correct horse battery staple"


def self_signed(directory: Path, name: str, san: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    server_cert, server_key = self_signed(directory, "server", "IP:127.0.0.1")
    client_cert, client_key = self_signed(directory, "client", "DNS:prometheus.example")
    return {
        "dir": directory,
        "server_cert": server_cert,
        "server_key": server_key,
        "client_cert": client_cert,
        "client_key": client_key,
    }


@pytest.fixture(scope="module")
def password_hash() -> str:
    # Cost 4 keeps the tests fast; the server treats every cost alike.
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    return "$2y$" + hashed[4:]  # the prefix htpasswd writes


def write_config(directory: Path, content: object, name: str = "web.yml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(content) if not isinstance(content, str) else content)
    return path


@pytest.fixture
def exposition() -> Exposition:
    registry = CollectorRegistry()
    Gauge("pgrb_up", "Whether the database answered.", registry=registry).set(1)
    return render(registry)


@pytest.fixture
def serve(exposition: Exposition) -> Iterator[Callable[[WebConfig], int]]:
    servers: list[WebServer] = []

    def start(config: WebConfig) -> int:
        server = WebServer(
            listen_address="127.0.0.1:0",
            get_exposition=lambda: exposition,
            ready=lambda: (True, ""),
            web_config=config,
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def https(
    port: int, pki: dict[str, Path], *, client_cert: bool = False
) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=pki["server_cert"])
    if client_cert:
        context.load_cert_chain(pki["client_cert"], pki["client_key"])
    return http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def get(
    connection: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def test_empty_file_enables_nothing(tmp_path: Path) -> None:
    config = load_web_config(write_config(tmp_path, ""))
    assert (config.tls, config.basic_auth_users, config.headers) == (None, (), ())
    assert config.ssl_context() is None
    assert config.authenticator() is None


def test_every_problem_is_reported_with_the_file_and_dotted_key(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {
            "tls_server_config": {
                "cert_file": "missing.crt",
                "key_file": "missing.key",
                "client_auth_type": "RequireAnyClientCert",
                "min_version": "TLS14",
                "colour": "blue",
            },
            "http_server_config": {"headers": {"X-Frame-Options": "allow", "X-Other": "1"}},
            "basic_auth_users": {"alice": "plain-text-password"},
            "rate_limit": {"interval": "soon", "burst": 1},
            "extra": True,
        },
    )
    with pytest.raises(WebConfigError) as raised:
        load_web_config(path)
    problems = raised.value.problems
    keys = [problem.split(": ")[1] for problem in problems]
    assert sorted(keys) == sorted(
        [
            "tls_server_config.colour",
            "tls_server_config.cert_file",
            "tls_server_config.key_file",
            "tls_server_config.client_auth_type",
            "tls_server_config.min_version",
            "http_server_config.headers.X-Other",
            "http_server_config.headers.X-Frame-Options",
            "basic_auth_users.alice",
            "rate_limit.interval",
            "extra",
        ]
    )
    assert all(problem.startswith(f"{path}: ") for problem in problems)
    assert str(raised.value).count("\n") == len(problems) - 1
    assert "plain-text-password" not in str(raised.value)
    assert "RequireAnyClientCert (an unverified certificate) is not supported" in str(raised.value)


def test_client_ca_is_required_for_client_certificates(
    tmp_path: Path, pki: dict[str, Path]
) -> None:
    path = write_config(
        tmp_path,
        {
            "tls_server_config": {
                "cert_file": str(pki["server_cert"]),
                "key_file": str(pki["server_key"]),
                "client_auth_type": "RequireAndVerifyClientCert",
            }
        },
    )
    with pytest.raises(WebConfigError, match=r"tls_server_config\.client_ca_file: required"):
        load_web_config(path)


def test_a_key_that_is_not_a_key_is_reported_at_load(tmp_path: Path, pki: dict[str, Path]) -> None:
    path = write_config(
        tmp_path,
        {
            "tls_server_config": {
                "cert_file": str(pki["server_cert"]),
                "key_file": str(pki["client_key"]),
            }
        },
    )
    with pytest.raises(WebConfigError, match="tls_server_config: cannot load"):
        load_web_config(path)


def test_relative_file_names_are_resolved_next_to_the_config(pki: dict[str, Path]) -> None:
    path = write_config(
        pki["dir"], {"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"}}
    )
    config = load_web_config(path)
    assert config.tls is not None
    assert config.tls.cert_file == pki["server_cert"]


def test_tls_with_basic_auth_on_every_endpoint(
    pki: dict[str, Path], password_hash: str, serve: Callable[[WebConfig], int],
    exposition: Exposition, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    config = load_web_config(
        write_config(
            pki["dir"],
            {
                "tls_server_config": {
                    "cert_file": str(pki["server_cert"]),
                    "key_file": str(pki["server_key"]),
                    "min_version": "TLS12",
                },
                "basic_auth_users": {"prometheus": password_hash},
                "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff"}},
            },
            name="auth.yml",
        )
    )
    port = serve(config)
    connection = https(port, pki)
    for path in ("/metrics", "/", "/healthz", "/readyz", "/nope"):
        status, headers, _ = get(connection, path)
        assert status == 401, path
        assert headers["www-authenticate"].startswith('Basic realm="pg-runbook-exporter"')
    status, _, _ = get(connection, "/metrics", basic("prometheus", "wrong"))
    assert status == 401
    status, _, _ = get(connection, "/metrics", basic("nobody", PASSWORD))
    assert status == 401
    for _ in range(3):  # the first success is verified with bcrypt, the next from the cache
        status, headers, body = get(connection, "/metrics", basic("prometheus", PASSWORD))
        assert (status, body) == (200, exposition.text)
        assert headers["x-content-type-options"] == "nosniff"
    status, _, body = get(connection, "/healthz", basic("prometheus", PASSWORD))
    assert (status, body) == (200, b"ok\n")
    connection.close()
    assert PASSWORD not in caplog.text
    assert "wrong" not in caplog.text


def test_plain_http_is_refused_by_a_tls_server(
    tmp_path: Path, pki: dict[str, Path], serve: Callable[[WebConfig], int]
) -> None:
    path = write_config(
        tmp_path,
        {
            "tls_server_config": {
                "cert_file": str(pki["server_cert"]),
                "key_file": str(pki["server_key"]),
            }
        },
    )
    port = serve(load_web_config(path))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        get(connection, "/metrics")
    connection.close()


def client_cert_config(directory: Path, pki: dict[str, Path], sans: list[str]) -> WebConfig:
    tls: dict[str, object] = {
        "cert_file": str(pki["server_cert"]),
        "key_file": str(pki["server_key"]),
        "client_auth_type": "RequireAndVerifyClientCert",
        "client_ca_file": str(pki["client_cert"]),
    }
    if sans:
        tls["client_allowed_sans"] = sans
    return load_web_config(write_config(directory, {"tls_server_config": tls}))


def test_client_certificate_required_and_verified(
    tmp_path: Path, pki: dict[str, Path], serve: Callable[[WebConfig], int]
) -> None:
    port = serve(client_cert_config(tmp_path, pki, ["prometheus.example"]))
    with_cert = https(port, pki, client_cert=True)
    assert get(with_cert, "/healthz")[0] == 200
    with_cert.close()
    without_cert = https(port, pki)
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        get(without_cert, "/healthz")
    without_cert.close()


def test_client_certificate_without_an_allowed_san_is_dropped(
    tmp_path: Path, pki: dict[str, Path], serve: Callable[[WebConfig], int]
) -> None:
    port = serve(client_cert_config(tmp_path, pki, ["other.example"]))
    connection = https(port, pki, client_cert=True)
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        get(connection, "/healthz")
    connection.close()


def test_inline_certificate_and_key(
    tmp_path: Path, pki: dict[str, Path], serve: Callable[[WebConfig], int]
) -> None:
    inline = {"cert": pki["server_cert"].read_text(), "key": pki["server_key"].read_text()}
    config = load_web_config(write_config(tmp_path, {"tls_server_config": inline}))
    assert "PRIVATE KEY" not in repr(config)
    connection = https(serve(config), pki)
    assert get(connection, "/healthz")[0] == 200
    connection.close()


def test_rate_limit_answers_429_past_the_burst(
    tmp_path: Path, serve: Callable[[WebConfig], int]
) -> None:
    config = load_web_config(write_config(tmp_path, {"rate_limit": {"interval": "1h", "burst": 2}}))
    assert config.rate_limit is not None
    assert config.rate_limit.interval == 3600.0
    connection = http.client.HTTPConnection("127.0.0.1", serve(config), timeout=30)
    assert [get(connection, "/healthz")[0] for _ in range(3)] == [200, 200, 429]
    connection.close()


def test_authenticator_caches_only_verified_credentials(password_hash: str) -> None:
    authenticator = BasicAuthenticator({"prometheus": password_hash.encode()})
    good = basic("prometheus", PASSWORD)["Authorization"].encode()
    bad = basic("prometheus", "guess")["Authorization"].encode()
    assert not authenticator.check_cached(good)
    assert authenticator.verify(good)
    assert authenticator.check_cached(good)
    assert not authenticator.verify(bad)
    assert not authenticator.check_cached(bad)
    assert not authenticator.check_cached(b"Bearer token")
    assert not authenticator.verify(b"Basic !!!not-base64")


def test_pipelined_requests_keep_their_order_around_password_checks(
    tmp_path: Path, password_hash: str, serve: Callable[[WebConfig], int]
) -> None:
    config = load_web_config(write_config(tmp_path, {"basic_auth_users": {"u": password_hash}}))
    port = serve(config)
    right, wrong = basic("u", PASSWORD), basic("u", "nope")
    pipeline = b"".join(
        f"GET {path} HTTP/1.1\r\nHost: h\r\nAuthorization: {auth['Authorization']}\r\n\r\n".encode()
        for path, auth in (("/healthz", right), ("/metrics", wrong), ("/readyz", right))
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(pipeline + b"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert re.findall(rb"HTTP/1\.1 (\d+)", received) == [b"200", b"401", b"200", b"401"]
    assert received.index(b"\r\n\r\nok\n") < received.index(b"\r\n\r\nready\n")
