"""The web config's `tls_server_config`: validation, certificates, client certificates."""

from __future__ import annotations

import http.client
import logging
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from pg_runbook_exporter.errors import WebConfigError
from pg_runbook_exporter.web.webconfig import WebConfig, load_web_config
from tests.support.webclient import get, https, make_pki, write_config


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


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


def test_client_certificate_without_an_allowed_san_is_dropped_and_logged_once(
    tmp_path: Path,
    pki: dict[str, Path],
    serve: Callable[[WebConfig], int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fails if the certificate is accepted, or if each refused one logs a line (five here)."""
    caplog.set_level(logging.INFO, logger="pg_runbook_exporter.web")
    port = serve(client_cert_config(tmp_path, pki, ["other.example"]))
    for _ in range(5):
        connection = https(port, pki, client_cert=True)
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            get(connection, "/healthz")
        connection.close()
    assert [r.getMessage() for r in caplog.records if "SAN" in r.getMessage()] == [
        "client certificate without an allowed SAN from 127.0.0.1; further ones are counted and "
        "logged when they stop"
    ]


def test_inline_certificate_and_key(
    tmp_path: Path, pki: dict[str, Path], serve: Callable[[WebConfig], int]
) -> None:
    inline = {"cert": pki["server_cert"].read_text(), "key": pki["server_key"].read_text()}
    config = load_web_config(write_config(tmp_path, {"tls_server_config": inline}))
    assert "PRIVATE KEY" not in repr(config)
    connection = https(serve(config), pki)
    assert get(connection, "/healthz")[0] == 200
    connection.close()


@pytest.mark.parametrize(("key", "version"), [("min_version", "TLS10"), ("max_version", "TLS11")])
def test_tls_versions_openssl_cannot_negotiate_are_refused_at_load(
    tmp_path: Path, pki: dict[str, Path], key: str, version: str
) -> None:
    tls = {"cert_file": str(pki["server_cert"]), "key_file": str(pki["server_key"]), key: version}
    path = write_config(tmp_path, {"tls_server_config": tls})
    with pytest.raises(WebConfigError) as raised:
        load_web_config(path)
    assert raised.value.problems == [
        f"{path}: tls_server_config.{key}: {version} cannot be negotiated: OpenSSL "
        f"({ssl.OPENSSL_VERSION}) offers no cipher for TLS 1.0 or 1.1 at its security level, so "
        "every such handshake would fail; use TLS12 or TLS13",
    ]


def test_a_world_readable_private_key_is_warned_and_a_group_readable_one_is_not(
    tmp_path: Path, pki: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    key = tmp_path / "server.key"
    key.write_bytes(pki["server_key"].read_bytes())
    tls = {"cert_file": str(pki["server_cert"]), "key_file": str(key)}
    path = write_config(tmp_path, {"tls_server_config": tls})
    key.chmod(0o640)  # what a Kubernetes secret mount with an fsGroup gives
    with caplog.at_level(logging.WARNING):
        load_web_config(path)
    assert caplog.records == []
    key.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        load_web_config(path)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: tls_server_config.key_file: the private key {key} is readable by every local "
        "user (mode 0o644); chmod o-r it"
    ]
    caplog.clear()
    inline = {"cert": pki["server_cert"].read_text(), "key": pki["server_key"].read_text()}
    path = write_config(tmp_path, {"tls_server_config": inline}, name="inline.yml")
    path.chmod(0o604)
    with caplog.at_level(logging.WARNING):
        load_web_config(path)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: tls_server_config.key: this file, with a private key, {path} is readable by "
        "every local user (mode 0o604); chmod o-r it"
    ]
