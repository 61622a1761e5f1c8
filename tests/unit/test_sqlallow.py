"""The allowlist as data: the portal tables it knows are the portal schema's, its names are lower
case, and no function the vetting refuses is on it.
"""

from __future__ import annotations

import pgparse

from pg_runbook_exporter import sqlallow
from tests.conftest import PORTAL_SCHEMA


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
