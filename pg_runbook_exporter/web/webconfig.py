"""The `--web.config.file` of the Prometheus exporter toolkit: TLS, basic auth, headers, limits.

The file format is the one every Go exporter reads, so one file can serve a fleet; the `limits`
section is this exporter's own (a Go exporter refuses a file that has it). Relative file names
are resolved against the directory of the web config file. The file is read at start-up and
again whenever the server is told to reload it.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from pg_runbook_exporter.errors import WebConfigError
from pg_runbook_exporter.web.auth import MAX_BCRYPT_COST, BasicAuthenticator, bcrypt_cost
from pg_runbook_exporter.web.limits import DURATION_LIMITS, INTEGER_LIMITS, MINIMUM, Limits
from pg_runbook_exporter.web.loader import Loader
from pg_runbook_exporter.web.tlsconfig import TLSServerConfig, build_ssl_context, load_tls

logger = logging.getLogger(__name__)

SECURITY_HEADERS: Mapping[str, tuple[str, ...] | None] = {
    "Content-Security-Policy": None,
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}
_TOP_KEYS = frozenset(
    {"tls_server_config", "http_server_config", "basic_auth_users", "rate_limit", "limits"}
)
_BCRYPT_HASH = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
_LIMIT_KEYS = frozenset(f.name for f in fields(Limits))


@dataclass(frozen=True)
class RateLimit:
    """A token bucket per client address, taken from only after authentication."""

    interval: float
    burst: int


@dataclass(frozen=True)
class WebConfig:
    source: str
    tls: TLSServerConfig | None = None
    headers: tuple[tuple[str, str], ...] = ()
    basic_auth_users: tuple[tuple[str, bytes], ...] = ()
    rate_limit: RateLimit | None = None
    limits: tuple[tuple[str, float], ...] = ()
    """The `limits` keys the file sets; the rest keep the server's defaults."""

    def __repr__(self) -> str:
        users = [user for user, _ in self.basic_auth_users]
        return f"WebConfig(source={self.source!r}, tls={self.tls!r}, users={users})"

    def ssl_context(self) -> ssl.SSLContext | None:
        """A fresh server context, or None when the file does not enable TLS."""
        return None if self.tls is None else build_ssl_context(self.tls)

    def authenticator(self, *, max_pending: int = 4) -> BasicAuthenticator | None:
        if not self.basic_auth_users:
            return None
        return BasicAuthenticator(dict(self.basic_auth_users), max_pending=max_pending)

    def san_allowed(self, peercert: Mapping[str, Any] | None) -> bool:
        """Whether a verified client certificate carries one of `client_allowed_sans`."""
        return self.tls is None or self.tls.san_allowed(peercert)

    def apply_limits(self, base: Limits) -> Limits:
        """`base` with the values this file sets."""
        given: dict[str, Any] = dict(self.limits)
        return Limits(**{f.name: given.get(f.name, getattr(base, f.name)) for f in fields(Limits)})


def _headers(loader: Loader, raw: object) -> tuple[tuple[str, str], ...]:
    section = loader.mapping(raw, "http_server_config", frozenset({"http2", "headers"}))
    if not isinstance(section.get("http2", True), bool):
        loader.problem("http_server_config.http2", "must be true or false")
    key = "http_server_config.headers"
    headers = loader.mapping(section.get("headers"), key, frozenset(SECURITY_HEADERS))
    result = []
    for name, value in headers.items():
        if name not in SECURITY_HEADERS or value in (None, ""):
            continue
        allowed = SECURITY_HEADERS[name]
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            loader.problem(f"{key}.{name}", "must be a single-line string")
        elif allowed is not None and value.lower() not in allowed:
            loader.problem(f"{key}.{name}", f"{value!r} is not one of: {', '.join(allowed)}")
        else:
            result.append((name, value))
    return tuple(result)


def _users(loader: Loader, raw: object) -> tuple[tuple[str, bytes], ...]:
    users = loader.mapping(raw, "basic_auth_users", None)
    result = []
    for user, hashed in users.items():
        key = f"basic_auth_users.{user}"
        if not user or ":" in user:
            loader.problem(key, "a user name must be non-empty and contain no ':'")
        elif not isinstance(hashed, str) or not _BCRYPT_HASH.fullmatch(hashed):
            # The value is never echoed: a plain password pasted here must not reach a log.
            loader.problem(key, "must be a bcrypt hash ($2y$10$..., e.g. from htpasswd -nBC 10)")
        elif not 4 <= bcrypt_cost(hashed) <= MAX_BCRYPT_COST:
            # Each check costs 2**cost rounds: at 31 one login would take days of CPU.
            loader.problem(
                key,
                f"bcrypt cost {bcrypt_cost(hashed)} is outside 4-{MAX_BCRYPT_COST}, the range "
                "this exporter verifies; hash the password again, e.g. htpasswd -nBC 10",
            )
        else:
            result.append((user, hashed.encode()))
    return tuple(result)


def _rate_limit(loader: Loader, raw: object) -> RateLimit | None:
    section = loader.mapping(raw, "rate_limit", frozenset({"interval", "burst"}))
    if not section:
        return None
    interval = loader.duration(section.get("interval", "0s"), "rate_limit.interval")
    if interval is None:
        return None
    burst = section.get("burst", 0)
    if interval > 0 and (not isinstance(burst, int) or isinstance(burst, bool) or burst < 1):
        loader.problem("rate_limit.burst", "must be a positive integer")
        return None
    return RateLimit(interval=interval, burst=burst) if interval > 0 else None


def _limits(loader: Loader, raw: object) -> tuple[tuple[str, float], ...]:
    section = loader.mapping(raw, "limits", _LIMIT_KEYS)
    result: list[tuple[str, float]] = []
    for name, value in section.items():
        key = f"limits.{name}"
        number: float | None = None
        if name in INTEGER_LIMITS:
            number = loader.integer(value, key, MINIMUM.get(name, 1))
        elif name in DURATION_LIMITS:
            number = loader.duration(value, key)
            if number is not None and number <= 0:
                loader.problem(key, "must be above 0s")
                number = None
        if number is not None:
            result.append((name, number))
    return tuple(result)


def load_web_config(path: str | Path) -> WebConfig:
    """Read and validate a web config file; raises `WebConfigError` listing every problem."""
    file = Path(path)
    source = str(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise WebConfigError([f"{source}: cannot read: {exc}"]) from exc
    loader = Loader(source, file)
    top = loader.mapping(raw, "", _TOP_KEYS)
    config = WebConfig(
        source=source,
        tls=load_tls(loader, top.get("tls_server_config")),
        headers=_headers(loader, top.get("http_server_config")),
        basic_auth_users=_users(loader, top.get("basic_auth_users")),
        rate_limit=_rate_limit(loader, top.get("rate_limit")),
        limits=_limits(loader, top.get("limits")),
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
