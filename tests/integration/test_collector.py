"""The renderer on a real PostgreSQL: what a result no longer holds is no longer served."""

from __future__ import annotations

from pg_runbook_exporter.config import Config
from tests.conftest import PortalDb
from tests.support.collect import serving, wait_for
from tests.support.unvetted import unvetted_config


def config_of(text: str) -> Config:
    """Checks that sleep or read tables the test made: past the vetting (test_sqlvet.py)."""
    return unvetted_config(text, source="test.yaml")


def test_rows_that_disappear_from_a_result_disappear_from_the_output(portal_db: PortalDb) -> None:
    portal_db.server.execute(
        "CREATE TABLE items (name text, n int); INSERT INTO items VALUES ('a', 1), ('b', 2);"
        "GRANT SELECT ON items TO pgrb_exporter;",
        dbname=portal_db.name,
    )
    config = config_of("""
checks:
  items:
    help: Items.
    interval: 100ms
    timeout: 100ms
    lock_timeout: 50ms
    sql: SELECT name, n FROM items
    labels: [name]
    metrics: {n: {name: item, type: gauge, help: An item.}}
""")
    with serving(portal_db.monitor_dsn, config) as exporter:
        wait_for(lambda: exporter.scrape().get("pgrb_item", name="b") == 2, what="item b")
        portal_db.server.execute("DELETE FROM items WHERE name = 'b'", dbname=portal_db.name)
        wait_for(lambda: exporter.scrape().get("pgrb_item", name="b") is None, what="b to go")
        assert exporter.scrape().value("pgrb_item", name="a") == 1
