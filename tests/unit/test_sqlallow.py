"""The allowlist as data: the portal tables it knows are the portal schema's, its names are lower
case, no function the vetting refuses is on it, and docs/hardening.md gives its sizes.
"""

from __future__ import annotations

import re

import pgparse

from pg_runbook_exporter import sqlallow
from tests.conftest import PORTAL_SCHEMA, REPO


def test_the_portal_tables_of_the_allowlist_are_those_of_the_portal_schema() -> None:
    created = {
        statement["stmt"]["CreateStmt"]["relation"]["relname"]
        for statement in pgparse.parse(PORTAL_SCHEMA.read_text())
        if "CreateStmt" in statement["stmt"]
    }
    assert created == sqlallow.PORTAL_TABLES


def test_the_allowlist_is_lower_case_and_holds_no_corpus_function() -> None:
    names = sqlallow.FUNCTIONS | sqlallow.CATALOG_RELATIONS | sqlallow.TYPES
    assert {n for n in names if n != n.lower()} == set()
    refused = {"ts_stat", "set_config", "pg_advisory_lock", "lo_from_bytea", "pg_sleep",
               "query_to_xml", "txid_current", "pg_notify", "dblink", "pg_stats"}  # fmt: skip
    assert refused & (sqlallow.FUNCTIONS | sqlallow.CATALOG_RELATIONS) == set()


def test_the_hardening_doc_states_the_allowlists_sizes() -> None:
    """Fails when a name is added to or dropped from the allowlist and docs/hardening.md still
    gives the old count."""
    text = " ".join((REPO / "docs" / "hardening.md").read_text(encoding="utf-8").split())
    stated = re.search(
        r"`pg_runbook_exporter/sqlallow\.py` \((\d+) functions, (\d+) catalog relations, "
        r"(\d+) portal tables, (\d+) operators, (\d+) types\)",
        text,
    )
    assert stated is not None, "docs/hardening.md no longer states the allowlist's sizes"
    assert [int(n) for n in stated.groups()] == [
        len(sqlallow.FUNCTIONS),
        len(sqlallow.CATALOG_RELATIONS),
        len(sqlallow.PORTAL_TABLES),
        len(sqlallow.OPERATORS),
        len(sqlallow.TYPES),
    ]
