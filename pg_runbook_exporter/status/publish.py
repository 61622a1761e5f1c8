"""The status pages' side of the renderer: each snapshot becomes /status and /status.json bytes.

Called by the renderer with every snapshot it renders and that render's generation, so the three
documents of one generation agree. A visit reads the last pages: no SQL and no rendering per
request, and two visits with no check run between them get the same bytes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from pg_runbook_exporter.exposition import generation_header
from pg_runbook_exporter.state import Snapshot
from pg_runbook_exporter.status import model, page, playbooks
from pg_runbook_exporter.web.pages import Page, PageSource

logger = logging.getLogger(__name__)

JSON = b"application/json"
STATUS_PATH = "/status"
JSON_PATH = "/status.json"
LINKS = (
    (STATUS_PATH, "status of every check (HTML)"),
    (JSON_PATH, "the same, as JSON"),
    (playbooks.PREFIX, "alert playbooks"),
)


def _waiting(path: str) -> Page:
    body = (
        b"no snapshot rendered yet\n"
        if path == JSON_PATH
        else page.document_page("status", "<p>The first collection has not finished yet.</p>")
    )
    return Page(body, JSON if path == JSON_PATH else page.HTML_TYPE, page.SECURITY_HEADERS)


class StatusPages:
    """The last /status and /status.json, replaced on each ``publish``."""

    def __init__(
        self, *, wall_clock: Callable[[], float] = time.time, name: str = "pg-runbook-exporter"
    ) -> None:
        self._wall_clock = wall_clock
        self._name = name
        self._failed = False
        self.html = _waiting(STATUS_PATH)
        self.json = _waiting(JSON_PATH)
        self.document: dict[str, object] | None = None

    def publish(self, snapshot: Snapshot, generation: int) -> None:
        """Render both pages of ``snapshot``; a failure keeps the last ones and is logged once."""
        try:
            doc = model.document(snapshot, generation, self._wall_clock())
            html = page.render(doc, worst=str(model.worst(doc)), name=self._name)
            data = json.dumps(doc, ensure_ascii=False, sort_keys=True, indent=1).encode()
        except Exception:
            if not self._failed:
                logger.exception("cannot render the status page; serving the last one")
            self._failed = True
            return
        if self._failed:
            logger.info("rendering the status page again")
        self._failed = False
        headers = page.SECURITY_HEADERS + generation_header(generation)
        self.document = doc
        self.html = Page(html, page.HTML_TYPE, headers)
        self.json = Page(data + b"\n", JSON, headers)


def pages(status: StatusPages, books: playbooks.Playbooks) -> dict[str, PageSource]:
    """Path → page source of the status pages and every playbook."""
    found: dict[str, PageSource] = {
        STATUS_PATH: lambda: status.html,
        JSON_PATH: lambda: status.json,
    }
    icon = Page(page.ICON, b"image/svg+xml", page.SECURITY_HEADERS)
    found[page.ICON_PATH] = lambda: icon
    for path, body in books.pages.items():
        ready = Page(body, page.HTML_TYPE, page.SECURITY_HEADERS)
        found[path] = lambda ready=ready: ready  # type: ignore[misc]
    return found
