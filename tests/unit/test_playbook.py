"""playbook.py: alerts.yaml's diagnoses, vetted like checks, and their fixes filled and quoted."""

from __future__ import annotations

from pathlib import Path

import pytest

from pg_runbook_exporter import playbook
from pg_runbook_exporter.errors import ConfigError
from pg_runbook_exporter.mixin.alertrules import rules
from pg_runbook_exporter.playbook import Diagnosis, Fix

# groups whose alerts are about what the database holds, and the alerts of others that are
DATABASE_GROUPS = {"connections", "maintenance", "wal", "integrity"}
ALSO = {"PgRunbookRoleLacksPgMonitor"}


def _file(tmp_path: Path, diagnosis: str) -> Path:
    path = tmp_path / "alerts.yaml"
    path.write_text(f"alerts:\n  - alert: PostgresExample\n    diagnosis:\n{diagnosis}")
    return path


def test_every_database_alert_has_a_diagnosis_and_no_other_does() -> None:
    found = playbook.load()
    database = {r.name for r in rules() if r.group in DATABASE_GROUPS} | ALSO
    assert set(found) == database
    assert "PgRunbookExporterDown" not in found and "PgRunbookExporterAbsent" not in found


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
