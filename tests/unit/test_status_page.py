"""The status page's HTML: every database string escaped, its one style block allowed by hash."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from pg_runbook_exporter.status import page

HOSTILE = "<img src=x onerror=alert(1)>"


def hostile_document() -> dict[str, Any]:
    offender = {
        "pid": "42", "backend_start": "", "application_name": HOSTILE, "client_addr": HOSTILE,
        "usename": HOSTILE, "datname": HOSTILE, "state": "active", "relation": f'"{HOSTILE}"',
        "command": "", "waiting": 2.0, "waiting_all": 3.0, "age_seconds": 61.0, "fix": HOSTILE,
    }  # fmt: skip
    row = {
        "check": "c", "help": "", "state": "warning", "metric": "pgrb_x", "unit": "count",
        "value": 1.0, "value_text": "1", "labels": {"relname": HOSTILE}, "series": 2,
        "met": None, "thresholds": [], "judged_by_alerts": [HOSTILE], "playbook": "Alert",
        "interval_seconds": 15.0, "last_success": None, "last_success_age_seconds": 3.0,
        "error": {"reason": "other", "message": HOSTILE}, "skipped": None,
    }  # fmt: skip
    return {
        "generation": 7,
        "rendered_at": "2026-12-02T00:00:00Z",
        "health": {
            "database": "up",
            "database_playbook": None,
            "checks": 1,
            "critical": 0,
            "warning": 1,
            "failing": 0,
            "stale": 0,
            "info": 0,
            "ok": 0,
            "skipped": 0,
            "pending": 0,
        },
        "offenders": [
            {
                "kind": "blockers",
                "check": "b",
                "title": "Blocking sessions",
                "playbook": "PostgresLockWait",
                "offenders": [offender],
            },
        ],
        "chapters": [{"name": HOSTILE, "rows": [row]}],
    }


def test_every_database_string_is_escaped() -> None:
    html = page.render(hostile_document(), worst="warning").decode()
    assert HOSTILE not in html
    assert "<img" not in html
    assert html.count("&lt;img src=x onerror=alert(1)&gt;") >= 8
    assert "2 sessions wait directly, 3 in all" in html


def test_the_csp_allows_exactly_the_style_block_the_page_carries() -> None:
    html = page.render(hostile_document(), worst="warning").decode()
    (style,) = re.findall(r"<style>(.*?)</style>", html, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in page.CSP
    assert "<script" not in html and " style=" not in html
    assert page.CSP.startswith("default-src 'none'; ")
    assert "frame-ancestors 'none'" in page.CSP and "form-action 'none'" in page.CSP
