"""What every connection reads: one frozen object, built from the flags and the web config.

A reload builds a new one and swaps it in on the server's loop; a connection reads the current one
at each request, so a revoked password or a new header applies to open connections too, while a
TLS connection keeps the certificate it was accepted with.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pg_runbook_exporter.web.auth import BasicAuthenticator
from pg_runbook_exporter.web.limits import Limits
from pg_runbook_exporter.web.pages import Pages, PageSource, check_paths, landing_page
from pg_runbook_exporter.web.tlsconfig import TLSServerConfig
from pg_runbook_exporter.web.webconfig import RateLimit, WebConfig

RESERVED_PATHS = (b"/", b"/healthz", b"/readyz")


@dataclass(frozen=True)
class Settings:
    telemetry_path: bytes
    paths: frozenset[bytes]
    """The telemetry path and the reserved ones: everything else is 404."""
    realm: bytes
    """The `WWW-Authenticate` header line of a 401."""
    landing: bytes
    limits: Limits
    clock: Callable[[], float]
    """Deadlines and rate buckets read this; the sweep acting on them runs every `limits.tick`."""
    extra_headers: bytes = b""
    rate_limit: RateLimit | None = None
    authenticator: BasicAuthenticator | None = None
    ssl_context: ssl.SSLContext | None = None
    tls: TLSServerConfig | None = None
    pages: Mapping[bytes, PageSource] = field(default_factory=dict)
    """The application's pages, by exact path."""


def check_telemetry_path(telemetry_path: str) -> None:
    if not telemetry_path.startswith("/") or telemetry_path.encode() in RESERVED_PATHS:
        raise ValueError(f"telemetry path {telemetry_path!r} must start with / and be its own")


def build_settings(
    *,
    telemetry_path: str,
    name: str,
    version: str,
    limits: Limits,
    clock: Callable[[], float],
    web_config: WebConfig | None,
    pages: Pages | None = None,
    links: tuple[tuple[str, str], ...] = (),
) -> Settings:
    """Settings for `web_config` with `limits`; reads the TLS files now.

    `pages` are served at their exact paths; `links` (path, what it is) are listed on `/` after
    the metrics' and before the health endpoints'.
    """
    check_telemetry_path(telemetry_path)
    pages = pages or {}
    check_paths(pages, (telemetry_path.encode(), *RESERVED_PATHS))
    headers = web_config.headers if web_config else ()
    landing_links = (
        (telemetry_path, "metrics"),
        *links,
        ("/healthz", "liveness"),
        ("/readyz", "readiness"),
    )
    return Settings(
        telemetry_path=telemetry_path.encode(),
        paths=frozenset({telemetry_path.encode(), *RESERVED_PATHS, *(p.encode() for p in pages)}),
        realm=f'WWW-Authenticate: Basic realm="{name}", charset="UTF-8"\r\n'.encode(),
        landing=landing_page(name, version, landing_links),
        limits=limits,
        clock=clock,
        extra_headers=b"".join(f"{key}: {value}\r\n".encode() for key, value in headers),
        rate_limit=web_config.rate_limit if web_config else None,
        authenticator=(
            web_config.authenticator(max_pending=limits.max_pending_password_checks)
            if web_config
            else None
        ),
        ssl_context=web_config.ssl_context() if web_config else None,
        tls=web_config.tls if web_config else None,
        pages={path.encode(): source for path, source in pages.items()},
    )
