"""The promtool examples of the backup alerts: missing, short retention, shrunk, unverified,
failed verification and a migration without a fresh backup, new installations included."""

from __future__ import annotations

from pg_runbook_exporter.mixin.rulebook import Book, const

DAY = 86400.0


def backups(b: Book) -> None:
    at = 4200.0  # 70 minutes: past every `for` of the group, within b.ages' 80 samples
    newest, files = "pgrb_backup_newest_timestamp_seconds", "pgrb_backup_full_files"
    max_age = b.setting("backup_max_age_seconds")
    b.add("PostgresBackupMissing", "last night's backup missing",
          {**b.ages(newest, max_age + 600, at), files: const(30, 120)}, "70m",
          b.fired("warning", max_age + 600))  # fmt: skip
    b.add("PostgresBackupMissing", "newest just within the limit",
          {**b.ages(newest, max_age, at), files: const(30, 120)}, "70m")  # fmt: skip
    b.add("PostgresBackupMissing", "no backup at all", {files: const(0, 120)}, "70m",
          b.fired("warning", 0))  # fmt: skip

    days = b.setting("backup_retention_seconds") // DAY
    missing, oldest = "pgrb_backup_retention_days_missing", "pgrb_backup_oldest_timestamp_seconds"
    for name, gaps, oldest_age, fires in (
        ("a day missing", 1, days * DAY + 2 * 3600, (b.fired("warning", 1),)),
        ("new installation, days before its first backup", days - 5, 5 * DAY, ()),
        ("every day kept", 0, days * DAY + 2 * 3600, ()),
    ):
        b.add("PostgresBackupRetentionShort", name,
              {missing: const(gaps, 120), **b.ages(oldest, oldest_age, at)}, "70m",
              *fires)  # fmt: skip

    shrunk = "pgrb_backup_newest_shrunk"
    b.add("PostgresBackupShrunk", "shrunk", {shrunk: const(1, 20)}, "10m", b.fired("warning", 1))
    b.add("PostgresBackupShrunk", "as large as before", {shrunk: const(0, 20)}, "10m")

    limit = b.setting("backup_verification_max_age_seconds")
    passed = "pgrb_backup_verification_last_passed_timestamp_seconds"
    for name, passed_age, oldest_age, fires in (
        ("last pass too long ago", limit + DAY, 30 * DAY, (b.fired("warning", limit + DAY),)),
        ("passed within the limit", limit - DAY, 30 * DAY, ()),
        ("never verified, old backups", None, 20 * DAY, (b.fired("warning", 20 * DAY),)),
        ("new installation, never verified yet", None, 3 * DAY, ()),
    ):
        series = b.ages(oldest, oldest_age, at)
        if passed_age is not None:
            series.update(b.ages(passed, passed_age, at))
        b.add("PostgresBackupNotVerified", name, series, "70m", *fires)

    result = "pgrb_backup_verification_passed"
    b.add("PostgresBackupVerificationFailed", "failed", {result: const(0, 10)}, "5m",
          b.fired("warning", 0))  # fmt: skip
    b.add("PostgresBackupVerificationFailed", "passed", {result: const(1, 10)}, "5m")

    gap = b.setting("backup_before_migration_seconds")
    started = "pgrb_prisma_migration_last_start_timestamp_seconds"
    for name, start_age, backup_gap, fires in (
        ("started an hour past the limit", 600.0, gap + 3600, (b.fired("warning", gap + 3600),)),
        ("backup taken within the limit", 600.0, gap - 3600, ()),
        ("an old migration", gap + 600, gap + 3600, ()),
    ):
        series = {**b.ages(started, start_age, at), **b.ages(newest, start_age + backup_gap, at)}
        b.add("PrismaMigrationWithoutBackup", name, series, "70m", *fires)
