"""The backup checks on a directory of real dumps, with file times set here, and on records."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pg_runbook_exporter.backup.record import read_record, record_path, write_record
from pg_runbook_exporter.backup.sources import BackupOptions
from pg_runbook_exporter.backup.verify import VerifyOptions, verify
from pg_runbook_exporter.config import Config, load_config
from pg_runbook_exporter.pgserver.throwaway import free_port
from tests.conftest import PortalDb, Server, Servers
from tests.support.collect import collect_once, configured
from tests.support.dumps import (
    SEEDED_CHECKS,
    SEEDED_TABLES,
    pg_dump,
    private_work_dir,
    seeded_portal,
    write_dumps,
)

RETENTION_DAYS = 5
BACKUP_CHECKS = ["backup_files", "backup_verification", "backup_verification_counts"]


def at_two(days_ago: int) -> dt.datetime:
    """02:00 UTC, ``days_ago`` days before today: the runbook's backup time."""
    today = dt.datetime.now(dt.UTC).date()
    return dt.datetime.combine(today - dt.timedelta(days=days_ago), dt.time(2), tzinfo=dt.UTC)


def stamp(when: dt.datetime) -> str:
    return when.strftime("%Y%m%d_%H%M%S")


def finished(path: Path, when: dt.datetime, minutes: int = 20) -> Path:
    """The file's mtime: ``minutes`` after its name's time, as pg_dump would leave it."""
    mtime = when.timestamp() + minutes * 60
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def work_dir() -> Iterator[Path]:
    with private_work_dir() as path:
        yield path


@pytest.fixture(scope="module")
def seeded(pg_servers: Servers, pg: Server) -> Iterator[PortalDb]:
    with seeded_portal(pg_servers, pg) as db:
        yield db


@pytest.fixture
def backups(seeded: PortalDb, tmp_path: Path) -> dict[str, Path]:
    """Full backups 1, 2, 4 and 10 days ago (day 3 missing), a partial backup, one being
    written, and one that is not a dump."""
    made = write_dumps(seeded.dsn, tmp_path, stamp=stamp(at_two(1)))
    files = {"newest": finished(made.custom, at_two(1))}
    made.plain.rename(tmp_path / f"backup_{stamp(at_two(2))}.sql")
    files["previous"] = finished(tmp_path / f"backup_{stamp(at_two(2))}.sql", at_two(2))
    made.gzip.rename(tmp_path / f"backup_{stamp(at_two(4))}.sql.gz")
    files["day4"] = finished(tmp_path / f"backup_{stamp(at_two(4))}.sql.gz", at_two(4))
    oldest = tmp_path / f"backup_{stamp(at_two(10))}.sql"
    shutil.copy(files["previous"], oldest)
    files["oldest"] = finished(oldest, at_two(10))
    partial = pg_dump(seeded.dsn, tmp_path / "user_data_backup.sql", "-t", "users")
    files["partial"] = finished(partial, at_two(1), minutes=30)
    writing = tmp_path / f"backup_{stamp(dt.datetime.now(dt.UTC))}.sql"
    writing.write_bytes(files["previous"].read_bytes()[:5000])  # mtime: now
    files["writing"] = writing
    garbage = tmp_path / f"backup_{stamp(at_two(3))}.dump"
    garbage.write_bytes(os.urandom(2048))
    files["garbage"] = finished(garbage, at_two(3))
    return files


def backup_config() -> Config:
    return configured(
        only=BACKUP_CHECKS, settings={"backup_retention_seconds": RETENTION_DAYS * 86400}
    )


def test_ages_sizes_and_counts_of_the_backups_are_exported_exactly(
    seeded: PortalDb, backups: dict[str, Path]
) -> None:
    directory = backups["newest"].parent
    scrape = collect_once(
        seeded.monitor_dsn, backup_config(), backups=BackupOptions(directory=directory)
    )
    size = {name: float(path.stat().st_size) for name, path in backups.items()}
    assert scrape.value("pgrb_check_success", check="backup_files") == 1
    assert scrape.value("pgrb_backup_full_files") == 4  # not the partial, writing or garbage
    assert scrape.value("pgrb_backup_newest_timestamp_seconds") == at_two(1).timestamp()
    assert scrape.value("pgrb_backup_newest_size_bytes") == size["newest"]
    assert scrape.value("pgrb_backup_previous_size_bytes") == size["previous"]
    # The custom archive is compressed: less than half the plain SQL of the night before.
    assert size["newest"] < 0.5 * size["previous"]
    assert scrape.value("pgrb_backup_newest_shrunk") == 1
    assert scrape.value("pgrb_backup_oldest_timestamp_seconds") == at_two(10).timestamp()
    assert scrape.value("pgrb_backup_full_files_within_retention") == 3
    assert scrape.value("pgrb_backup_retention_days_missing") == 1  # day 3: garbage only
    assert scrape.value("pgrb_backup_files_not_dump") == 1
    assert scrape.value("pgrb_backup_files_in_progress") == 1
    assert scrape.value("pgrb_threshold_backup_retention_seconds") == RETENTION_DAYS * 86400


