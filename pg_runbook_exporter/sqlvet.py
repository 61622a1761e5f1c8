"""Vetting of a check's SQL when the config loads, with PostgreSQL's own parser.

A check is one SELECT (or WITH … SELECT, or VALUES) statement that reads. The session is
read-only and the role holds no write grants, but a read-only transaction still lets
``pg_terminate_backend()`` or ``set_config()`` run: those are refused here, before anything
connects, with the reason. The parse tree comes from libpg_query (through ``pgparse``), so a
syntax error is reported at load time too, with its line in the SQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pgparse

_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")

# Functions that change state, signal other processes, or run SQL given as text (which would
# escape this vetting). Compared with the last part of the (lower-cased) function name.
_DENIED_FUNCTIONS = {
    "pg_terminate_backend": "signals another session",
    "pg_cancel_backend": "signals another session",
    "pg_log_backend_memory_contexts": "signals another session",
    "pg_reload_conf": "signals the server",
    "pg_rotate_logfile": "signals the server",
    "pg_promote": "promotes a standby",
    "set_config": "changes a setting of the session",
    "nextval": "advances a sequence",
    "setval": "changes a sequence",
    "txid_current": "assigns a transaction ID",
    "pg_current_xact_id": "assigns a transaction ID",
    "pg_notify": "sends a notification",
    "pg_switch_wal": "switches the WAL file",
    "pg_log_standby_snapshot": "writes WAL",
    "pg_restore_relation_stats": "changes planner statistics",
    "pg_clear_relation_stats": "changes planner statistics",
    "pg_restore_attribute_stats": "changes planner statistics",
    "pg_clear_attribute_stats": "changes planner statistics",
    "pg_create_restore_point": "writes WAL",
    "pg_logical_emit_message": "writes WAL",
    "pg_start_backup": "starts a backup",
    "pg_stop_backup": "stops a backup",
    "pg_stat_statements_reset": "resets statistics",
    "pg_replication_slot_advance": "moves a replication slot",
    "pg_import_system_collations": "creates collations",
    "query_to_xml": "runs SQL given as text",
    "query_to_xmlschema": "runs SQL given as text",
    "query_to_xml_and_xmlschema": "runs SQL given as text",
    "cursor_to_xml": "reads a cursor",
    "cursor_to_xmlschema": "reads a cursor",
}
_DENIED_PREFIXES = {
    "dblink": "opens connections and runs SQL given as text",
    "lo_": "reads or changes large objects",
    "lowrite": "changes large objects",
    "pg_advisory": "takes advisory locks",
    "pg_try_advisory": "takes advisory locks",
    "pg_stat_reset": "resets statistics",
    "pg_create_": "creates replication slots",
    "pg_drop_replication_slot": "drops a replication slot",
    "pg_copy_": "copies replication slots",
    "pg_logical_slot_get": "consumes a replication slot",
    "pg_replication_origin_": "changes replication origins",
    "pg_wal_replay_": "pauses or resumes recovery",
    "pg_backup_": "starts or stops a backup",
    "pg_file_": "writes server files",
    "binary_upgrade_": "is for pg_upgrade only",
}
# Statements that are not a SELECT, as the words a reader knows them by.
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


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (node type, node body) pair of a libpg_query parse tree, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key[:1].isupper():
                yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _function_name(call: dict[str, Any]) -> str:
    parts = [p.get("String", {}).get("sval", "") for p in call.get("funcname", [])]
    return ".".join(parts).lower()


def _denied(function: str) -> str | None:
    name = function.rsplit(".", 1)[-1]
    if name in _DENIED_FUNCTIONS:
        return _DENIED_FUNCTIONS[name]
    for prefix, why in _DENIED_PREFIXES.items():
        if name.startswith(prefix):
            return why
    return None


def _line_of(sql: str, position: int) -> int:
    # libpg_query counts from 1; 0 means no position.
    return sql.count("\n", 0, max(position - 1, 0)) + 1


def vet(sql: str) -> list[str]:
    """Why this SQL may not be a check (one line each); empty when it may."""
    text = _parseable(sql)
    try:
        tree = pgparse.parse(text)
    except pgparse.PGQueryError as exc:
        where = f" (line {_line_of(text, exc.position)} of the SQL)" if exc.position else ""
        return [f"does not parse: {exc.message}{where}"]
    if len(tree) != 1:
        return [f"holds {len(tree)} statements; a check is one SELECT or WITH statement"]
    statement: dict[str, Any] = tree[0]["stmt"]
    kind = next(iter(statement))
    if kind != "SelectStmt":
        return [f"is a {_statement_name(kind)} statement; a check is one SELECT or WITH statement"]
    problems: list[str] = []
    seen: set[str] = set()
    for node_type, body in _walk(statement):
        if node_type in _WRITES:
            problem = f"writes ({_statement_name(node_type)} inside the statement)"
        elif node_type == "SelectStmt" and body.get("intoClause"):
            problem = "SELECT INTO creates a table"
        elif node_type == "SelectStmt" and body.get("lockingClause"):
            problem = "FOR UPDATE/SHARE locks rows"
        elif node_type == "FuncCall" and (why := _denied(name := _function_name(body))):
            problem = f"calls {name}(), which {why}"
        else:
            continue
        if problem not in seen:
            seen.add(problem)
            problems.append(problem)
    return [f"{p}; checks may only read" for p in problems]
