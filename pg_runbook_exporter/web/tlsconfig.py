"""The web config's `tls_server_config`: validated at load, turned into a server SSL context.

What Python's `ssl` module cannot do (accepting unverified client certificates, curve
preferences) and what OpenSSL 3 cannot negotiate (TLS 1.0 and 1.1) is refused with a message
instead of being silently weakened.
"""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pg_runbook_exporter.web.loader import Loader

CLIENT_AUTH_TYPES: Mapping[str, ssl.VerifyMode] = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = {
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# OpenSSL 3 offers no cipher for these at its default security level: a server limited to them
# fails every handshake ("no ciphers available"), so the file is refused instead.
REFUSED_TLS_VERSIONS = ("TLS10", "TLS11")
# Go's names for the secure suites it offers, with their IANA code points; OpenSSL names the same
# suites differently, so the code point is the bridge. The TLS 1.3 suites are accepted and, as in
# Go, not configurable.
CIPHER_SUITES: Mapping[str, int] = {
    "TLS_AES_128_GCM_SHA256": 0x1301,
    "TLS_AES_256_GCM_SHA384": 0x1302,
    "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": 0xC009,
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": 0xC00A,
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": 0xC013,
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": 0xC014,
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": 0xC02B,
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": 0xC02C,
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": 0xC02F,
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": 0xC030,
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA8,
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA9,
}
_TLS_KEYS = frozenset(
    {
        "cert",
        "key",
        "cert_file",
        "key_file",
        "client_ca",
        "client_ca_file",
        "client_auth_type",
        "client_allowed_sans",
        "min_version",
        "max_version",
        "cipher_suites",
        "prefer_server_cipher_suites",
        "curve_preferences",
    }
)


@dataclass(frozen=True)
class TLSServerConfig:
    cert_file: Path | None
    key_file: Path | None
    cert: str | None
    key: str | None
    client_ca_file: Path | None
    client_ca: str | None
    client_auth_type: str
    client_allowed_sans: tuple[str, ...]
    min_version: ssl.TLSVersion
    max_version: ssl.TLSVersion
    cipher_suites: tuple[str, ...]
    prefer_server_cipher_suites: bool

    def __repr__(self) -> str:
        # The inline key is a secret; everything else is safe to show in logs.
        return (
            f"TLSServerConfig(cert_file={self.cert_file}, key_file={self.key_file}, "
            f"client_auth_type={self.client_auth_type})"
        )

    def san_allowed(self, peercert: Mapping[str, Any] | None) -> bool:
        """Whether a verified client certificate carries one of `client_allowed_sans`."""
        if not self.client_allowed_sans:
            return True
        names = {value for _, value in (peercert or {}).get("subjectAltName", ())}
        return any(san in names for san in self.client_allowed_sans)


def build_ssl_context(tls: TLSServerConfig) -> ssl.SSLContext:
    """A fresh server context; reads the certificate and key files now."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = tls.min_version
    context.maximum_version = tls.max_version
    # load_cert_chain reads files only: inline PEM goes through a private temporary directory.
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = tls.cert_file, tls.key_file
        if tls.cert is not None:
            cert_path = Path(tmp, "cert.pem")
            cert_path.write_text(tls.cert)
        if tls.key is not None:
            key_path = Path(tmp, "key.pem")
            key_path.write_text(tls.key)
        assert cert_path is not None and key_path is not None
        context.load_cert_chain(cert_path, key_path)
    if tls.client_ca_file is not None or tls.client_ca is not None:
        context.load_verify_locations(cafile=tls.client_ca_file, cadata=tls.client_ca)
    context.verify_mode = CLIENT_AUTH_TYPES[tls.client_auth_type]
    tls12 = [CIPHER_SUITES[name] for name in tls.cipher_suites if CIPHER_SUITES[name] >= 0xC000]
    if tls12:
        by_id = {c["id"] & 0xFFFF: c["name"] for c in context.get_ciphers()}
        context.set_ciphers(":".join(by_id[code] for code in tls12 if code in by_id))
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(["http/1.1"])
    return context


def load_tls(loader: Loader, raw: object) -> TLSServerConfig | None:  # noqa: PLR0912
    """Validate `tls_server_config`; every problem goes to `loader`."""
    key = "tls_server_config"
    section = loader.mapping(raw, key, _TLS_KEYS)
    if not section:
        return None
    get: Callable[[str], str | None] = lambda name: loader.string(section, name, key)  # noqa: E731
    cert_file, key_file = (
        loader.file(section, "cert_file", key),
        loader.file(section, "key_file", key),
    )
    cert, private_key = get("cert"), get("key")
    for file_name, inline_name, has_file, has_inline in (
        ("cert_file", "cert", section.get("cert_file"), cert),
        ("key_file", "key", section.get("key_file"), private_key),
    ):
        if has_file and has_inline:
            loader.problem(f"{key}.{inline_name}", f"give either {file_name} or {inline_name}")
        elif not has_file and not has_inline:
            loader.problem(f"{key}.{file_name}", "required when tls_server_config is given")
    if key_file is not None:
        loader.warn_if_world_readable(key_file, f"{key}.key_file", "the private key")
    if private_key is not None:
        loader.warn_if_world_readable(loader.path, f"{key}.key", "this file, with a private key,")
    auth_type = get("client_auth_type")
    if auth_type in ("RequestClientCert", "RequireAnyClientCert"):
        # Python's ssl verifies every certificate it accepts; refusing beats weakening.
        loader.problem(
            f"{key}.client_auth_type",
            f"{auth_type} (an unverified certificate) is "
            "not supported; use VerifyClientCertIfGiven or RequireAndVerifyClientCert",
        )
        auth_type = None
    auth = loader.choice(auth_type, CLIENT_AUTH_TYPES, f"{key}.client_auth_type", "NoClientCert")
    client_ca_file, client_ca = loader.file(section, "client_ca_file", key), get("client_ca")
    if auth != "NoClientCert" and not (section.get("client_ca_file") or client_ca):
        loader.problem(f"{key}.client_ca_file", f"required when client_auth_type is {auth}")
    sans = loader.strings(section, "client_allowed_sans", key)
    if sans and auth != "RequireAndVerifyClientCert":
        loader.problem(
            f"{key}.client_allowed_sans", "needs client_auth_type RequireAndVerifyClientCert"
        )
    versions = []
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        value = get(name)
        if value in REFUSED_TLS_VERSIONS:
            loader.problem(
                f"{key}.{name}",
                f"{value} cannot be negotiated: OpenSSL ({ssl.OPENSSL_VERSION}) offers no cipher "
                "for TLS 1.0 or 1.1 at its security level, so every such handshake would fail; "
                "use TLS12 or TLS13",
            )
            value = None
        versions.append(TLS_VERSIONS[loader.choice(value, TLS_VERSIONS, f"{key}.{name}", default)])
    if versions[0] > versions[1]:
        loader.problem(f"{key}.min_version", "is above max_version")
    suites = loader.strings(section, "cipher_suites", key)
    for suite in suites:
        if suite not in CIPHER_SUITES:
            loader.problem(
                f"{key}.cipher_suites",
                f"unsupported suite {suite!r} (supported: {', '.join(CIPHER_SUITES)})",
            )
    if "curve_preferences" in section:
        loader.problem(f"{key}.curve_preferences", "not supported by this exporter; remove it")
    prefer = section.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        loader.problem(f"{key}.prefer_server_cipher_suites", "must be true or false")
    return TLSServerConfig(
        cert_file=cert_file,
        key_file=key_file,
        cert=cert,
        key=private_key,
        client_ca_file=client_ca_file,
        client_ca=client_ca,
        client_auth_type=auth,
        client_allowed_sans=sans,
        min_version=versions[0],
        max_version=versions[1],
        cipher_suites=tuple(s for s in suites if s in CIPHER_SUITES),
        prefer_server_cipher_suites=prefer is not False,
    )
