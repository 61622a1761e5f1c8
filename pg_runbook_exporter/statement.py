"""A check's statement as it is sent: wrapped so the server never sends more rows than it keeps.

psycopg's client-side cursor receives a statement's whole result into libpq before the first
``fetchmany``, so a cap applied while fetching bounds what is kept, not what is held: a check
returning millions of rows held them all. ``bounded`` wraps the vetted statement as
``SELECT * FROM (<statement>) AS q LIMIT <max_rows + 1>``: the server stops at the cap (the one
row past it says the result was cut) and sends nothing more. The statement's own ``ORDER BY``
and ``LIMIT`` apply inside the parentheses, before the wrap's ``LIMIT``, so the rows kept are
the first rows of its own order. A server-side cursor would bound it as well, but needs a
transaction per run and a round trip per batch; the wrap is one statement in the run's one
round trip.

The wrap adds no function, relation or operator, so what the vetting admitted is what runs:
the statement is cut out of its text where PostgreSQL's parser says it ends (a trailing ``;``
and comments stay outside) and set on lines of its own (a trailing ``--`` comment ends before
the closing parenthesis). Only what the vetting admits is wrapped, one ``SELECT`` whose ``WITH``
queries only read; anything else can reach a session only past the vetting (the tests'), and is
sent as written, so its own error is what the server reports.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import pgparse

# As sqlvet.py reads them: %(name)s is a bound parameter, %% a literal %.
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")


def _same_length(match: re.Match[str]) -> str:
    """A placeholder as the parser can read it, with the same length (so offsets still hold)."""
    text = match.group(0)
    return "% " if text == "%%" else "$1".ljust(len(text))


def _reads_only(select: dict[str, Any]) -> bool:
    ctes = select.get("withClause", {}).get("ctes", [])
    return all("SelectStmt" in cte["CommonTableExpr"]["ctequery"] for cte in ctes)


@functools.lru_cache(maxsize=1024)
def _body(sql: str) -> str | None:
    """The one reading SELECT of ``sql``, without what follows it; None for anything else."""
    try:
        tree = pgparse.parse(_PLACEHOLDER.sub(_same_length, sql))
    except pgparse.PGQueryError:
        return None
    if len(tree) != 1 or "SelectStmt" not in tree[0]["stmt"]:
        return None
    if not _reads_only(tree[0]["stmt"]["SelectStmt"]):
        return None
    # Offsets are bytes; the substitution kept every byte where it was.
    raw = sql.encode()
    start = tree[0].get("stmt_location", 0)
    length = tree[0].get("stmt_len", 0)
    return raw[start : start + length if length else len(raw)].decode()


def bounded(sql: str, max_rows: int) -> str:
    """``sql`` wrapped so the server sends at most ``max_rows + 1`` rows (see the module)."""
    body = _body(sql)
    if body is None:
        return sql
    return f"SELECT * FROM (\n{body}\n) AS q LIMIT {max_rows + 1}"
