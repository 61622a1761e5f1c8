"""What the wrap of a check's statement is, and which statements it leaves as written."""

from __future__ import annotations

from pg_runbook_exporter.statement import bounded


def test_only_a_reading_select_is_wrapped() -> None:
    """Fails when a statement the wrap would change (a writing WITH, anything but SELECT) is
    wrapped: past the vetting its own error must be what the server reports."""
    assert bounded("SELECT 1 AS a", 4) == "SELECT * FROM (\nSELECT 1 AS a\n) AS q LIMIT 5"
    for sql in (
        "WITH d AS (DELETE FROM users RETURNING id) SELECT id FROM d",
        "LISTEN portal_events",
        "SELECT 1; SELECT 2",
        "SELEC 1",
    ):
        assert bounded(sql, 4) == sql
