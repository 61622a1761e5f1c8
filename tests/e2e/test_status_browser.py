"""/status in a real headless browser (Debian's chromium, via Playwright) over a live lock chain.

The browser is the system's (``/usr/bin/chromium``, ``--no-sandbox``: CI runs as root); Playwright's
own browser download is never used. Screenshots go to the test's temporary directory;
``scripts/status-screenshots`` refreshes the committed ones under docs/images/.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, sync_playwright

from pg_runbook_exporter.config import Config, default_config_path, parse_config
from tests.conftest import IN_CI, PortalDb
from tests.support.collect import Serving, serving, wait_for
from tests.support.sessions import Sessions

CHROMIUM = os.environ.get("PGRB_CHROMIUM", "/usr/bin/chromium")
HOSTILE = "<img src=x onerror=alert(1)>"
BLOCKER_APP = "portal-migrations"
ORPHANS = 3


def config_with(**settings: float) -> Config:
    """The shipped queries.yaml with some settings changed, loaded as an operator's file is."""
    data = yaml.safe_load(default_config_path().read_text(encoding="utf-8"))
    for name, value in settings.items():
        data["settings"][name]["value"] = value
    return parse_config(yaml.safe_dump(data, sort_keys=False), source="test-queries.yaml")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing (CI=true): .ci/install installs chromium")
        pytest.skip(f"{CHROMIUM} is missing")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def live(portal_db: PortalDb) -> Iterator[tuple[Serving, int]]:
    """The seeded portal: orphaned mappings, a blocker with a waiter, a hostile idle session."""
    portal_db.server.execute(
        f"""
        INSERT INTO users (id, email, updated_at)
        SELECT 'user-' || g, 'user' || g || '@example.com', now() FROM generate_series(1, 20) g;
        INSERT INTO id_mappings (id, user_id, whmcs_client_id, updated_at)
        SELECT 'orphan-' || g, 'gone-' || g, 9000 + g, now() FROM generate_series(1, {ORPHANS}) g;
        CREATE TABLE orders (id int PRIMARY KEY);
        """,
        dbname=portal_db.name,
    )
    sessions = Sessions(portal_db.dsn)
    try:
        blocker = sessions.open(application_name=BLOCKER_APP)
        blocker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        sessions.background(
            sessions.open(autocommit=True, application_name="portal-bff"),
            "SELECT count(*) FROM orders",
        )
        hostile = sessions.open(application_name=HOSTILE)
        hostile.execute("SELECT count(*) FROM users")  # idle in transaction from now on
        wait_for(
            lambda: bool(
                portal_db.server.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                    dbname=portal_db.name,
                )
            ),
            what="the waiter to queue behind the lock",
        )
        # Offenders from the first run on: no wait for the 5 s and 5 min of the shipped settings.
        config = config_with(offender_lock_wait_seconds=0, idle_in_transaction_warning_seconds=0)
        with serving(portal_db.monitor_dsn, config, status=True) as exporter:
            wait_for(lambda: exporter.cache.ready()[0], timeout=60, what="every check once")
            yield exporter, blocker.info.backend_pid
    finally:
        sessions.close()


def document(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/status.json", timeout=10) as reply:
        loaded: dict[str, Any] = json.loads(reply.read())
        return loaded


class Watched:
    """What a page reports that a test must never see: console errors, failed requests, dialogs."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("requestfailed", self._failed)
        page.on("dialog", self._dialog)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(message.text)

    def _failed(self, request: Request) -> None:
        self.failed.append(request.url)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def assert_clean(self) -> None:
        assert (self.errors, self.failed, self.dialogs) == ([], [], [])


def test_status_page_in_a_browser(
    browser: Browser, live: tuple[Serving, int], tmp_path: Path
) -> None:
    exporter, blocker_pid = live
    doc = document(exporter.url)
    sections = {s["kind"]: s for s in doc["offenders"]}
    assert [o["pid"] for o in sections["blockers"]["offenders"]] == [str(blocker_pid)]

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    watched = Watched(page)
    response = page.goto(f"{exporter.url}/status")
    assert response is not None and response.status == 200
    assert page.locator("#health").inner_text().startswith("Database reachable")

    orphans = page.locator("#check-id_mappings_orphans")
    assert orphans.get_attribute("data-state") == "warning"
    assert orphans.locator(".state").inner_text().lower() == "warning"
    assert orphans.locator(".value").inner_text().split()[0] == str(ORPHANS)

    tree = page.locator("#offenders-blockers li.blocker")
    assert tree.count() == 1
    assert f"pid {blocker_pid}" in tree.inner_text()
    assert f"application {BLOCKER_APP}" in tree.inner_text()
    waiters = tree.locator("li.waiters").inner_text()
    assert waiters == "1 session waits directly, 1 in all, on table public.orders"
    assert f"WHERE pid = {blocker_pid} AND backend_start = '" in tree.locator("pre").inner_text()

    # The hostile application_name is text, never markup: no image element, no dialog.
    idle = page.locator("#offenders-idle_in_transaction")
    assert f"application {HOSTILE}" in idle.inner_text()
    assert page.locator("img").count() == 0
    page.screenshot(path=str(tmp_path / "status-desktop.png"), full_page=True)

    orphans.locator("a", has_text="PortalIdMappingsOrphaned").click()
    page.wait_for_load_state()
    assert page.url == f"{exporter.url}/playbooks/PortalIdMappingsOrphaned"
    assert page.locator("h1").inner_text() == "PortalIdMappingsOrphaned"
    page.locator("a", has_text="all playbooks").click()
    page.wait_for_load_state()
    assert page.locator("li a", has_text="PostgresDown").count() == 1

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{exporter.url}/status")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(tmp_path / "status-phone.png"), full_page=True)
    watched.assert_clean()
    context.close()
    assert (tmp_path / "status-desktop.png").stat().st_size > 0
    assert (tmp_path / "status-phone.png").stat().st_size > 0
