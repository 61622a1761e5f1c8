"""Verification records: written atomically beside the backup, read back exactly, bad ones named."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pg_runbook_exporter.backup.record import (
    Outcome,
    RecordError,
    VerificationRecord,
    read_record,
    record_path,
    write_record,
)

RECORD = VerificationRecord(
    backup="backup_20261201_020000.sql.gz",
    backup_bytes=12345,
    verified_at=1796180400.5,
    duration_seconds=3.25,
    outcome=Outcome.PASSED,
    format="gzip",
    dumped_from="17.10",
    dumped_by="18.6",
    server_version="18.6",
    server_choice="the major of the pg_dump that wrote it",
    client_version="18.6",
    tables={"users": 200, "id_mappings": 203},
    checks={"id_mappings_orphaned": 3},
    tolerated={"grant": 4},
)


def test_a_record_round_trips_beside_its_backup(tmp_path: Path) -> None:
    backup = tmp_path / RECORD.backup
    path = record_path(backup)
    assert path == tmp_path / "backup_20261201_020000.sql.gz.verification.json"
    write_record(RECORD, path)
    assert read_record(path) == RECORD
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert record_path(backup, tmp_path / "state") == tmp_path / "state" / path.name


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not JSON"),
        ('{"record_format": 2}', "not a verification record of format 1"),
        (RECORD.to_json().replace('"passed",', '"fine",'), "not a verification record"),
        (RECORD.to_json().replace('"users": 200', '"users": "many"'), "tables: expected"),
    ],
)
def test_damaged_records_are_refused_with_the_reason(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "x.verification.json"
    path.write_text(text)
    with pytest.raises(RecordError, match=problem):
        read_record(path)
