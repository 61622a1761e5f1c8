"""A portal database with 5,000 tables and 20,000 indexes: the exported series stay bounded, the
remainder is aggregated, every check still succeeds, and each check's series count is exported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from psycopg import sql

from pg_runbook_exporter.config import parse_config
from tests.conftest import PortalDb, Server, Servers
from tests.support.collect import FILE_CHECKS, Scrape, collect_once, configured

logger = logging.getLogger(__name__)

TABLES = 5000
INDEXES_PER_TABLE = 4  # the primary key and three plain indexes
BLOCK = 8192


@pytest.fixture(scope="module")
def crowded(pg_servers: Servers, pg: Server) -> Iterator[PortalDb]:
    """A portal database with TABLES more tables, shared by this module's tests (setup ~6-10 s)."""
    db = pg_servers.portal_db(pg)
    started = time.monotonic()
    # One server-side loop, committing in batches: one transaction would need a lock slot for
    # every one of the 25,000 relations.
    db.server.execute(
        f"""
        DO $$
        BEGIN
          FOR i IN 1..{TABLES} LOOP
            EXECUTE format('CREATE TABLE t%1$s (id int PRIMARY KEY, a int, b int, c int);'
                           'CREATE INDEX ON t%1$s (a); CREATE INDEX ON t%1$s (b);'
                           'CREATE INDEX ON t%1$s (c)', i);
            IF i % 500 = 0 THEN COMMIT; END IF;
          END LOOP;
        END
        $$""",
        dbname=db.name,
    )
    logger.info("created %d tables in %.1fs", TABLES, time.monotonic() - started)
    try:
        yield db
    finally:
        db.server.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.name))
        )


# Skipped here: the extension is not in this database; the server's logging_collector is off.
NOT_HERE = ("statements", "server_logs", *FILE_CHECKS)


def series_of(scrape: Scrape, prefix: str) -> int:
    return sum(len(v) for k, v in scrape.samples.items() if k.startswith(prefix))


def test_series_stay_bounded_and_the_rest_is_aggregated(crowded: PortalDb) -> None:
    user_tables, user_indexes = crowded.server.execute(
        "SELECT (SELECT count(*) FROM pg_stat_user_tables), "
        "(SELECT count(*) FROM pg_stat_user_indexes)",
        dbname=crowded.name,
    )[0]
    assert user_tables == TABLES + 3 and user_indexes >= TABLES * INDEXES_PER_TABLE
    config = configured()
    top = {name: int(str(config.setting(name))) for name in ("top_n_table_sizes", "top_n_tables")}
    scrape = collect_once(crowded.monitor_dsn, config)
    for check in config.checks:
        if check.name not in NOT_HERE:
            assert scrape.value("pgrb_check_success", check=check.name) == 1, check.name

    # table_sizes: the top N measured, the rest summed as "other".
    sizes = scrape.series("pgrb_table_size_bytes")
    assert len(sizes) == top["top_n_table_sizes"] + 1
    other = scrape.value("pgrb_table_size_bytes", schemaname="other", relname="other")
    measured = sum(v for k, v in sizes.items() if dict(k)["relname"] != "other")
    # Nothing was ever vacuumed or written, so the planner's page counts are exact sizes.
    (total,) = crowded.server.execute(
        "SELECT sum(pg_total_relation_size(relid)) FROM pg_stat_user_tables", dbname=crowded.name
    )[0]
    assert measured + other == total
    assert other >= (TABLES - top["top_n_table_sizes"]) * INDEXES_PER_TABLE * BLOCK

    # table_stats: the top N, the rest summed as "other"; index_usage: the top N only (a sum of
    # counters over a changing set of indexes would not be a counter).
    assert len(scrape.series("pgrb_table_live_rows")) == top["top_n_tables"] + 1
    (live,) = crowded.server.execute(
        "SELECT sum(n_live_tup) FROM pg_stat_user_tables", dbname=crowded.name
    )[0]
    assert sum(scrape.series("pgrb_table_live_rows").values()) == live
    assert len(scrape.series("pgrb_index_scans_total")) == int(str(config.setting("top_n_indexes")))
    # unused_indexes: one number for all of them, whatever their count.
    plain = TABLES * (INDEXES_PER_TABLE - 1) + 3  # and id_mappings' three
    assert scrape.value("pgrb_unused_indexes") == plain
    assert scrape.value("pgrb_unused_index_size_bytes") == plain * BLOCK

    # Every check exports its series count, and it is the truth.
    for check in config.checks:
        if check.name not in NOT_HERE:
            exported = sum(len(scrape.series(metric.name)) for metric in check.metrics)
            assert scrape.value("pgrb_check_series", check=check.name) == exported, check.name
    assert series_of(scrape, "pgrb_") < 1000


EVERY_TABLE = """
checks:
  every_table:
    help: One series per table, past the cap.
    max_series: 300
    sql: SELECT relname::text AS relname, n_live_tup AS live FROM pg_stat_user_tables
    labels: [relname]
    metrics: {live: {name: every_table_live_rows, type: gauge, help: Live rows.}}
"""


def test_a_check_past_its_max_series_is_cut_and_says_so(
    crowded: PortalDb, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    scrape = collect_once(crowded.monitor_dsn, parse_config(EVERY_TABLE, source="every.yaml"))
    assert scrape.value("pgrb_check_success", check="every_table") == 1
    assert len(scrape.series("pgrb_every_table_live_rows")) == 300
    assert scrape.value("pgrb_check_series", check="every_table") == 300
    assert scrape.value("pgrb_check_truncated", check="every_table") == 1
    assert [r.getMessage() for r in caplog.records if "max_series" in r.getMessage()] == [
        "check every_table: more rows than max_series=300; the rest are dropped"
    ]
