"""The allowlist against a real PostgreSQL's catalogs: every name on it exists there, and no catalog
function that changes anything can be called in the disguise of a column.
"""

from __future__ import annotations

from pg_runbook_exporter import sqlallow
from tests.conftest import PortalDb

# Functions a check calls only on the major that has them (a per-version SQL variant).
NEW_IN_18 = {"pg_get_sequence_data"}


def test_every_name_on_the_allowlist_is_the_catalogs(portal_db: PortalDb) -> None:
    portal_db.server.execute("CREATE EXTENSION pg_stat_statements", dbname=portal_db.name)
    missing = portal_db.server.execute(
        "SELECT 'function ' || n FROM unnest(%(f)s::text[]) AS n WHERE NOT EXISTS ("
        "  SELECT 1 FROM pg_proc WHERE proname = n AND (pronamespace = 'pg_catalog'::regnamespace"
        "  OR n LIKE 'pg_stat_statements%%')) "
        "UNION ALL SELECT 'relation ' || n FROM unnest(%(r)s::text[]) AS n WHERE NOT EXISTS ("
        "  SELECT 1 FROM pg_class WHERE relname = n AND (relnamespace = 'pg_catalog'::regnamespace"
        "  OR n LIKE 'pg_stat_statements%%')) "
        "UNION ALL SELECT 'type ' || n FROM unnest(%(t)s::text[]) AS n WHERE NOT EXISTS ("
        "  SELECT 1 FROM pg_type WHERE typname = n AND typnamespace = 'pg_catalog'::regnamespace) "
        "UNION ALL SELECT 'operator ' || n FROM unnest(%(o)s::text[]) AS n WHERE NOT EXISTS ("
        "  SELECT 1 FROM pg_operator WHERE oprname = n "
        "  AND oprnamespace = 'pg_catalog'::regnamespace)",
        {
            "f": sorted(sqlallow.FUNCTIONS - (NEW_IN_18 if portal_db.server.major < 18 else set())),
            "r": sorted(sqlallow.CATALOG_RELATIONS),
            "t": sorted(sqlallow.TYPES),
            "o": sorted(sqlallow.OPERATORS - {"!="}),  # the parser's spelling of <>
        },
        dbname=portal_db.name,
    )
    assert missing == []


def test_no_volatile_catalog_function_can_be_called_as_a_column(portal_db: PortalDb) -> None:
    # t.f means f(t) when t has no column f: the vetter sees a column. A catalog function that
    # takes a whole row and changes something would get past it; there is none.
    callable_as_column = portal_db.server.execute(
        "SELECT p.proname::text FROM pg_proc p JOIN pg_type t ON t.oid = p.proargtypes[0] "
        "WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.pronargs = 1 "
        "AND p.provolatile = 'v' AND (t.typtype = 'c' OR t.typname IN ('record', 'anyelement', "
        "'anynonarray', 'anycompatible', 'anycompatiblenonarray', 'any'))",
        dbname=portal_db.name,
    )
    assert callable_as_column == []
