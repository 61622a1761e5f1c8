"""The exporter-toolkit web config: validation, basic auth, rate limit, limits and reloading."""

from __future__ import annotations

import http.client
import logging
import re
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest

from pg_runbook_exporter.errors import WebConfigError
from pg_runbook_exporter.exposition import Exposition
from pg_runbook_exporter.web.limits import Limits
from pg_runbook_exporter.web.server import WebServer
from pg_runbook_exporter.web.webconfig import WebConfig, load_web_config
from tests.support.webclient import (
    basic,
    get,
    https,
    make_pki,
    self_signed,
    write_config,
)

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def password_hash() -> str:
    # Cost 10, what htpasswd -nBC 10 writes: each first login costs a real bcrypt check.
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    return "$2y$" + hashed[4:]  # the prefix htpasswd writes


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


def test_rate_limit_answers_429_past_the_burst(
    tmp_path: Path, serve: Callable[[WebConfig], int]
) -> None:
    config = load_web_config(write_config(tmp_path, {"rate_limit": {"interval": "1h", "burst": 2}}))
    assert config.rate_limit is not None
    assert config.rate_limit.interval == 3600.0
    connection = http.client.HTTPConnection("127.0.0.1", serve(config), timeout=30)
    assert [get(connection, "/healthz")[0] for _ in range(3)] == [200, 200, 429]
    connection.close()


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


def test_bcrypt_costs_above_14_are_refused_at_load_naming_file_and_user(tmp_path: Path) -> None:
    cheap = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=4)).decode()
    users = {
        "alice": cheap.replace("$04$", "$31$"),  # a check would take days: start-up must not try
        "bob": cheap.replace("$04$", "$15$"),
        "carol": cheap.replace("$04$", "$14$"),  # the cap itself is accepted
    }
    path = write_config(tmp_path, {"basic_auth_users": users})
    with pytest.raises(WebConfigError) as raised:
        load_web_config(path)
    assert raised.value.problems == list(
        f"{path}: basic_auth_users.{user}: bcrypt cost {cost} is outside 4-14, the range this "
        "exporter verifies; hash the password again, e.g. htpasswd -nBC 10"
        for user, cost in (("alice", 31), ("bob", 15))
    )
    del users["alice"], users["bob"]
    assert load_web_config(write_config(tmp_path, {"basic_auth_users": users})).basic_auth_users


def test_limits_are_read_from_the_web_config_and_checked(tmp_path: Path) -> None:
    limits = {
        "max_connections": 50,
        "max_connections_per_client": 5,
        "request_head_timeout": "2s",
        "idle_timeout": "1m30s",
        "max_request_head_bytes": 8192,
        "max_pending_password_checks": 0,
    }
    config = load_web_config(write_config(tmp_path, {"limits": limits}))
    assert config.apply_limits(Limits()) == Limits(
        max_connections=50,
        max_connections_per_client=5,
        request_head_timeout=2.0,
        idle_timeout=90.0,
        max_request_head_bytes=8192,
        max_pending_password_checks=0,
    )
    assert load_web_config(write_config(tmp_path, "limits: {}")).apply_limits(Limits()) == Limits()
    bad = {"max_connections": 0, "idle_timeout": "0s", "request_head_timeout": 10, "slots": 1}
    path = write_config(tmp_path, {"limits": bad}, name="bad.yml")
    with pytest.raises(WebConfigError) as raised:
        load_web_config(path)
    assert sorted(raised.value.problems) == sorted(
        [
            f"{path}: limits.max_connections: must be an integer of at least 1",
            f"{path}: limits.idle_timeout: must be above 0s",
            f"{path}: limits.request_head_timeout: must be a duration such as 1s or 100ms",
            f"{path}: limits.slots: unknown key (expected one of: idle_timeout, "
            "max_connections, max_connections_per_client, max_pending_password_checks, "
            "max_request_head_bytes, request_head_timeout)",
        ]
    )


def test_the_web_configs_limits_are_what_the_server_enforces(
    tmp_path: Path, serve: Callable[[WebConfig], int]
) -> None:
    config = load_web_config(write_config(tmp_path, {"limits": {"max_connections": 1}}))
    port = serve(config)
    first = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    assert get(first, "/healthz")[0] == 200  # served: its slot is not given away
    second = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    assert get(second, "/healthz")[0] == 503  # the default limit (1000) would serve it
    first.close()
    second.close()


def test_reload_swaps_users_and_certificates_and_keeps_the_old_config_when_files_fail(
    tmp_path: Path, pki: dict[str, Path], password_hash: str, exposition: Exposition
) -> None:
    server = WebServer(
        listen_address="127.0.0.1:0",
        get_exposition=lambda: exposition,
        ready=lambda: (True, ""),
        web_config=load_web_config(write_config(tmp_path, {"basic_auth_users": {}}, "a.yml")),
    )
    port = server.start()
    try:
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        assert get(plain, "/metrics")[0] == 200  # no users yet
        renewed_cert, renewed_key = self_signed(tmp_path, "renewed", "IP:127.0.0.1")
        tls = {"cert_file": str(renewed_cert), "key_file": str(renewed_key)}
        users = {"prometheus": password_hash}
        server.reload(
            load_web_config(
                write_config(tmp_path, {"tls_server_config": tls, "basic_auth_users": users})
            )
        )
        # The open plain connection keeps its transport, but its next request is checked.
        assert get(plain, "/metrics")[0] == 401
        plain.close()
        old_ca = https(port, pki)  # trusts only the first certificate: the new one fails it
        with pytest.raises(ssl.SSLCertVerificationError):
            get(old_ca, "/healthz")
        old_ca.close()
        context = ssl.create_default_context(cafile=renewed_cert)
        renewed = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
        status, _, body = get(renewed, "/metrics", basic("prometheus", PASSWORD))
        assert (status, body) == (200, exposition.text)
        broken = load_web_config(write_config(tmp_path, {"tls_server_config": tls}, "b.yml"))
        renewed_key.unlink()  # gone between load and reload: the reload fails, nothing changes
        with pytest.raises(OSError):
            server.reload(broken)
        assert get(renewed, "/metrics", basic("prometheus", PASSWORD))[0] == 200
        assert get(renewed, "/metrics")[0] == 401
        renewed.close()
    finally:
        server.stop()
