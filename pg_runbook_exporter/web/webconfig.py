"""The `--web.config.file` of the Prometheus exporter toolkit: TLS, basic auth, response headers.

The file format is the one every Go exporter reads, so one file can serve a fleet. What Python's
`ssl` module cannot do (accepting unverified client certificates, curve preferences) is refused
with a message instead of being silently weakened. Relative file names are resolved against the
directory of the web config file. The file is read once at start-up.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from pg_runbook_exporter.errors import WebConfigError

logger = logging.getLogger(__name__)

CLIENT_AUTH_TYPES: Mapping[str, ssl.VerifyMode] = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
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
SECURITY_HEADERS: Mapping[str, tuple[str, ...] | None] = {
    "Content-Security-Policy": None,
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
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
_BCRYPT_HASH = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
_DURATION = re.compile(
    r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?"
)
_DURATION_UNITS = (365 * 86400.0, 7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)


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


@dataclass(frozen=True)
class RateLimit:
    interval: float
    burst: int


@dataclass(frozen=True)
class WebConfig:
    source: str
    tls: TLSServerConfig | None = None
    headers: tuple[tuple[str, str], ...] = ()
    basic_auth_users: tuple[tuple[str, bytes], ...] = ()
    rate_limit: RateLimit | None = None

    def __repr__(self) -> str:
        users = [user for user, _ in self.basic_auth_users]
        return f"WebConfig(source={self.source!r}, tls={self.tls!r}, users={users})"

    def ssl_context(self) -> ssl.SSLContext | None:
        """A fresh server context, or None when the file does not enable TLS."""
        return None if self.tls is None else _build_ssl_context(self.tls)

    def authenticator(self) -> BasicAuthenticator | None:
        return BasicAuthenticator(dict(self.basic_auth_users)) if self.basic_auth_users else None

    def san_allowed(self, peercert: Mapping[str, Any] | None) -> bool:
        """Whether a verified client certificate carries one of `client_allowed_sans`."""
        if self.tls is None or not self.tls.client_allowed_sans:
            return True
        names = {value for _, value in (peercert or {}).get("subjectAltName", ())}
        return any(san in names for san in self.tls.client_allowed_sans)


class BasicAuthenticator:
    """Checks `Authorization: Basic` values against bcrypt hashes.

    bcrypt is slow by design (tens of ms), so the first success of a credential is remembered as
    the SHA-256 of the header value and later requests are checked against that digest in constant
    time. `check_cached` is the per-request fast path; `verify` is the slow path, meant for a worker
    thread (bcrypt releases the GIL).
    """

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        self._verified: dict[str, bytes] = {}
        # Unknown users are checked against this, at the cost of the configured hashes, so that
        # their answer takes as long as a wrong password and does not reveal which names exist.
        rounds = int(next(iter(self._users.values()), b"$2b$10$")[4:6])
        self._dummy = bcrypt.hashpw(b"unused", bcrypt.gensalt(rounds=rounds))

    @staticmethod
    def _credentials(header: bytes) -> tuple[str, bytes] | None:
        scheme, _, encoded = header.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        user, sep, password = decoded.partition(b":")
        return (user.decode("utf-8", "replace"), password) if sep else None

    def check_cached(self, header: bytes) -> bool:
        credentials = self._credentials(header)
        known = self._verified.get(credentials[0]) if credentials is not None else None
        if known is None:
            return False
        return hmac.compare_digest(known, hashlib.sha256(header).digest())

    def verify(self, header: bytes) -> bool:
        credentials = self._credentials(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self._users.get(user)
        ok = bcrypt.checkpw(password, hashed or self._dummy) and hashed is not None
        if ok:
            # One digest per user: the cache cannot grow past the configured users.
            self._verified[user] = hashlib.sha256(header).digest()
        return ok


def _build_ssl_context(tls: TLSServerConfig) -> ssl.SSLContext:
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


class _Loader:
    """Validates one parsed file, collecting a message per problem."""

    def __init__(self, source: str, base: Path) -> None:
        self.source = source
        self.base = base
        self.problems: list[str] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{self.source}: {key}: {message}")

    def mapping(self, value: object, key: str, allowed: frozenset[str] | None) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(key or "(top level)", f"must be a mapping, not {type(value).__name__}")
            return {}
        for name in value:
            if not isinstance(name, str) or (allowed is not None and name not in allowed):
                expected = f" (expected one of: {', '.join(sorted(allowed))})" if allowed else ""
                self.problem(f"{key}.{name}" if key else str(name), f"unknown key{expected}")
        return {k: v for k, v in value.items() if isinstance(k, str)}

    def string(self, section: dict[str, Any], name: str, key: str) -> str | None:
        value = section.get(name)
        if value is None or isinstance(value, str):
            return value or None
        self.problem(f"{key}.{name}", f"must be a string, not {type(value).__name__}")
        return None

    def strings(self, section: dict[str, Any], name: str, key: str) -> tuple[str, ...]:
        value = section.get(name)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(f"{key}.{name}", "must be a list of strings")
            return ()
        return tuple(value)

    def file(self, section: dict[str, Any], name: str, key: str) -> Path | None:
        value = self.string(section, name, key)
        if value is None:
            return None
        path = self.base / value
        if not path.is_file():
            self.problem(f"{key}.{name}", f"file {str(path)!r} does not exist or is not a file")
            return None
        return path

    def choice(self, value: str | None, choices: Mapping[str, Any], key: str, default: str) -> str:
        if value is None:
            return default
        if value not in choices:
            self.problem(key, f"{value!r} is not one of: {', '.join(choices)}")
            return default
        return value

    def tls(self, raw: object) -> TLSServerConfig | None:
        key = "tls_server_config"
        section = self.mapping(raw, key, _TLS_KEYS)
        if not section:
            return None
        get: Callable[[str], str | None] = lambda name: self.string(section, name, key)  # noqa: E731
        cert_file, key_file = (
            self.file(section, "cert_file", key),
            self.file(section, "key_file", key),
        )
        cert, private_key = get("cert"), get("key")
        for file_name, inline_name, has_file, has_inline in (
            ("cert_file", "cert", section.get("cert_file"), cert),
            ("key_file", "key", section.get("key_file"), private_key),
        ):
            if has_file and has_inline:
                self.problem(f"{key}.{inline_name}", f"give either {file_name} or {inline_name}")
            elif not has_file and not has_inline:
                self.problem(f"{key}.{file_name}", "required when tls_server_config is given")
        auth_type = get("client_auth_type")
        if auth_type in ("RequestClientCert", "RequireAnyClientCert"):
            # Python's ssl verifies every certificate it accepts; refusing beats weakening.
            self.problem(
                f"{key}.client_auth_type",
                f"{auth_type} (an unverified certificate) is "
                "not supported; use VerifyClientCertIfGiven or RequireAndVerifyClientCert",
            )
            auth_type = None
        auth = self.choice(auth_type, CLIENT_AUTH_TYPES, f"{key}.client_auth_type", "NoClientCert")
        client_ca_file, client_ca = self.file(section, "client_ca_file", key), get("client_ca")
        if auth != "NoClientCert" and not (section.get("client_ca_file") or client_ca):
            self.problem(f"{key}.client_ca_file", f"required when client_auth_type is {auth}")
        sans = self.strings(section, "client_allowed_sans", key)
        if sans and auth != "RequireAndVerifyClientCert":
            self.problem(
                f"{key}.client_allowed_sans", "needs client_auth_type RequireAndVerifyClientCert"
            )
        versions = [
            TLS_VERSIONS[self.choice(get(name), TLS_VERSIONS, f"{key}.{name}", default)]
            for name, default in (("min_version", "TLS12"), ("max_version", "TLS13"))
        ]
        if versions[0] > versions[1]:
            self.problem(f"{key}.min_version", "is above max_version")
        suites = self.strings(section, "cipher_suites", key)
        for suite in suites:
            if suite not in CIPHER_SUITES:
                self.problem(
                    f"{key}.cipher_suites",
                    f"unsupported suite {suite!r} (supported: {', '.join(CIPHER_SUITES)})",
                )
        if "curve_preferences" in section:
            self.problem(f"{key}.curve_preferences", "not supported by this exporter; remove it")
        prefer = section.get("prefer_server_cipher_suites", True)
        if not isinstance(prefer, bool):
            self.problem(f"{key}.prefer_server_cipher_suites", "must be true or false")
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

    def headers(self, raw: object) -> tuple[tuple[str, str], ...]:
        section = self.mapping(raw, "http_server_config", frozenset({"http2", "headers"}))
        if not isinstance(section.get("http2", True), bool):
            self.problem("http_server_config.http2", "must be true or false")
        key = "http_server_config.headers"
        headers = self.mapping(section.get("headers"), key, frozenset(SECURITY_HEADERS))
        result = []
        for name, value in headers.items():
            if name not in SECURITY_HEADERS or value in (None, ""):
                continue
            allowed = SECURITY_HEADERS[name]
            if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
                self.problem(f"{key}.{name}", "must be a single-line string")
            elif allowed is not None and value.lower() not in allowed:
                self.problem(f"{key}.{name}", f"{value!r} is not one of: {', '.join(allowed)}")
            else:
                result.append((name, value))
        return tuple(result)

    def users(self, raw: object) -> tuple[tuple[str, bytes], ...]:
        users = self.mapping(raw, "basic_auth_users", None)
        result = []
        for user, hashed in users.items():
            key = f"basic_auth_users.{user}"
            if not user or ":" in user:
                self.problem(key, "a user name must be non-empty and contain no ':'")
            elif not isinstance(hashed, str) or not _BCRYPT_HASH.fullmatch(hashed):
                # The value is never echoed: a plain password pasted here must not reach a log.
                self.problem(key, "must be a bcrypt hash ($2y$10$..., e.g. from htpasswd -nBC 10)")
            else:
                result.append((user, hashed.encode()))
        return tuple(result)

    def rate_limit(self, raw: object) -> RateLimit | None:
        section = self.mapping(raw, "rate_limit", frozenset({"interval", "burst"}))
        if not section:
            return None
        interval_text = section.get("interval", "0s")
        match = _DURATION.fullmatch(interval_text) if isinstance(interval_text, str) else None
        if match is None or not interval_text:
            self.problem("rate_limit.interval", "must be a duration such as 1s or 100ms")
            return None
        interval = sum(
            float(n) * unit for n, unit in zip(match.groups(), _DURATION_UNITS, strict=True) if n
        )
        burst = section.get("burst", 0)
        if interval > 0 and (not isinstance(burst, int) or isinstance(burst, bool) or burst < 1):
            self.problem("rate_limit.burst", "must be a positive integer")
            return None
        return RateLimit(interval=interval, burst=burst) if interval > 0 else None


def load_web_config(path: str | Path) -> WebConfig:
    """Read and validate a web config file; raises `WebConfigError` listing every problem."""
    file = Path(path)
    source = str(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise WebConfigError([f"{source}: cannot read: {exc}"]) from exc
    loader = _Loader(source, file.parent)
    top = loader.mapping(
        raw,
        "",
        frozenset({"tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"}),
    )
    config = WebConfig(
        source=source,
        tls=loader.tls(top.get("tls_server_config")),
        headers=loader.headers(top.get("http_server_config")),
        basic_auth_users=loader.users(top.get("basic_auth_users")),
        rate_limit=loader.rate_limit(top.get("rate_limit")),
    )
    if config.tls is not None and not loader.problems:
        try:
            config.ssl_context()
        except (OSError, ssl.SSLError) as exc:
            loader.problem("tls_server_config", f"cannot load the certificate, key or CA: {exc}")
    if loader.problems:
        raise WebConfigError(loader.problems)
    logger.info(
        "web config %s: tls=%s, basic auth users=%d",
        source,
        "on" if config.tls else "off",
        len(config.basic_auth_users),
    )
    return config
