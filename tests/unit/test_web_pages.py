"""The application's pages: paths of their own, and a landing page that escapes what it lists."""

from __future__ import annotations

import pytest

from pg_runbook_exporter.web.pages import Page, check_paths, landing_page


def test_a_page_may_not_take_a_reserved_path_or_a_relative_one() -> None:
    page = Page(b"x")
    check_paths({"/status": lambda: page}, (b"/metrics",))
    for path in ("/metrics", "status"):
        with pytest.raises(ValueError, match="must start with / and be its own"):
            check_paths({path: lambda: page}, (b"/metrics",))


def test_the_landing_page_links_every_path_escaped() -> None:
    body = landing_page("n<a>", "1", (("/status", "status <b>"), ("/metrics", "metrics")))
    assert b'<a href="/status">/status</a> status &lt;b&gt;' in body
    assert b"n&lt;a&gt;" in body and b"<b>" not in body
