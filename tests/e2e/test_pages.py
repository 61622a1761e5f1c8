"""The page names its culprit, end to end: a real lock chain on PostgreSQL, the exporter, Prometheus
with the generated rules (a short ``for``), Alertmanager with the example configuration, and the
webhook that receives the page.

A session of application ``portal-bff`` updates one id_mappings row and stays idle in its
transaction; two more sessions update the same row. The page Alertmanager delivers names the
blocker's application, its ``pg_backend_pid()``, the table, the direct and total waiters (1 and
2), the diagnosis SQL and the pid-guarded fix. Its text is printed, to be quoted. When the
blocker commits, its offender series leave the exposition.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pg_runbook_exporter.config import load_config
from pg_runbook_exporter.mixin import alertgen
from pg_runbook_exporter.mixin.alertrules import RULES_FILE, rules
from tests.conftest import PortalDb
from tests.support.rules import with_for
from tests.support.sessions import Sessions, lock_chain
from tests.support.stack import JOB, example_alertmanager_config, prometheus_stack, wait_until

CONFIG = load_config()
# long enough for the blocker to be named first: waits of offender_lock_wait_seconds, one check
# run and one scrape; the page is rendered when the alert starts firing and not sent again
FOR = "12s"
BLOCKERS = "pgrb_lock_blocker_waiting_sessions_all"


@pytest.fixture
def sessions(portal_db: PortalDb) -> Iterator[Sessions]:
    opened = Sessions(portal_db.dsn)
    yield opened
    opened.close()


def _backend_start(db: PortalDb, pid: int) -> str:
    rows = db.server.execute(
        "SELECT to_char(backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
        "FROM pg_stat_activity WHERE pid = %s",
        (pid,),
        dbname=db.name,
    )
    return str(rows[0][0])


def test_the_blocked_session_page_names_the_blocker_and_its_fix(
    portal_db: PortalDb, sessions: Sessions, tmp_path: Path
) -> None:
    rule_file = tmp_path / RULES_FILE
    rule_file.write_text(with_for(alertgen.generate(CONFIG)[RULES_FILE], FOR), encoding="utf-8")
    (blocked,) = [r for r in rules() if r.name == "PostgresSessionsBlocked"]
    diagnose_sql = alertgen.render(blocked, CONFIG)["annotations"]["diagnose"]
    with prometheus_stack(
        tmp_path / "stack",
        database_url=portal_db.monitor_dsn,
        rule_files=[rule_file],
        alertmanager_config=example_alertmanager_config,
    ) as stack:
        stack.wait_for(f'pgrb_blocked_sessions{{job="{JOB}"}} == 0')
        pid, _row = lock_chain(sessions, portal_db.dsn)
        backend_start = _backend_start(portal_db, pid)
        page = stack.wait_for_notification("PostgresSessionsBlocked", timeout=90)
        annotations = page["annotations"]
        print("the page as the webhook received it:")
        print(json.dumps({k: page[k] for k in ("labels", "annotations")}, indent=2))

        assert page["path"] == "/ticket"
        assert page["labels"] == {
            "alertname": "PostgresSessionsBlocked",
            "severity": "warning",
            "instance": stack.exporter.address,
            "job": JOB,
        }
        culprit = annotations["culprit"]
        assert culprit.startswith(
            f"blocked by portal-bff @ 127.0.0.1 (pid {pid}, idle in transaction for "
        )
        assert "on public.id_mappings; 1 waiting directly, 2 in all (as of " in culprit
        assert annotations["fix"] == (
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = {pid} "
            f"AND backend_start = '{backend_start}';"
        )
        assert annotations["diagnose"] == diagnose_sql
        assert "terminate all connections except current" in annotations["do_not"]

        # the blocker commits: the chain drains and the offender series leave the exposition
        sessions.conns[0].commit()
        wait_until(
            lambda: BLOCKERS not in stack.exporter.scrape().replace(f"# HELP {BLOCKERS}", "")
            .replace(f"# TYPE {BLOCKERS}", ""),
            what="the blocker's offender series to vanish",
            logs=stack.logs,
        )  # fmt: skip
