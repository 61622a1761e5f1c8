"""Pages the application hands the server: ready bytes per path, the server knows nothing of them.

A page source is called on the server's thread for each request of its path, so it must only read
what the application published (an attribute read), never block or render. The path must match
exactly: the server decodes nothing, so ``/a/%2e%2e/b`` is no page unless one was given that name.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass

HTML = b"text/html; charset=utf-8"


@dataclass(frozen=True)
class Page:
    body: bytes
    content_type: bytes = HTML
    headers: bytes = b""  # extra header lines, each ending in CRLF


PageSource = Callable[[], Page]
Pages = Mapping[str, PageSource]


def check_paths(pages: Pages, reserved: tuple[bytes, ...]) -> None:
    for path in pages:
        if not path.startswith("/") or path.encode() in reserved:
            raise ValueError(f"page path {path!r} must start with / and be its own")


def landing_page(
    name: str, version: str, links: tuple[tuple[str, str], ...], headers: bytes = b""
) -> bytes:
    """The ``/`` page: the name, the version and a link to each path with what it is."""
    items = "\n".join(
        f'<li><a href="{html.escape(path)}">{html.escape(path)}</a> {html.escape(what)}</li>'
        for path, what in links
    )
    name, version = html.escape(name), html.escape(version)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{name}</title></head>
<body><h1>{name}</h1><p>Version {version}</p><ul>
{items}
</ul></body></html>
""".encode()
