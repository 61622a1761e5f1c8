"""An offender's fix: guarded by pid and backend_start, or none when they cannot guard it."""

from __future__ import annotations

from pg_runbook_exporter import playbook
from pg_runbook_exporter.status.offenders import fix
from pg_runbook_exporter.status.rules import Offenders

START = "2026-12-02T18:31:51.204582Z"


def test_the_fix_names_pid_and_backend_start() -> None:
    assert fix(Offenders.IDLE_IN_TRANSACTION, {"pid": "5009", "backend_start": START}) == (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE pid = 5009 AND backend_start = '{START}';"
    )
    assert fix(Offenders.LONG_RUNNING, {"pid": "7", "backend_start": START}).startswith(  # type: ignore[union-attr]
        "SELECT pg_cancel_backend(pid)"
    )


def test_no_fix_without_a_pid_and_start_that_can_guard_it() -> None:
    for labels in (
        {"pid": "5009"},
        {"pid": "1; DROP TABLE users", "backend_start": START},
        {"pid": "5009", "backend_start": "' OR true --"},
        {"pid": "0", "backend_start": START},
    ):
        assert fix(Offenders.BLOCKERS, labels) is None


def test_a_prepared_transaction_is_rolled_back_by_its_gid_quoted() -> None:
    labels = {"pid": "0", "gid": "it's", "backend_start": ""}
    assert fix(Offenders.BLOCKERS, labels) == (
        "ROLLBACK PREPARED 'it''s';  -- as the prepared transaction's owner"
    )


def test_a_blocker_s_fix_is_the_lock_alerts_fix_for_the_same_labels() -> None:
    """The page's diagnosis and the status page choose alike: a maintenance command holding the lock
    is cancelled, a session is terminated. Fails if either side changes its choice alone."""
    diagnosis = playbook.load()["PostgresLockWait"]
    for labels in (
        {"pid": "5009", "backend_start": START, "command": "CREATE INDEX"},
        {"pid": "5009", "backend_start": START, "command": ""},
    ):
        chosen = diagnosis.fix_for({**labels, "gid": ""})
        assert fix(Offenders.BLOCKERS, labels) == " ".join(chosen.split())
    assert "pg_cancel_backend" in (
        fix(Offenders.BLOCKERS, {"pid": "1", "backend_start": START, "command": "CLUSTER"}) or ""
    )
