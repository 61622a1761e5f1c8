"""Sequences near exhaustion, against the narrower of the sequence's and its column's maximum,
and the grant the exporter's role needs to see them, on each major under test."""

from __future__ import annotations

import subprocess
import sys

import pytest
from psycopg import sql

from tests.conftest import REPO, PortalDb
from tests.support.collect import collect_once, configured

CHECKS = ["sequences", "sequence_privileges"]
INT4_MAX = 2**31 - 1
PRISMA_AT = 1_610_612_736  # three quarters of the int4 range, plus a little
LEGACY_AT = 2_000_000_000


def seed(db: PortalDb) -> None:
    """As the table owner, after the role script ran: default privileges must cover these."""
    db.server.execute(
        # Prisma's Int @default(autoincrement()): a serial, an int4 sequence owned by the column
        "CREATE TABLE invoices (id serial PRIMARY KEY);"
        f"SELECT setval('invoices_id_seq', {PRISMA_AT});"
        # a bigint sequence feeding an int4 column through its default: the column runs out first
        "CREATE SEQUENCE legacy_ids AS bigint;"
        "CREATE TABLE orders (legacy_id int DEFAULT nextval('legacy_ids'), n int);"
        f"SELECT setval('legacy_ids', {LEGACY_AT});"
        # bigint all the way: cannot practically run out, never read
        "CREATE TABLE events (id bigserial PRIMARY KEY);"
        "SELECT setval('events_id_seq', 5000000000);"
        # never called: no position yet
        "CREATE TABLE drafts (id serial);"
        "INSERT INTO orders (n) SELECT generate_series(1, 500); ANALYZE orders, invoices",
        dbname=db.name,
    )


def labels(sequence: str, table: str, column: str) -> dict[str, str]:
    return {"schemaname": "public", "sequencename": sequence, "relname": table, "attname": column}


def test_the_used_fraction_is_against_the_narrower_of_sequence_and_column(db: PortalDb) -> None:
    seed(db)
    scrape = collect_once(db.monitor_dsn, configured(only=CHECKS))
    legacy = labels("legacy_ids", "orders", "legacy_id")
    prisma = labels("invoices_id_seq", "invoices", "id")
    used = scrape.series("pgrb_sequence_used_ratio")
    # 500 nextval() calls moved legacy_ids on from its setval
    assert used == {
        frozenset(legacy.items()): (LEGACY_AT + 500) / INT4_MAX,
        frozenset(prisma.items()): PRISMA_AT / INT4_MAX,
    }
    assert scrape.value("pgrb_sequence_remaining_values", **legacy) == INT4_MAX - LEGACY_AT - 500
    assert scrape.value("pgrb_sequence_remaining_values", **prisma) == INT4_MAX - PRISMA_AT
    assert scrape.value("pgrb_sequences_unreadable", schemaname="public") == 0


def test_top_n_and_the_read_budget_bound_what_is_read(db: PortalDb) -> None:
    seed(db)
    fullest = configured(only=CHECKS, settings={"top_n_sequences": 1})
    (only,) = collect_once(db.monitor_dsn, fullest).series("pgrb_sequence_used_ratio")
    assert dict(only)["sequencename"] == "legacy_ids"
    # one read: the sequence of the table with the most rows (orders, 500; invoices is empty)
    budget = configured(only=CHECKS, settings={"max_sequences_read": 1})
    (read,) = collect_once(db.monitor_dsn, budget).series("pgrb_sequence_used_ratio")
    assert dict(read)["sequencename"] == "legacy_ids"


def test_without_the_grant_the_sequence_is_unreadable_and_check_names_the_grant(
    db: PortalDb,
) -> None:
    seed(db)
    db.server.execute(
        sql.SQL("REVOKE SELECT ON SEQUENCE invoices_id_seq FROM {}").format(
            sql.Identifier(db.monitor_role)
        ),
        dbname=db.name,
    )
    scrape = collect_once(db.monitor_dsn, configured(only=CHECKS))
    assert scrape.value("pgrb_sequences_unreadable", schemaname="public") == 1
    assert {dict(k)["sequencename"] for k in scrape.series("pgrb_sequence_used_ratio")} == {
        "legacy_ids"
    }
    result = subprocess.run(
        [sys.executable, "-m", "pg_runbook_exporter", "check", "--database.url", db.monitor_dsn],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    grant = f'GRANT SELECT ON ALL SEQUENCES IN SCHEMA "public" TO "{db.monitor_role}";'
    assert grant in result.stdout, result.stdout
    assert "Missing privileges" in result.stdout


@pytest.fixture
def db(portal_db_each: PortalDb) -> PortalDb:
    return portal_db_each
