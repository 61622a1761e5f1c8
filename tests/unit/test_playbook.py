"""playbook.py: alerts.yaml's diagnoses, vetted like checks, and their fixes filled and quoted."""

from __future__ import annotations

from pathlib import Path

import pytest

from pg_runbook_exporter import playbook
from pg_runbook_exporter.errors import ConfigError
from pg_runbook_exporter.mixin.alertrules import rules
from pg_runbook_exporter.playbook import Diagnosis, Fix

# The alerts without a diagnosis, each with the reason no statement of the exporter's role could
# find the culprit. Every other alert has one: a new alert needs a diagnosis or a line here.
WITHOUT_DIAGNOSIS: dict[str, str] = {
    "PgRunbookExporterDown": "the exporter does not answer: no session to diagnose from",
    "PgRunbookExporterAbsent": "Prometheus scrapes no exporter: its scrape config, not PostgreSQL",
    "PostgresDown": "the database does not answer: no statement can run",
    "PgRunbookCheckFailing": "the check's reason is a label; its error is in the exporter's log",
    "PgRunbookCheckStale": "the exporter's own scheduling; its log says why the runs stopped",
    "PgRunbookCheckSkipped": "its reason label names what is missing (extension, relation, …)",
    "PgRunbookCheckTruncated": "the check's own series bound (max_series), not the database",
    "PostgresDiskSpaceLow": "node_exporter's volume: PostgreSQL cannot see free space; what fills "
    "it (WAL, a growing database) has alerts of its own, with diagnoses",
    "PostgresBackupMissing": "read from the backup directory's files, not the database",
    "PostgresBackupRetentionShort": "read from the backup directory's files, not the database",
    "PostgresBackupShrunk": "read from the backup directory's files, not the database",
    "PostgresBackupNotVerified": "read from the verification records beside the backups",
    "PostgresBackupVerificationFailed": "the verification record says why; verify-backup reruns it",
    "PrismaMigrationWithoutBackup": "a migration's time against the backup files' times: the page "
    "names both",
}


def _file(tmp_path: Path, diagnosis: str) -> Path:
    path = tmp_path / "alerts.yaml"
    path.write_text(f"alerts:\n  - alert: PostgresExample\n    diagnosis:\n{diagnosis}")
    return path


def test_every_alert_has_a_diagnosis_or_a_reason_for_none() -> None:
    """Fails when an alert has no diagnosis and no reason in WITHOUT_DIAGNOSIS, when one listed
    there gained a diagnosis, or when a listed alert no longer exists."""
    alerts = {r.name for r in rules()}
    assert set(WITHOUT_DIAGNOSIS) - alerts == set(), "no longer alerts: drop them from the list"
    assert set(playbook.load()) == alerts - set(WITHOUT_DIAGNOSIS)


def test_a_diagnosis_that_writes_reads_query_text_or_misnames_a_label_is_refused(
    tmp_path: Path,
) -> None:
    path = _file(
        tmp_path,
        "      sql: SELECT pid, query FROM pg_stat_activity WHERE datname = %(dbname)s\n"
        "      labels: [datname]\n"
        "      fix: '{pid:quoted}'\n"
        "      fixes: no\n",
    )
    with pytest.raises(ConfigError) as raised:
        playbook.load.__wrapped__(path)
    where = f"{path}: alerts.PostgresExample.diagnosis"
    assert raised.value.problems == [
        f"{where}.fixes: unknown key (expected one of: do_not, fix, labels, sql)",
        f"{where}.sql: reads query text, which may hold customer data: use query_id",
        f"{where}.labels: datname: the SQL does not use %(datname)s",
        f"{where}.fix[0].text: {{pid:quoted}}: a field is {{name}}, {{name:literal}} or "
        "{name:ident}",
    ]


def test_a_diagnosis_that_would_run_its_own_fix_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, "      sql: SELECT pg_terminate_backend(42)\n      fix: none\n")
    with pytest.raises(ConfigError) as raised:
        playbook.load.__wrapped__(path)
    assert raised.value.problems == [
        f"{path}: alerts.PostgresExample.diagnosis.sql: calls pg_terminate_backend() (signals "
        "another session): not on the allowlist (pg_runbook_exporter/sqlallow.py)"
    ]


def test_a_writing_diagnosis_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, "      sql: DELETE FROM users\n      fix: none\n")
    with pytest.raises(ConfigError) as raised:
        playbook.load.__wrapped__(path)
    assert raised.value.problems == [
        f"{path}: alerts.PostgresExample.diagnosis.sql: is a DELETE statement; a check is one "
        "SELECT or WITH statement"
    ]


def test_fields_are_quoted_as_they_say_and_missing_ones_stay_visible() -> None:
    text = "ROLLBACK PREPARED {gid:literal}; VACUUM {schema:ident}.{table:ident}; -- {pid} {gone}"
    values = {"gid": "a'b", "schema": 'Sch"ema', "table": "t", "pid": "42"}
    assert playbook.fill(text, values) == (
        'ROLLBACK PREPARED \'a\'\'b\'; VACUUM "Sch""ema"."t"; -- 42 <gone>'
    )


def test_the_first_fix_whose_field_is_set_applies() -> None:
    diagnosis = Diagnosis(
        "X",
        "SELECT 1",
        (),
        (Fix("ROLLBACK PREPARED {gid:literal};", when="gid"), Fix("kill {pid}")),
    )
    assert diagnosis.fix_for({"gid": "g", "pid": "0"}) == "ROLLBACK PREPARED 'g';"
    assert diagnosis.fix_for({"gid": "", "pid": "7"}) == "kill 7"
