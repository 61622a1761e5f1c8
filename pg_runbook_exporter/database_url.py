"""The portal's DATABASE_URL, written for Prisma, turned into libpq connection parameters.

Prisma adds query parameters libpq rejects (``connection_limit``, ``pool_timeout``, ``schema``,
…) and gives some TLS parameters another meaning (Prisma's ``sslcert`` is the server CA, libpq's
``sslrootcert``). The password is kept out of everything this module returns for display.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psycopg.conninfo
from psycopg import ProgrammingError

from pg_runbook_exporter.errors import DatabaseUrlError

logger = logging.getLogger(__name__)

# Parameters only Prisma understands: dropped (``schema`` becomes the search path).
PRISMA_ONLY = frozenset(
    {
        "schema",
        "connection_limit",
        "pool_timeout",
        "socket_timeout",
        "pgbouncer",
        "statement_cache_size",
        "sslaccept",
        "sslidentity",
        "sslpassword",
    }
)
_URL_PASSWORD = re.compile(r"(?P<head>\w+://[^:/@\s]*:)(?P<password>[^@\s]*)(?P<tail>@)")
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<password>'(?:[^'\\]|\\.)*'|\S+)")
_QUOTED = re.compile(r'"[^"]*"')


@dataclass(frozen=True)
class DatabaseTarget:
    """Where the exporter connects: libpq conninfo (secret) and what may be shown of it."""

    conninfo: str = field(repr=False)
    display: str
    search_path: str | None = None
    pgbouncer: bool = False
    warnings: tuple[str, ...] = ()
    secrets: tuple[str, ...] = field(default=(), repr=False)
    password_in_url: bool = False  # the URL's own text carries a password


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with URL and key=value passwords, and every known secret, replaced by ``***``."""
    text = _URL_PASSWORD.sub(r"\g<head>***\g<tail>", text)
    text = _KV_PASSWORD.sub(r"\g<head>***", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _translate_tls(params: dict[str, str], warnings: list[str]) -> None:
    """Give Prisma's TLS parameters their libpq meaning, refusing what libpq cannot do."""
    if "sslidentity" in params:
        raise DatabaseUrlError(
            "sslidentity (a PKCS#12 client identity) has no libpq equivalent: convert it with "
            "`openssl pkcs12` into a certificate and key and pass them as libpq's sslcert and "
            "sslkey (or PGSSLCERT/PGSSLKEY)"
        )
    ca = params.pop("sslcert", None)
    if ca is not None and "sslkey" not in params:
        # Prisma's sslcert names the server CA; without a key it cannot be a client certificate.
        params.setdefault("sslrootcert", ca)
    elif ca is not None:
        params["sslcert"] = ca
    accept = params.get("sslaccept")
    if accept == "accept_invalid_certs":
        params["sslmode"] = "require"
        warnings.append(
            "sslaccept=accept_invalid_certs: the connection is encrypted but the server "
            "certificate is not verified (sslmode=require)"
        )
    elif accept == "strict" and params.get("sslrootcert"):
        params["sslmode"] = "verify-full"
    elif accept not in (None, "strict"):
        raise DatabaseUrlError(f"sslaccept={accept!r}: expected strict or accept_invalid_certs")


def parse_database_url(url: str, *, password: str | None = None) -> DatabaseTarget:
    """Parse a Prisma-style or libpq URL (or a libpq key=value string)."""
    url = url.strip()
    if not url:
        raise DatabaseUrlError("the database URL is empty")
    secrets = tuple(s for s in (password,) if s)
    if "://" not in url:
        return _from_conninfo(url, password=password, secrets=secrets)
    try:
        return _from_url(url, password=password, secrets=secrets)
    except DatabaseUrlError:
        raise
    except ValueError as exc:
        # urllib's own errors (a bad port, a bad IPv6 host, a netloc that NFKC-normalises to a
        # delimiter) may quote the netloc, password included.
        raise DatabaseUrlError(redact(str(exc), (*secrets, *_url_secrets(url)))) from None


def _url_secrets(url: str) -> tuple[str, ...]:
    """Whatever could be a password in a URL that did not parse."""
    userinfo, at, _ = url.partition("://")[2].rpartition("@")
    _, colon, secret = userinfo.partition(":")
    return tuple(s for s in ((secret, unquote(secret)) if at and colon else ()) if s)


def _query(query: str) -> dict[str, str]:
    """A URL's query parameters decoded as libpq decodes them: %XX only, a ``+`` stays a ``+``."""
    params: dict[str, str] = {}
    for item in query.split("&"):
        if item:
            key, _, value = item.partition("=")
            params[unquote(key)] = unquote(value)
    return params


def _from_url(url: str, *, password: str | None, secrets: tuple[str, ...]) -> DatabaseTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise DatabaseUrlError(f"unsupported URL scheme {parts.scheme!r}: expected postgresql://")
    params = _query(parts.query)
    embedded = tuple(
        s for s in (parts.password, unquote(parts.password or ""), params.get("password")) if s
    )
    secrets = (*secrets, *dict.fromkeys(embedded))
    warnings: list[str] = []
    _translate_tls(params, warnings)
    search_path = params.get("schema") or None
    pgbouncer = params.get("pgbouncer", "").lower() == "true"
    kept = {k: v for k, v in params.items() if k not in PRISMA_ONLY}
    dropped = sorted(set(params) - set(kept) - {"sslcert"})
    if dropped:
        logger.debug("ignoring Prisma-only URL parameters: %s", ", ".join(dropped))
    # The parameters go to libpq as keywords, never re-encoded into a URL (where a space would
    # come back as a literal "+").
    clean = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    if password:
        kept["password"] = password
    try:
        conninfo = psycopg.conninfo.make_conninfo(clean, **kept)
    except ProgrammingError as exc:
        problem = _libpq_problem(exc, secrets, has_password="password" in params)
        raise DatabaseUrlError(problem) from None
    host = parts.hostname or params.get("host", "localhost")
    display_netloc = f"{quote(parts.username or '')}@{host}" + (
        f":{parts.port}" if parts.port else ""
    )
    display = urlunsplit((parts.scheme, display_netloc, parts.path, "", ""))
    return DatabaseTarget(
        conninfo=conninfo,
        display=display,
        search_path=search_path,
        pgbouncer=pgbouncer,
        warnings=tuple(warnings),
        secrets=secrets,
        password_in_url=bool(embedded),
    )


def _libpq_problem(exc: ProgrammingError, secrets: tuple[str, ...], *, has_password: bool) -> str:
    """libpq's complaint about connection parameters, without any part of a password.

    libpq quotes the text it stumbled on (``missing "=" after "cret99"``, ``invalid connection
    option "b"``). Where a ``password`` parameter was given, that text may be a piece of it (a
    password with an unquoted space, or a ``&`` in a query), so every quoted fragment is hidden.
    """
    message = redact(str(exc).strip().splitlines()[0], secrets)
    if not has_password:
        return message
    hidden = _QUOTED.sub(lambda m: m.group(0) if m.group(0) == '"="' else '"…"', message)
    return f"{hidden} (the password parameter is one value: quote or percent-encode it)"


def _from_conninfo(text: str, *, password: str | None, secrets: tuple[str, ...]) -> DatabaseTarget:
    try:
        params = psycopg.conninfo.conninfo_to_dict(text)
    except ProgrammingError as exc:
        problem = _libpq_problem(exc, secrets, has_password="password" in text)
        raise DatabaseUrlError(problem) from None
    embedded = str(params.get("password") or "")
    if embedded:
        secrets = (*secrets, embedded)
    if password:
        params["password"] = password
    conninfo = psycopg.conninfo.make_conninfo(
        "", **{k: v for k, v in params.items() if v is not None}
    )
    shown = ("host", "port", "dbname", "user")
    display = " ".join(f"{k}={params[k]}" for k in shown if k in params)
    return DatabaseTarget(
        conninfo=conninfo, display=display, secrets=secrets, password_in_url=bool(embedded)
    )
