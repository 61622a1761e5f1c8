"""The backups board: is last night's dump there, whole and restorable, and was a migration
preceded by one? Backups are read from the backup directory, not the database."""

from __future__ import annotations

from pg_runbook_exporter.mixin.dashpanels import (
    ANY,
    OK,
    WARN,
    Board,
    Mapping,
    Metrics,
    Panel,
    Query,
    Row,
    Step,
    ago,
    alert_colour,
    stat,
    table,
    timeseries,
)

BACKUPS = "pgrb-backups"
AUTOMATED = '"Backup Procedures" › "Automated Backups"'
VERIFICATION = '"Backup Procedures" › "Backup Verification"'


def backups_board(m: Metrics) -> Board:
    q, ts = Query, timeseries
    files = (
        stat("Newest full backup age", q(ago(m, "backup_newest_timestamp_seconds")), unit="s",
             steps=(OK, m.step(WARN, "backup_max_age_seconds")), width=6,
             alerts=("PostgresBackupMissing",), runbook=AUTOMATED,
             what="Time since the newest full backup in --backup.dir (its name's time, else its "
                  "mtime)."),
        stat("Days missing in the retention window",
             q(m.sel("backup_retention_days_missing")), unit="none", width=6,
             steps=(OK, Step(WARN, ANY)), alerts=("PostgresBackupRetentionShort",),
             runbook=AUTOMATED,
             what="Completed days of the retention window without a full backup (the alert waits "
                  "until the oldest backup is older than the window)."),
        stat("Oldest full backup kept", q(ago(m, "backup_oldest_timestamp_seconds")), unit="s",
             width=6, runbook=AUTOMATED, alerts=("PostgresBackupRetentionShort",),
             what="Age of the oldest full backup: about the retention once the installation is "
                  "older than it."),
        stat("Newest backup shrunk", q(m.sel("backup_newest_shrunk")), unit="none", width=6,
             alerts=("PostgresBackupShrunk",),
             mappings=(Mapping(0, "no", "green"),
                       Mapping(1, "shrunk", alert_colour("PostgresBackupShrunk"))),
             runbook=VERIFICATION,
             what="Is the newest full backup smaller than backup_shrink_ratio of the one before?"),
        ts("Newest and previous full backup size",
           (q(m.sel("backup_newest_size_bytes"), "newest"),
            q(m.sel("backup_previous_size_bytes"), "previous")), unit="bytes",
           alerts=("PostgresBackupShrunk",), runbook=AUTOMATED,
           what="File sizes of the newest full backup and the one before it."),
        ts("Backup files",
           (q(m.sel("backup_full_files_within_retention"), "full, within retention"),
            q(m.sel("backup_full_files"), "full"),
            q(m.sel("backup_files_in_progress"), "being written"),
            q(m.sel("backup_files_not_dump"), "not a dump")), unit="short", runbook=AUTOMATED,
           what="Full backups kept (in the retention window and in all), files still being "
                "written, and files named like a backup that are not pg_dump output."),
    )  # fmt: skip
    verification = (
        stat("Last verification", q(m.sel("backup_verification_passed")), unit="none", width=6,
             alerts=("PostgresBackupVerificationFailed",),
             mappings=(Mapping(1, "passed", "green"),
                       Mapping(0, "failed", alert_colour("PostgresBackupVerificationFailed"))),
             runbook=VERIFICATION,
             what="Did the newest verify-backup run pass? Its record and output say why not."),
        stat("Since the last passed verification",
             q(ago(m, "backup_verification_last_passed_timestamp_seconds")), unit="s", width=6,
             steps=(OK, m.step(WARN, "backup_verification_max_age_seconds")),
             alerts=("PostgresBackupNotVerified",), runbook=VERIFICATION,
             what="Time since a verify-backup run last passed."),
        stat("Restored into PostgreSQL", q(m.sel("backup_verification_server_version_num")),
             unit="none", width=6, runbook=VERIFICATION,
             what="server_version_num of the throwaway server the newest verification restored "
                  "into (the major of the pg_dump that wrote the backup where installed)."),
        stat("Verification took", q(m.sel("backup_verification_duration_seconds")), unit="s",
             width=6, runbook=VERIFICATION,
             what="Wall time of the newest verification: restore plus integrity checks."),
        table("Counted on the restored copy", (m.sel("backup_verification_value"),), ("value",),
              runbook=f'{VERIFICATION} › "Run basic integrity checks"', height=8,
              what="Rows of users and id_mappings and the integrity checks' values (orphaned and "
                   "duplicate mappings) on the newest verification's copy: compare with the live "
                   "integrity board."),
    )  # fmt: skip
    migrations = (
        ts("Newest migration started after the newest backup",
           (q(f"{m.sel('prisma_migration_last_start_timestamp_seconds')} - "
              f"{m.sel('backup_newest_timestamp_seconds')}", "migration − backup"),),
           unit="s", steps=(OK, m.step(WARN, "backup_before_migration_seconds")),
           alerts=("PrismaMigrationWithoutBackup",), width=24,
           runbook='"Migration Management" › "Migration Checklist" › "Create backup before '
                   'migration"',
           what="How long before the newest Prisma migration's start the newest full backup "
                "was taken (negative: a backup was taken after it).",
           empty="no Prisma migration has run"),
    )  # fmt: skip
    return Board(
        BACKUPS, "PostgreSQL runbook: backups",
        "Is last night's full backup there, is it whole, does it restore, and was the newest "
        "migration preceded by a backup?",
        (Row("Full backups", files), Row("Backup verification", verification),
         Row("Backups and migrations", migrations)),
    )  # fmt: skip


def _tile(title: str, query: str, step: Step, alert: str, *, what: str, runbook: str) -> Panel:
    """A tile of the health board's "Backups and data integrity" row, linking here."""
    return Panel(
        "stat", title, what, runbook, "s", (Query(query, instant=True),), width=4, height=4,
        steps=(OK, step), mirrors=(alert,), link=BACKUPS,
    )  # fmt: skip


def front_tiles(m: Metrics) -> tuple[Panel, ...]:
    return (
        _tile("Newest full backup", f"max({ago(m, 'backup_newest_timestamp_seconds')})",
              m.step(WARN, "backup_max_age_seconds"), "PostgresBackupMissing",
              what="Age of the newest full backup in the exporter's --backup.dir.",
              runbook=AUTOMATED),
        _tile("Last passed verification",
              f"max({ago(m, 'backup_verification_last_passed_timestamp_seconds')})",
              m.step(WARN, "backup_verification_max_age_seconds"), "PostgresBackupNotVerified",
              what="Time since a verify-backup run last restored a backup and passed.",
              runbook=VERIFICATION),
    )  # fmt: skip
