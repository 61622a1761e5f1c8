"""A check's statement as it is sent: the server stops at the row cap and cuts long label values.

psycopg's client-side cursor receives a statement's whole result into libpq before the first
``fetchmany``, so a cap applied while fetching bounds what is kept, not what is held: a check
returning millions of rows held them all, and a label value of 50 MB was held by libpq twice
(its input buffer and the result) and once more as a Python string before it was cut.

Rows: ``bounded`` wraps the vetted statement as ``SELECT * FROM (<statement>) AS q LIMIT
<max_rows + 1>``; the server stops at the cap (the one row past it says the result was cut).
The statement's own ``ORDER BY`` and ``LIMIT`` apply inside the parentheses, before the wrap's
``LIMIT``, so the rows kept are the first of its own order. A server-side cursor would bound the
rows too, but needs a transaction per run and a round trip per batch; the wrap is one statement
in the run's one round trip.

Label values: ``Statements`` lists each label column by name in the wrap, so a value longer than
``label_value_max_length`` arrives as NULL (the column keeps its type) and its cut arrives in a
column of its own: the kept characters and the hash digits of ``samples.capped``, computed by the
server from the value's text (the same characters and digest for text; other types are cut from
their PostgreSQL text form). Naming the columns needs the statement's columns, so its first run
asks for them (``LIMIT 0``, no rows); a statement whose columns are not the labels once each is
sent with the row cap only, and ``samples.build_samples`` reports its shape.

The wraps add no relation, no operator and only pure functions to what the vetting admitted: the
statement is cut out of its text where PostgreSQL's parser says it ends (a trailing ``;`` and
comments stay outside) and set on lines of its own (a trailing ``--`` comment ends before the
closing parenthesis). Only what the vetting admits is wrapped, one ``SELECT`` whose ``WITH``
queries only read; anything else can reach a session only past the vetting, and is sent as
written, so its own error is what the server reports.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pgparse

from pg_runbook_exporter.errors import CheckError
from pg_runbook_exporter.samples import HASH_DIGITS, MARK, label_text
from pg_runbook_exporter.session import QueryResult

# As sqlvet.py reads them: %(name)s is a bound parameter, %% a literal %.
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")
# SQLSTATEs of a column named in the wrap that the statement no longer returns once.
_COLUMNS_CHANGED = frozenset({"42703", "42702"})  # undefined_column, ambiguous_column


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


def _wrapped(select: str, body: str, limit: int) -> str:
    return f"SELECT {select} FROM (\n{body}\n) AS q LIMIT {limit}"


def bounded(sql: str, max_rows: int) -> str:
    """``sql`` wrapped so the server sends at most ``max_rows + 1`` rows (see the module)."""
    body = _body(sql)
    return sql if body is None else _wrapped("*", body, max_rows + 1)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclasses.dataclass(frozen=True)
class _LabelCut:
    """The wrap of one statement whose label columns the server cuts."""

    columns: tuple[str, ...]  # the statement's own, in its order
    labels: tuple[int, ...]  # the positions of the label columns among them
    max_length: int

    def select(self) -> str:
        n, keep = self.max_length, self.max_length - len(MARK) - HASH_DIGITS

        def text(i: int) -> str:
            return f"q.{_quoted(self.columns[i])}::text"

        kept = [
            f"CASE WHEN length({text(i)}) > {n} THEN NULL ELSE q.{_quoted(c)} END AS {_quoted(c)}"
            if i in self.labels
            else f"q.{_quoted(c)}"
            for i, c in enumerate(self.columns)
        ]
        # The kept characters then the digest's first digits; the mark is added on this side
        # (a database encoding without "…" could not send it).
        cuts = [
            f"CASE WHEN length({t}) > {n} THEN left({t}, {keep})"
            f" || left(encode(sha256(convert_to({t}, 'UTF8')), 'hex'), {HASH_DIGITS}) END"
            for t in map(text, self.labels)
        ]
        return ", ".join(kept + cuts)

    def apply(self, result: QueryResult) -> QueryResult:
        """``result`` with each cut value in its label column, and the cut columns gone."""
        n = len(self.columns)
        cut_at = {label: n + j for j, label in enumerate(self.labels)}
        rows = []
        for row in result.rows:
            values = list(row[:n])
            for label, at in cut_at.items():
                if row[at] is not None:
                    cut = label_text(row[at])  # (bytes from a SQL_ASCII database)
                    values[label] = cut[:-HASH_DIGITS] + MARK + cut[-HASH_DIGITS:]
            rows.append(tuple(values))
        return dataclasses.replace(result, columns=result.columns[:n], rows=rows)


class Statements:
    """Each check's statement as sent, with the statement's columns asked for once."""

    def __init__(self, *, label_value_max_length: int) -> None:
        self._max_length = label_value_max_length
        self._columns: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def run(
        self,
        sql: str,
        *,
        labels: Sequence[str],
        max_rows: int,
        execute: Callable[[str], QueryResult],
    ) -> QueryResult:
        """``execute`` (one run on a session) of ``sql`` with rows and label values cut."""
        body = _body(sql)
        if body is None:
            return execute(sql)
        if not labels:
            return execute(_wrapped("*", body, max_rows + 1))
        with self._lock:
            known = self._columns.get(sql)
        try:
            return self._run_cut(sql, body, labels, max_rows, execute=execute, columns=known)
        except CheckError as error:
            # Columns asked for in an earlier run that the statement no longer returns (a
            # relation changed under ``SELECT *``): asked for again, once.
            if known is None or error.sqlstate not in _COLUMNS_CHANGED:
                raise
            return self._run_cut(sql, body, labels, max_rows, execute=execute, columns=None)

    def _run_cut(
        self,
        sql: str,
        body: str,
        labels: Sequence[str],
        max_rows: int,
        *,
        execute: Callable[[str], QueryResult],
        columns: tuple[str, ...] | None,
    ) -> QueryResult:
        if columns is None:
            columns = execute(_wrapped("*", body, 0)).columns
            with self._lock:
                self._columns[sql] = columns
        if len(set(columns)) != len(columns) or not set(labels) <= set(columns):
            return execute(_wrapped("*", body, max_rows + 1))  # build_samples says what is wrong
        at = tuple(columns.index(label) for label in labels)
        cut = _LabelCut(columns=columns, labels=at, max_length=self._max_length)
        return cut.apply(execute(_wrapped(cut.select(), body, max_rows + 1)))
