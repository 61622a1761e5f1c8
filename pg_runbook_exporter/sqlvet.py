"""Vetting of a check's SQL when the config loads: PostgreSQL's own parse tree against an allowlist.

A check is one SELECT (or WITH … SELECT, or VALUES) statement. Every node of its parse tree
(libpg_query, through ``pgparse``) must be of a kind a reading query needs, and every function,
relation, operator and type it names must be on the allowlist of ``sqlallow.py``; anything else is
refused, named, before anything connects. A read-only transaction is not enough on its own: it
still lets ``set_config()``, advisory locks, ``pg_notify()``, ``txid_current()`` or (before
PostgreSQL 16) ``lo_from_bytea()`` run, and functions such as ``ts_stat()`` or ``query_to_xml()``
run SQL given as text, which no vetting of the outer statement can see.

The parser resolves no names; the session makes the names mean what the allowlist means by
pinning ``search_path`` (see ``sqlallow.py``) and ``standard_conforming_strings``.
"""

from __future__ import annotations

import re
from typing import Any

import pgparse

from pg_runbook_exporter import sqlallow

_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")
_ALLOWLIST = "pg_runbook_exporter/sqlallow.py"

# Parse-tree nodes a reading query is made of. Everything else (XMLTABLE, JSON_TABLE, XML
# expressions, TABLESAMPLE, column definition lists, COLLATE, any statement) is refused.
_NODES = frozenset(
    {
        "SelectStmt", "ResTarget", "ColumnRef", "A_Star", "A_Const", "ParamRef", "String",
        "Integer", "Float", "Boolean", "BitString", "List", "A_Expr", "BoolExpr", "NullTest",
        "BooleanTest", "CaseExpr", "CaseWhen", "CoalesceExpr", "MinMaxExpr", "NullIfExpr",
        "SQLValueFunction", "SubLink", "TypeCast", "FuncCall", "A_ArrayExpr", "A_Indirection",
        "A_Indices", "RowExpr", "RangeVar", "RangeSubselect", "RangeFunction", "JoinExpr",
        "CommonTableExpr", "SortBy", "WindowDef", "GroupingSet", "GroupingFunc",
    }
)  # fmt: skip
_NODE_NAMES = {
    "RangeTableFunc": "XMLTABLE",
    "JsonTable": "JSON_TABLE",
    "XmlExpr": "an XML function",
    "XmlSerialize": "XMLSERIALIZE",
    "RangeTableSample": "TABLESAMPLE",
    "ColumnDef": "a column definition list",
    "CollateClause": "COLLATE",
}
_AEXPR_KINDS = frozenset(
    {
        "AEXPR_OP", "AEXPR_OP_ANY", "AEXPR_OP_ALL", "AEXPR_DISTINCT", "AEXPR_NOT_DISTINCT",
        "AEXPR_NULLIF", "AEXPR_IN", "AEXPR_LIKE", "AEXPR_ILIKE",
    }
)  # fmt: skip
# BETWEEN is syntax for >= and <=; its "name" is the keyword.
_BETWEEN = frozenset(
    {"AEXPR_BETWEEN", "AEXPR_NOT_BETWEEN", "AEXPR_BETWEEN_SYM", "AEXPR_NOT_BETWEEN_SYM"}
)
# Why some well-known functions are refused: for the message only (the allowlist decides).
_WHY = {
    "ts_stat": "runs SQL given as text",
    "ts_rewrite": "runs SQL given as text",
    "query_to_xml": "runs SQL given as text",
    "cursor_to_xml": "reads a cursor",
    "table_to_xml": "reads a relation named at run time",
    "schema_to_xml": "reads relations named at run time",
    "database_to_xml": "reads relations named at run time",
    "dblink": "opens connections and runs SQL given as text",
    "set_config": "changes a setting of the session",
    "pg_advisory": "takes advisory locks",
    "pg_try_advisory": "takes advisory locks",
    "pg_notify": "sends a notification",
    "txid_current": "assigns a transaction ID",
    "pg_current_xact_id": "assigns a transaction ID",
    "lo_": "reads or writes large objects",
    "pg_terminate_backend": "signals another session",
    "pg_cancel_backend": "signals another session",
    "pg_reload_conf": "signals the server",
    "pg_sleep": "holds the session",
    "nextval": "advances a sequence",
    "setval": "changes a sequence",
    "pg_read_": "reads server files",
    "pg_stat_reset": "resets statistics",
    "pg_stat_statements_reset": "resets statistics",
}
_STATEMENT_NAMES = {
    "InsertStmt": "INSERT",
    "UpdateStmt": "UPDATE",
    "DeleteStmt": "DELETE",
    "MergeStmt": "MERGE",
    "CreateStmt": "CREATE TABLE",
    "CreateTableAsStmt": "CREATE TABLE AS",
    "IndexStmt": "CREATE INDEX",
    "DropStmt": "DROP",
    "AlterTableStmt": "ALTER TABLE",
    "TruncateStmt": "TRUNCATE",
    "VariableSetStmt": "SET",
    "CopyStmt": "COPY",
    "ExplainStmt": "EXPLAIN",
    "DoStmt": "DO",
    "CallStmt": "CALL",
    "LockStmt": "LOCK",
    "VacuumStmt": "VACUUM/ANALYZE",
    "TransactionStmt": "transaction control",
    "GrantStmt": "GRANT",
    "NotifyStmt": "NOTIFY",
    "ListenStmt": "LISTEN",
    "DiscardStmt": "DISCARD",
}
_WRITES = ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt")


