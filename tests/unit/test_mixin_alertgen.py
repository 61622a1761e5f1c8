"""The rules' runbook_url: a wiki's .md pages, or the exporter's, but not for its own alerts."""

from __future__ import annotations

from pg_runbook_exporter.mixin.alertgen import runbook_url
from pg_runbook_exporter.mixin.alertrules import rules
from pg_runbook_exporter.mixin.options import DEFAULT_RUNBOOK_BASE_URL, MixinOptions


def test_runbook_url_points_at_the_exporter_except_for_the_exporters_own_alerts() -> None:
    exporter = MixinOptions(runbook_base_url="https://pgrb.example.org:9819/playbooks/")
    urls = {rule.name: runbook_url(rule, exporter) for rule in rules()}
    assert urls["PostgresIdleInTransaction"] == (
        "https://pgrb.example.org:9819/playbooks/PostgresIdleInTransaction"
    )
    assert urls["PostgresDown"] == "https://pgrb.example.org:9819/playbooks/PostgresDown"
    for own in ("PgRunbookExporterDown", "PgRunbookExporterAbsent"):
        assert urls[own] == f"{DEFAULT_RUNBOOK_BASE_URL}{own}.md"
    wiki = MixinOptions(runbook_base_url="https://wiki.example.org/db/")
    rule = next(r for r in rules() if r.name == "PgRunbookExporterDown")
    assert runbook_url(rule, wiki) == "https://wiki.example.org/db/PgRunbookExporterDown.md"
