"""The offender sections: lock blockers as trees, the oldest idle transactions, the longest queries.

Built from the rows of the checks marked ``offenders:`` in queries.yaml, whose labels and metrics
are fixed by CONTRACT.md. Each offender carries its playbook's fix, guarded by pid *and*
backend_start so that a pid reused by a newer session is never the one terminated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from pg_runbook_exporter.config import Check
from pg_runbook_exporter.state import Snapshot
from pg_runbook_exporter.status.rules import Offenders

_PID = re.compile(r"^[1-9][0-9]{0,9}$")
_BACKEND_START = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")

# The metrics each kind reads, without the namespace (CONTRACT.md 1–3).
METRICS: dict[Offenders, dict[str, str]] = {
    Offenders.BLOCKERS: {
        "waiting": "lock_blocker_waiting_sessions",
        "waiting_all": "lock_blocker_waiting_sessions_all",
        "since": "lock_blocker_transaction_start_timestamp_seconds",
        "state_change": "lock_blocker_state_change_timestamp_seconds",
        "progress": "lock_blocker_progress_ratio",
    },
    Offenders.IDLE_IN_TRANSACTION: {
        "since": "idle_in_transaction_since_timestamp_seconds",
        "waiting": "idle_in_transaction_blocked_sessions",
    },
    Offenders.LONG_RUNNING: {"since": "long_running_query_start_timestamp_seconds"},
}
TITLES = {
    Offenders.BLOCKERS: "Blocking sessions",
    Offenders.IDLE_IN_TRANSACTION: "Idle in transaction",
    Offenders.LONG_RUNNING: "Longest queries",
}
_LABELS = (
    "pid", "backend_start", "application_name", "usename", "client_addr", "datname", "state",
    "gid", "relation", "command", "wait_event_type", "wait_event",
)  # fmt: skip


def literal(text: str) -> str:
    """``text`` as an SQL string literal (standard_conforming_strings: quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"


def fix(kind: Offenders, labels: dict[str, str]) -> str | None:
    """The playbook's fix for one offender, or None when its pid and start cannot guard it."""
    gid = labels.get("gid", "")
    if kind is Offenders.BLOCKERS and gid and labels.get("pid") == "0":
        return f"ROLLBACK PREPARED {literal(gid)};  -- as the prepared transaction's owner"
    pid, start = labels.get("pid", ""), labels.get("backend_start", "")
    if not _PID.match(pid) or not _BACKEND_START.match(start):
        return None
    # A running query, or a maintenance command holding the lock, is cancelled (the lock alerts'
    # fix ``when: command`` in mixin/alerts.yaml); a session idle in its transaction is ended.
    cancel = kind is Offenders.LONG_RUNNING or bool(labels.get("command"))
    action = "pg_cancel_backend" if cancel else "pg_terminate_backend"
    return (
        f"SELECT {action}(pid) FROM pg_stat_activity "
        f"WHERE pid = {pid} AND backend_start = '{start}';"
    )


def _offenders(check: Check, snap: Snapshot, wall: float) -> Iterator[dict[str, Any]]:
    kind = check.offenders
    assert kind is not None
    state = next(s for s in snap.states if s.check is check)
    samples = state.serving(snap.taken_at)
    wanted = {key: snap.config.metric_name(name) for key, name in METRICS[kind].items()}
    index = {m.name: i for i, m in enumerate(check.metrics)}
    for row in samples.rows if samples else ():
        labels = dict(zip(check.labels, row.labels, strict=True))
        item: dict[str, Any] = {k: labels[k] for k in _LABELS if k in labels}
        for key, metric in wanted.items():
            value = row.values[index[metric]] if metric in index else None
            item[key] = value if value is None or math.isfinite(value) else None
        since = item.get("since")
        item["age_seconds"] = round(wall - since, 3) if isinstance(since, float) else None
        item["fix"] = fix(kind, labels)
        yield item


def sections(snap: Snapshot, wall: float) -> list[dict[str, Any]]:
    """One section per offender check, in queries.yaml order; oldest offenders first."""
    found = []
    order = list(Offenders)
    for check in sorted(
        (c for c in snap.config.checks if c.offenders is not None),
        key=lambda c: order.index(c.offenders),  # type: ignore[arg-type]
    ):
        if check.offenders is None:
            continue
        items = sorted(_offenders(check, snap, wall), key=lambda i: -(i["age_seconds"] or 0.0))
        found.append(
            {
                "kind": str(check.offenders),
                "check": check.name,
                "title": TITLES[check.offenders],
                "playbook": check.status[0].alert if check.status else None,
                "offenders": items,
            }
        )
    return found
