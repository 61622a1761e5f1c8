"""The alert playbooks (docs/alerts/*.md) as HTML pages, rendered once at start by markdown-it-py.

Raw HTML in the Markdown is off (it is shown as text), links to other playbooks are rewritten to
their pages, and relative links to files the exporter does not serve become plain text. The pages
are served at exact paths only, so a path that is not a playbook's name is a 404 however encoded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from markdown_it import MarkdownIt
from markdown_it.token import Token

from pg_runbook_exporter.status.page import document_page, e

PREFIX = "/playbooks/"
INDEX = "README"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


def playbook_dir() -> Path:
    """The playbooks shipped in the wheel (``playbooks/``), else a checkout's ``docs/alerts``."""
    package = Path(__file__).resolve().parent.parent
    shipped = package / "playbooks"
    return shipped if shipped.is_dir() else package.parent / "docs" / "alerts"


@dataclass(frozen=True)
class Playbooks:
    """Path → HTML page of every playbook and of the index."""

    pages: dict[str, bytes]
    names: tuple[str, ...]

    def has(self, name: str) -> bool:
        return name in self.names


def _rewrite(href: str, names: set[str]) -> str | None:
    """The href a playbook page links with, or None to show the link's text only."""
    parts = urlsplit(href)
    if parts.scheme in ("http", "https", "mailto"):
        return href
    if parts.scheme or parts.netloc:
        return None
    if not parts.path:
        return href if parts.fragment else None  # a fragment of this page
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    target = parts.path.removeprefix("./").removesuffix(".md")
    if target == INDEX:
        return f"{PREFIX}{fragment}"
    if target in names:
        return f"{PREFIX}{target}{fragment}"
    return None


def _fix_links(tokens: list[Token], names: set[str]) -> None:
    for token in tokens:
        if token.children:
            _fix_links(token.children, names)
        if token.type == "image":
            token.type, token.tag, token.content = "text", "", token.content
            token.children = None
        if token.type != "link_open":
            continue
        href = _rewrite(str(token.attrGet("href") or ""), names)
        if href is None:
            token.tag, token.attrs = "span", {}
        else:
            token.attrSet("href", href)
    # the matching closers of links turned into text
    depth: list[bool] = []
    for token in tokens:
        if token.children:
            continue
        if token.type == "link_open":
            depth.append(token.tag == "span")
        elif token.type == "link_close" and depth and depth.pop():
            token.tag = "span"


def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def render_markdown(text: str, names: set[str]) -> str:
    md = _markdown()
    tokens = md.parse(text)
    _fix_links(tokens, names)
    rendered: str = md.renderer.render(tokens, md.options, {})
    return rendered


_NAV = '<p class="note"><a href="/playbooks/">all playbooks</a> · <a href="/status">status</a></p>'


def load(directory: Path | None = None) -> Playbooks:
    directory = directory or playbook_dir()
    files = sorted(p for p in directory.glob("*.md") if _NAME.match(p.stem))
    names = {p.stem for p in files if p.stem != INDEX}
    pages: dict[str, bytes] = {}
    listing = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        html = render_markdown(text, names)
        if path.stem == INDEX:
            continue
        pages[f"{PREFIX}{path.stem}"] = document_page(f"{path.stem} playbook", _NAV + html)
        listing.append(f'<li><a href="{PREFIX}{e(path.stem)}">{e(path.stem)}</a></li>')
    readme = directory / f"{INDEX}.md"
    about = render_markdown(readme.read_text(encoding="utf-8"), names) if readme.is_file() else ""
    index = (
        '<p class="note"><a href="/status">status</a> · <a href="/">home</a></p>'
        f"<h1>Playbooks</h1><ul>{''.join(listing)}</ul>{about}"
    )
    pages[PREFIX] = document_page("Playbooks", index)
    return Playbooks(pages=pages, names=tuple(sorted(names)))
