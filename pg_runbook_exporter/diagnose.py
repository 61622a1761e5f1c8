"""The ``diagnose`` command: an alert's diagnosis SQL run as the checks run theirs, as text.

The SQL and the fix come from alerts.yaml (``playbook.py``), vetted like a check's SQL, and run on
one read-only session with a statement and a lock timeout (``session.py``). ``--label`` values are
bound as parameters, never written into the SQL. Nothing here runs a fix: it prints each found
row's fix, filled in and guarded against a reused pid, for a human with the right role.
"""

from __future__ import annotations

import datetime
import decimal
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pg_runbook_exporter import playbook
from pg_runbook_exporter.config import Config
from pg_runbook_exporter.database_url import DatabaseTarget
from pg_runbook_exporter.errors import DiagnoseError
from pg_runbook_exporter.playbook import Diagnosis
from pg_runbook_exporter.session import Session
from pg_runbook_exporter.statement import bounded

TIMEOUT = 5.0  # seconds: the checks' default statement_timeout
LOCK_TIMEOUT = 0.1  # and lock_timeout: never queue behind an ACCESS EXCLUSIVE lock
MAX_ROWS = 50
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True)
class Report:
    """What ``diagnose`` found: the result as text cells, and each row's filled-in fix."""

    alert: str
    labels: Mapping[str, str]
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    fixes: tuple[str, ...]
    do_not: str | None
    truncated: bool = False

    @property
    def found(self) -> bool:
        return bool(self.rows)


def diagnosis_of(alert: str, labels: Mapping[str, str]) -> Diagnosis:
    """The alert's diagnosis, or a DiagnoseError saying why there is none to run."""
    found = playbook.load()
    if alert not in found:
        if alert in playbook.alert_names():
            raise DiagnoseError(
                f"{alert} has no database diagnosis (it is not about what the database holds): "
                f"see its playbook, docs/alerts/{alert}.md"
            )
        raise DiagnoseError(f"no alert named {alert!r} (names are as in alerts/, e.g. "
                            "PostgresSessionsBlocked)")  # fmt: skip
    diagnosis = found[alert]
    missing = [name for name in diagnosis.labels if name not in labels]
    if missing:
        wanted = " ".join(f"--label {name}=…" for name in missing)
        raise DiagnoseError(f"{alert} needs the alert's label(s) {', '.join(missing)}: {wanted}")
    unknown = sorted(set(labels) - set(diagnosis.labels))
    if unknown:
        takes = ", ".join(diagnosis.labels) or "none"
        raise DiagnoseError(f"{alert} takes no label {', '.join(unknown)} (it takes: {takes})")
    return diagnosis


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    """``k=v`` arguments of ``--label`` as a mapping; a malformed one is a DiagnoseError."""
    labels: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise DiagnoseError(f"--label {item!r}: expected NAME=VALUE")
        if name in labels:
            raise DiagnoseError(f"--label {name} is given twice")
        labels[name] = value
    return labels


def cell(value: Any) -> str:
    """A result value as text safe on a terminal: control characters shown escaped."""
    if value is None:
        text = ""
    elif isinstance(value, datetime.datetime):
        text = value.isoformat()
    elif isinstance(value, datetime.timedelta):
        text = str(value - datetime.timedelta(microseconds=value.microseconds))
    elif isinstance(value, decimal.Decimal | float):
        text = f"{value:g}" if isinstance(value, float) else str(value)
    elif isinstance(value, bytes):
        text = value.decode("utf-8", errors="replace")
    else:
        text = str(value)
    return _UNSAFE.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


def _raw(value: Any) -> str:
    """A result value as the fix's field (the SQL already gives backend_start as text)."""
    return "" if value is None else str(value)


def run(config: Config, target: DatabaseTarget, alert: str, labels: Mapping[str, str]) -> Report:
    """Run ``alert``'s diagnosis once on its own read-only session; raises ExporterError."""
    diagnosis = diagnosis_of(alert, labels)
    params = {**config.sql_params(), **labels}
    missing = [name for name in diagnosis.settings_used() if name not in params]
    if missing:
        raise DiagnoseError(f"{alert}: the diagnosis needs setting(s) {', '.join(missing)}, "
                            f"which {config.path} lacks")  # fmt: skip
    session = Session(target=target, default_timeout=TIMEOUT, default_lock_timeout=LOCK_TIMEOUT,
                      name="diagnose")  # fmt: skip
    try:
        session.connect()
        result = session.run(
            bounded(diagnosis.sql, MAX_ROWS),
            params,
            timeout=TIMEOUT,
            lock_timeout=LOCK_TIMEOUT,
            max_rows=MAX_ROWS,
        )
    finally:
        session.close()
    rows = tuple(tuple(cell(v) for v in row) for row in result.rows)
    fixes = []
    for row in result.rows:
        values = {**labels, **{c: _raw(v) for c, v in zip(result.columns, row, strict=True)}}
        fixes.append(cell(diagnosis.fix_for(values)))
    return Report(
        alert=alert,
        labels=dict(labels),
        columns=result.columns,
        rows=rows,
        fixes=tuple(dict.fromkeys(fixes)),
        do_not=diagnosis.do_not,
        truncated=result.truncated,
    )


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def format_report(report: Report) -> str:
    """The report as the command prints it: the table, then the fix for each row, never run."""
    where = ", ".join(f"{k}={cell(v)!r}" for k, v in report.labels.items())
    head = f"{report.alert}" + (f" ({where})" if where else "")
    if not report.found:
        return f"{head}: not found — the diagnosis returns no rows (the condition is over, or the "\
            "labels name nothing)"  # fmt: skip
    parts = [f"{head}: {len(report.rows)} row(s)", "", table(report.columns, report.rows)]
    if report.truncated:
        parts.append(f"(only the first {MAX_ROWS} rows)")
    parts += ["", "Fix (not run; for a human with the right role, after reading the rows):"]
    parts += [f"  {fix}" for fix in report.fixes]
    if report.do_not:
        parts += ["", f"Do not: {report.do_not}"]
    return "\n".join(parts)