def test_the_verification_result_is_served(
    seeded: PortalDb, backups: dict[str, Path], work_dir: Path
) -> None:
    config = load_config()
    directory = backups["newest"].parent
    state = directory / "state"
    options = BackupOptions(directory=directory, state_dir=state)
    passed = verify(VerifyOptions(backup=backups["newest"], config=config, work_dir=work_dir,
                                  timeout=300))  # fmt: skip
    assert passed.passed, passed.message
    write_record(passed, record_path(backups["newest"], state))
    scrape = collect_once(seeded.monitor_dsn, backup_config(), backups=options)
    assert scrape.value("pgrb_backup_verification_passed") == 1
    assert scrape.value("pgrb_backup_verification_timestamp_seconds") == passed.verified_at
    assert scrape.value("pgrb_backup_verification_last_passed_timestamp_seconds") == (
        passed.verified_at
    )
    major, minor = (int(x) for x in (passed.server_version or "").split("."))
    assert scrape.value("pgrb_backup_verification_server_version_num") == major * 10000 + minor
    assert scrape.series("pgrb_backup_verification_value") == {
        frozenset({("item", item)}): float(count)
        for item, count in {**SEEDED_TABLES, **SEEDED_CHECKS}.items()
    }

    truncated = directory / f"backup_{stamp(at_two(0))}.sql.gz"
    truncated.write_bytes(backups["day4"].read_bytes()[:1000])
    failed = verify(VerifyOptions(backup=truncated, config=config, work_dir=work_dir,
                                  timeout=300))  # fmt: skip
    write_record(failed, record_path(truncated, state))
    (state / "junk.verification.json").write_text("{")
    scrape = collect_once(seeded.monitor_dsn, backup_config(), backups=options)
    assert scrape.value("pgrb_backup_verification_passed") == 0
    assert scrape.value("pgrb_backup_verification_timestamp_seconds") == failed.verified_at
    assert scrape.value("pgrb_backup_verification_last_passed_timestamp_seconds") == (
        passed.verified_at
    )
    assert scrape.value("pgrb_backup_verification_records_invalid") == 1
    assert scrape.series("pgrb_backup_verification_value") == {}
    assert read_record(record_path(truncated, state)).outcome == "truncated"


def test_an_unreadable_directory_fails_the_check_with_its_reason(seeded: PortalDb) -> None:
    missing = Path(tempfile.gettempdir()) / f"pgrb-no-such-dir-{os.getpid()}-{time.time_ns()}"
    scrape = collect_once(
        seeded.monitor_dsn, backup_config(), backups=BackupOptions(directory=missing)
    )
    assert scrape.value("pgrb_check_success", check="backup_files") == 0
    assert scrape.value("pgrb_check_errors_total", check="backup_files", reason="other") == 1
    assert scrape.get("pgrb_backup_full_files") is None


def test_the_backup_checks_run_while_the_database_is_down(backups: dict[str, Path]) -> None:
    closed = f"postgresql://pgrb_exporter@127.0.0.1:{free_port()}/portal?connect_timeout=2"
    config = configured(only=["server", *BACKUP_CHECKS])
    scrape = collect_once(closed, config, backups=BackupOptions(directory=backups["newest"].parent))
    assert scrape.value("pgrb_up") == 0
    assert scrape.value("pgrb_check_success", check="server") == 0
    assert scrape.value("pgrb_check_success", check="backup_files") == 1
    assert scrape.value("pgrb_backup_full_files") == 4


def test_without_a_backup_directory_the_checks_are_skipped(seeded: PortalDb) -> None:
    scrape = collect_once(seeded.monitor_dsn, backup_config())
    for check in BACKUP_CHECKS:
        assert scrape.value("pgrb_check_skipped", check=check, reason="unconfigured") == 1


def test_the_newest_migration_start_is_exported_for_the_backup_rule(portal_db: PortalDb) -> None:
    started = at_two(0).timestamp() - 600
    portal_db.server.execute(
        "INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, finished_at,"
        " applied_steps_count) VALUES ('1', 'x', 'a', to_timestamp(%s) - interval '9 days',"
        " to_timestamp(%s) - interval '9 days', 1), ('2', 'y', 'b', to_timestamp(%s), NULL, 0)",
        (started, started, started),
        dbname=portal_db.name,
    )
    scrape = collect_once(portal_db.monitor_dsn, configured(only=["prisma_migrations"]))
    assert scrape.value("pgrb_prisma_migration_last_start_timestamp_seconds") == started
