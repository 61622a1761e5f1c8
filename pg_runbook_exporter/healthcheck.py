"""``python -m pg_runbook_exporter.healthcheck``: exit 0 when the exporter's web server answers.

For the image's HEALTHCHECK and Kubernetes exec probes, where no curl is installed. It asks
``/healthz`` on loopback at the port of ``PGRB_WEB_LISTEN_ADDRESS`` (or the URL given) and never
touches the database. With basic auth on, a 401 counts as alive: the server answered, and no
password has to be given to the probe. With TLS on (the plain request is refused), it asks again
over HTTPS without verifying the certificate: it checks liveness on loopback, not identity.
"""

from __future__ import annotations

import argparse
import http.client
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

DEFAULT_ADDRESS = ":9819"
ALIVE = frozenset({200, 401})


def default_url(environ: Mapping[str, str]) -> str:
    """``http://<loopback>:<port>/healthz`` for the address the exporter listens on."""
    address = environ.get("PGRB_WEB_LISTEN_ADDRESS") or DEFAULT_ADDRESS
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):  # noqa: S104 - the wildcard is read, never bound
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port or DEFAULT_ADDRESS[1:]}/healthz"


def status_of(url: str, *, timeout: float) -> int:
    """The HTTP status ``url`` answers with; OSError when nothing answers."""
    context = ssl._create_unverified_context() if url.startswith("https:") else None  # noqa: S323
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


def probe(url: str, *, timeout: float = 5.0) -> tuple[bool, str]:
    """(alive, what happened) for one request to ``url``, retried over HTTPS if TLS is on."""
    urls = [url]
    if url.startswith("http:"):
        urls.append("https:" + url[len("http:") :])
    problem = ""
    for candidate in urls:
        try:
            status = status_of(candidate, timeout=timeout)
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            problem = f"{candidate}: {reason}"
            continue
        return status in ALIVE, f"{candidate}: HTTP {status}"
    return False, problem


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pg_runbook_exporter.healthcheck",
        description="Exit 0 when the exporter's web server answers /healthz (200, or 401).",
    )
    parser.add_argument("url", nargs="?", help="default: /healthz on PGRB_WEB_LISTEN_ADDRESS")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default: 5)")
    args = parser.parse_args(argv)
    alive, what = probe(args.url or default_url(os.environ), timeout=args.timeout)
    print(f"{'alive' if alive else 'not alive'}: {what}")
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