def _statement_name(node_type: str) -> str:
    return _STATEMENT_NAMES.get(node_type, node_type.removesuffix("Stmt") + " statement")


def _parseable(sql: str) -> str:
    """The check's SQL as the server receives it: %(name)s bound as $n, %% as %."""
    numbers: dict[str, int] = {}

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        # Newlines are kept, so a reported line number is the line in queries.yaml's block.
        return "$" + str(numbers.setdefault(match.group(1), len(numbers) + 1))

    return _PLACEHOLDER.sub(substitute, sql)


def _names(items: list[dict[str, Any]]) -> list[str]:
    return [item.get("String", {}).get("sval", "") for item in items]


def _why(function: str) -> str:
    for prefix, why in _WHY.items():
        if function.startswith(prefix):
            return f" ({why})"
    return ""


class _Vetting:
    """One walk over a statement's parse tree, collecting each problem once, in order."""

    def __init__(self, text: bytes) -> None:
        self.text = text
        self.problems: list[str] = []

    def add(self, problem: str) -> None:
        if problem not in self.problems:
            self.problems.append(problem)

    def visit(self, value: Any, ctes: frozenset[str]) -> None:
        """Every node below ``value``; ``ctes`` are the WITH names visible there."""
        if isinstance(value, list):
            for item in value:
                self.visit(item, ctes)
        elif isinstance(value, dict):
            for key, item in value.items():
                if key[:1].isupper():  # a node: {"NodeType": {fields}}
                    self.node(key, item, ctes)
                else:  # a field, or a struct embedded without its node type
                    self.visit(item, ctes)

    def node(self, kind: str, body: dict[str, Any], ctes: frozenset[str]) -> None:
        if kind == "SelectStmt":
            self.select(body, ctes)
            return
        if kind in _WRITES:  # refused as a whole: nothing below it is looked at
            self.add(f"writes ({_statement_name(kind)} inside the statement); checks may only read")
            return
        if kind not in _NODES:
            self.add(f"uses {_NODE_NAMES.get(kind, kind)}, which a check may not")
            return
        if kind == "FuncCall":
            self.function(_names(body.get("funcname", [])))
        elif kind == "RangeVar":
            self.relation(body, ctes)
        elif kind == "A_Expr":
            if body.get("kind") not in _AEXPR_KINDS | _BETWEEN:
                self.add(f"uses {body.get('kind')}, which a check may not")
            elif body.get("kind") not in _BETWEEN:
                self.operator(_names(body.get("name", [])))
        elif kind == "SubLink" and body.get("operName"):
            self.operator(_names(body["operName"]))
        elif kind == "SortBy" and body.get("useOp"):
            self.operator(_names(body["useOp"]))
        elif kind == "TypeCast":
            self.type(_names(body.get("typeName", {}).get("names", [])))
        elif kind == "A_Const":
            self.constant(body)
        self.visit(body, ctes)

    def select(self, body: dict[str, Any], ctes: frozenset[str]) -> None:
        if body.get("intoClause"):
            self.add("SELECT INTO creates a table; checks may only read")
        if body.get("lockingClause"):
            self.add("FOR UPDATE/SHARE locks rows; checks may only read")
        inner = ctes
        if with_clause := body.get("withClause"):
            entries = [item.get("CommonTableExpr", {}) for item in with_clause.get("ctes", [])]
            names = [str(entry.get("ctename", "")) for entry in entries]
            for index, entry in enumerate(entries):
                # Without RECURSIVE a WITH query sees only the ones before it: a later name
                # inside it means a real relation.
                seen = names if with_clause.get("recursive") else names[:index]
                self.visit(entry, ctes | frozenset(seen))
            inner = ctes | frozenset(names)
        for key, value in body.items():
            if key in ("larg", "rarg"):  # the arms of UNION/INTERSECT/EXCEPT, embedded
                self.select(value, inner)
            elif key not in ("withClause", "intoClause", "lockingClause"):
                self.visit(value, inner)

    def function(self, parts: list[str]) -> None:
        name = ".".join(parts)
        if len(parts) > 1 and parts[:-1] != ["pg_catalog"]:
            self.add(f"calls {name}(): a function may be qualified with pg_catalog only")
        elif parts[-1] not in sqlallow.FUNCTIONS:
            self.add(f"calls {name}(){_why(parts[-1])}: not on the allowlist ({_ALLOWLIST})")

    def relation(self, body: dict[str, Any], ctes: frozenset[str]) -> None:
        schema, name = body.get("schemaname"), str(body.get("relname", ""))
        qualified = ".".join(p for p in (body.get("catalogname"), schema, name) if p)
        if qualified == name and (name in ctes or name in sqlallow.PORTAL_TABLES):
            return
        if name in sqlallow.PORTAL_TABLES:
            self.add(
                f"reads {qualified}: name a portal table unqualified (it resolves in the "
                "schema of DATABASE_URL)"
            )
        elif qualified not in (name, f"pg_catalog.{name}"):
            self.add(f"reads {qualified}: a relation may be qualified with pg_catalog only")
        elif name not in sqlallow.CATALOG_RELATIONS:
            self.add(f"reads {qualified}: not on the allowlist ({_ALLOWLIST})")

    def operator(self, parts: list[str]) -> None:
        if len(parts) > 1 and parts[:-1] != ["pg_catalog"]:
            self.add(
                f"uses OPERATOR({'.'.join(parts)}): an operator may be qualified with "
                "pg_catalog only"
            )
        elif parts[-1] not in sqlallow.OPERATORS:
            self.add(f"uses operator {parts[-1]}: not on the allowlist ({_ALLOWLIST})")

    def type(self, parts: list[str]) -> None:
        if (len(parts) > 1 and parts[:-1] != ["pg_catalog"]) or parts[-1] not in sqlallow.TYPES:
            self.add(f"casts to {'.'.join(parts)}: not on the allowlist ({_ALLOWLIST})")

    def constant(self, body: dict[str, Any]) -> None:
        # With standard_conforming_strings off, a backslash in '…' escapes the next character:
        # text read here as a string could end the string there and run as SQL.
        value = body.get("sval", {}).get("sval", "")
        location = body.get("location", -1)
        if "\\" in value and location >= 0 and self.text[location : location + 1] == b"'":
            self.add(
                "a '…' string holds a backslash, whose meaning depends on "
                "standard_conforming_strings: write it as E'…' with the backslash doubled"
            )


def _line_of(text: str, position: int) -> int:
    # pgparse counts characters from 1 (tree locations are bytes from 0); 0 means no position.
    return text.count("\n", 0, max(position - 1, 0)) + 1


def vet(sql: str) -> list[str]:
    """Why this SQL may not be a check (one line each); empty when it may."""
    text = _parseable(sql)
    try:
        tree = pgparse.parse(text)
    except pgparse.PGQueryError as exc:
        line = _line_of(text, exc.position)
        where = f" (line {line} of the SQL)" if exc.position else ""
        return [f"does not parse: {exc.message}{where}"]
    if len(tree) != 1:
        return [f"holds {len(tree)} statements; a check is one SELECT or WITH statement"]
    statement: dict[str, Any] = tree[0]["stmt"]
    kind = next(iter(statement))
    if kind != "SelectStmt":
        return [f"is a {_statement_name(kind)} statement; a check is one SELECT or WITH statement"]
    vetting = _Vetting(text.encode())
    vetting.visit(statement, frozenset())
    return vetting.problems
