"""The playbooks as HTML: raw HTML as text, links between playbooks rewritten, others dropped."""

from __future__ import annotations

import re
from pathlib import Path

from pg_runbook_exporter.status import playbooks


def test_raw_html_in_markdown_is_text_and_links_are_rewritten(tmp_path: Path) -> None:
    (tmp_path / "AlertOne.md").write_text(
        "# AlertOne\n\n<script>alert(1)</script> <img src=x onerror=alert(1)>\n\n"
        "[two](AlertTwo.md#why) [index](README.md) [file](../../alerts/x.yml) "
        "[web](https://example.org/) [here](#meaning) ![pic](pic.png)\n",
        encoding="utf-8",
    )
    (tmp_path / "AlertTwo.md").write_text("# AlertTwo\n", encoding="utf-8")
    (tmp_path / "README.md").write_text("# About\n", encoding="utf-8")
    books = playbooks.load(tmp_path)
    assert sorted(books.pages) == ["/playbooks/", "/playbooks/AlertOne", "/playbooks/AlertTwo"]
    page = books.pages["/playbooks/AlertOne"].decode()
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert "/playbooks/AlertTwo#why" in hrefs and "/playbooks/" in hrefs
    assert "https://example.org/" in hrefs and "#meaning" in hrefs
    assert not any("x.yml" in h or h.endswith(".md") for h in hrefs)
    assert "<span>file</span>" in page


def test_every_shipped_playbook_links_only_to_pages_the_exporter_serves() -> None:
    books = playbooks.load()
    served = set(books.pages) | {"/status", "/", "/favicon.svg"}
    for path, body in books.pages.items():
        for href in re.findall(r'href="([^"]*)"', body.decode()):
            if href.startswith(("http://", "https://", "#", "mailto:")):
                continue
            assert href.partition("#")[0] in served, (path, href)
