"""`pg-runbook-exporter check`: run every check once and print what happened, with fixes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial

from pg_runbook_exporter.errors import CheckError, FailureReason, SkipReason
from pg_runbook_exporter.state import CheckState

_DENIED = re.compile(r"permission denied for (table|relation|view|function|schema) (\S+)")
# Server functions the pg_monitor role (through pg_read_server_files-free grants) may call.
_MONITOR_FUNCTIONS = ("pg_ls_waldir", "pg_ls_archive_statusdir", "pg_stat_statements")
_FIELD = re.compile(r"\{(\w+)\}")  # {label} or {role} in a metric's fix


@dataclass(frozen=True)
class Line:
    check: str
    status: str
    duration_ms: str
    series: str
    failed: bool
    fix: str | None
    more_fixes: tuple[str, ...] = ()  # from queries.yaml `fix:` of values above 0
    skipped: bool = False


def identifier(name: str) -> str:
    """``name`` double-quoted, as PostgreSQL reads it back whatever it holds.

    A name from the database is attacker-chosen: printed into a statement to paste, it must stay
    one name, and control characters must not reach the terminal (they become U&"\\+XXXXXX").
    """
    quoted = name.replace('"', '""')
    if quoted.isprintable():
        return f'"{quoted}"'
    escaped = "".join(c if c.isprintable() and c != "\\" else f"\\+{ord(c):06X}" for c in quoted)
    return f'U&"{escaped}"'


def _field(fields: dict[str, str], match: re.Match[str]) -> str:
    return fields[match.group(1)]


def declared_fixes(state: CheckState, role: str) -> tuple[str, ...]:
    """The ``fix`` of every metric whose value is above 0, its {label}s and {role} filled in."""
    if not state.success or state.samples is None:
        return ()
    labels = state.check.labels
    found: list[str] = []
    for row in state.samples.rows:
        fields = {name: identifier(text) for name, text in zip(labels, row.labels, strict=True)}
        fields["role"] = identifier(role)
        for metric, value in zip(state.check.metrics, row.values, strict=True):
            if metric.fix is None or value is None or value <= 0:
                continue
            text = _FIELD.sub(partial(_field, fields), metric.fix)
            if text not in found:
                found.append(text)
    return tuple(found)


def grant_for(message: str, role: str) -> str | None:
    """The GRANT that fixes a permission error, when the message names the object."""
    match = _DENIED.search(message)
    if match is None:
        if any(f in message for f in _MONITOR_FUNCTIONS) or "pg_monitor" in message:
            return f"GRANT pg_monitor TO {role};"
        return None
    kind, name = match.groups()
    if kind == "function" and name in _MONITOR_FUNCTIONS:
        return f"GRANT pg_monitor TO {role};"
    if kind == "function":
        return f"GRANT EXECUTE ON FUNCTION {name} TO {role};  -- or GRANT pg_monitor TO {role};"
    if kind == "schema":
        return f"GRANT USAGE ON SCHEMA {name} TO {role};"
    # Never a table-wide SELECT: users holds e-mails and password hashes. The role script grants
    # only the columns the checks read.
    return (
        f"psql -d <portal database> -v role={role} -f pg_runbook_exporter/sql/monitoring-role.sql"
        f"  # SELECT on the columns of {name} the checks read"
    )


def describe(state: CheckState, role: str) -> Line:
    duration = f"{state.duration * 1000:.1f}" if state.duration is not None else "-"
    series = str(state.samples.series) if state.samples and state.success else "-"
    if state.skipped is not None:
        needs = ", ".join(f"{n} = {v}" for n, v in state.check.requires.settings)
        setting = state.skipped is SkipReason.SETTING
        why = f"{state.skipped}: needs {needs}" if setting else str(state.skipped)
        return Line(state.check.name, f"skipped ({why})", "-", "-", False, None, skipped=True)
    if state.success:
        fixes = declared_fixes(state, role)
        return Line(state.check.name, "ok", duration, series, False, None, fixes)
    error = state.last_error or CheckError(FailureReason.OTHER, "unknown error")
    fix = grant_for(error.message, role) if error.reason is FailureReason.PERMISSION else None
    status = f"FAILED ({error.reason}): {error.message}"
    return Line(state.check.name, status, duration, series, True, fix)


def summary(lines: list[Line]) -> str:
    """``N ok, N failed, N skipped``."""
    failed = sum(x.failed for x in lines)
    skipped = sum(x.skipped for x in lines)
    return f"{len(lines) - failed - skipped} ok, {failed} failed, {skipped} skipped"


def format_table(lines: list[Line]) -> str:
    header = ("CHECK", "STATUS", "MS", "SERIES")
    rows = [header] + [(x.check, x.status, x.duration_ms, x.series) for x in lines]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    out = []
    for row in rows:
        out.append(f"{row[0]:<{widths[0]}}  {row[2]:>{widths[2]}}  {row[3]:>6}  {row[1]}")
    fixes = sorted({x.fix for x in lines if x.fix} | {f for x in lines for f in x.more_fixes})
    if fixes:
        out += ["", "Missing privileges; as a superuser run:"] + [f"  {fix}" for fix in fixes]
    return "\n".join(out)
