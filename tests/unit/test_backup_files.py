"""The backups directory: names, times, sizes, files being written and files that are no dumps."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

from pg_runbook_exporter.backup.files import (
    DEFAULT_PATTERN,
    missing_days,
    name_time,
    scan,
    summarize,
    zone_named,
)

PATTERN = re.compile(DEFAULT_PATTERN)
NOW = dt.datetime(2026, 12, 10, 9, 0, tzinfo=dt.UTC).timestamp()
DUMP = b"--\n-- PostgreSQL database dump\n--\n-- Dumped by pg_dump version 18.6\n"


def put(directory: Path, name: str, body: bytes, *, age: float) -> Path:
    path = directory / name
    path.write_bytes(body)
    os.utime(path, (NOW - age, NOW - age))
    return path


def test_the_default_pattern_matches_full_backups_only() -> None:
    matched = [
        n
        for n in (
            "backup_20261201_020000.sql",
            "backup_20261201_020000.sql.gz",
            "backup_20261201_020000.dump",
            "user_data_backup.sql",
            "pre_migration_backup.sql",
            "backup_20261201_020000.sql.gz.verification.json",
            "backup_2026120_020000.sql",
        )
        if PATTERN.match(n)
    ]
    assert matched == [
        "backup_20261201_020000.sql",
        "backup_20261201_020000.sql.gz",
        "backup_20261201_020000.dump",
    ]


def test_name_times_are_read_in_the_configured_zone() -> None:
    name = "backup_20261201_020000.sql"
    assert (
        name_time(name, PATTERN, dt.UTC) == dt.datetime(2026, 12, 1, 2, tzinfo=dt.UTC).timestamp()
    )
    berlin = zone_named("Europe/Berlin")
    assert (
        name_time(name, PATTERN, berlin) == dt.datetime(2026, 12, 1, 1, tzinfo=dt.UTC).timestamp()
    )
    assert name_time("backup_20261399_020000.sql", PATTERN, dt.UTC) is None


def test_a_scan_counts_garbage_and_files_being_written_and_falls_back_to_mtime(
    tmp_path: Path,
) -> None:
    put(tmp_path, "backup_20261208_020000.sql", DUMP + b"x" * 1000, age=2 * 86400)
    put(tmp_path, "backup_20261209_020000.sql", DUMP + b"x" * 300, age=86400)
    put(tmp_path, "backup_20261210_020000.sql", os.urandom(500), age=7 * 3600)
    put(tmp_path, "backup_20261210_083000.sql", DUMP, age=10)  # still being written
    put(tmp_path, "user_data_backup.sql", DUMP, age=3600)
    found = scan(
        tmp_path, re.compile(r"^backup_.*\.sql$"), dt.UTC, now=NOW, in_progress_seconds=300
    )
    assert [(f.name, f.size, f.time_from_name) for f in found.full] == [
        ("backup_20261208_020000.sql", len(DUMP) + 1000, False),
        ("backup_20261209_020000.sql", len(DUMP) + 300, False),
    ]
    assert found.full[-1].time == NOW - 86400  # no time group in this pattern: the mtime
    assert (found.not_dumps, found.in_progress) == (1, 1)
    columns = summarize(found, now=NOW, zone=dt.UTC, retention_days=3, shrink_ratio=0.5)
    assert columns == {
        "backup_full_files": 2.0,
        "backup_newest_timestamp_seconds": NOW - 86400,
        "backup_newest_size_bytes": float(len(DUMP) + 300),
        "backup_previous_size_bytes": float(len(DUMP) + 1000),
        "backup_newest_shrunk": 1.0,
        "backup_oldest_timestamp_seconds": NOW - 2 * 86400,
        "backup_full_files_within_retention": 2.0,
        "backup_retention_days_missing": 0.0,
        "backup_files_not_dump": 1.0,
        "backup_files_in_progress": 1.0,
    }


def test_missing_days_count_completed_days_only(tmp_path: Path) -> None:
    put(tmp_path, "backup_20261209_020000.sql", DUMP, age=86400)
    put(tmp_path, "backup_20261207_020000.sql", DUMP, age=3 * 86400)
    found = scan(tmp_path, PATTERN, dt.UTC, now=NOW, in_progress_seconds=300)
    # Completed days of a 4-day window: 12-09 (kept), 12-08 (missing), 12-07 (kept).
    assert missing_days(found.full, now=NOW, zone=dt.UTC, days=4) == 1
    assert missing_days(found.full, now=NOW, zone=dt.UTC, days=6) == 3


def test_an_empty_directory_has_no_newest_backup(tmp_path: Path) -> None:
    found = scan(tmp_path, PATTERN, dt.UTC, now=NOW, in_progress_seconds=300)
    columns = summarize(found, now=NOW, zone=dt.UTC, retention_days=30, shrink_ratio=0.5)
    assert columns["backup_full_files"] == 0.0
    assert columns["backup_newest_timestamp_seconds"] is None
    assert columns["backup_retention_days_missing"] == 29.0
