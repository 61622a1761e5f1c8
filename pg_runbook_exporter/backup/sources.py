"""Checks that read files, not SQL: the backups directory and the verification records.

A check of queries.yaml with ``source: <name>`` instead of ``sql`` gets its result from the
function of that name here, in the same shape a query gives (columns and rows), so its metrics,
labels, staleness and self-metrics work as for every other check. Each source reads with a
deadline on a thread of its own: a hung network mount fails the check by timeout, and while an
earlier read still hangs the next run fails at once instead of piling up threads.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pg_runbook_exporter.backup.files import (
    DEFAULT_PATTERN,
    scan,
    summarize,
    verifications,
    zone_named,
)
from pg_runbook_exporter.errors import CheckError, FailureReason
from pg_runbook_exporter.session import QueryResult

FILES_COLUMNS = (
    "backup_full_files",
    "backup_newest_timestamp_seconds",
    "backup_newest_size_bytes",
    "backup_previous_size_bytes",
    "backup_newest_shrunk",
    "backup_oldest_timestamp_seconds",
    "backup_full_files_within_retention",
    "backup_retention_days_missing",
    "backup_files_not_dump",
    "backup_files_in_progress",
)
VERIFICATION_COLUMNS = (
    "backup_verification_timestamp_seconds",
    "backup_verification_passed",
    "backup_verification_last_passed_timestamp_seconds",
    "backup_verification_duration_seconds",
    "backup_verification_server_version_num",
    "backup_verification_tolerated_errors",
    "backup_verification_records_invalid",
)
COUNTS_COLUMNS = ("item", "backup_verification_value")

# source name → the columns it returns (config validates a check's labels and metrics with it)
SOURCES: Mapping[str, tuple[str, ...]] = {
    "backup_files": FILES_COLUMNS,
    "backup_verification": VERIFICATION_COLUMNS,
    "backup_verification_counts": COUNTS_COLUMNS,
}


@dataclass(frozen=True)
class BackupOptions:
    """Where the backups are and how their names read (``--backup.*``)."""

    directory: Path | None = None
    pattern: str = DEFAULT_PATTERN
    time_zone: str = "UTC"
    state_dir: Path | None = None  # the verification records; default: the backups directory

    def compiled(self) -> tuple[re.Pattern[str], dt.tzinfo]:
        """The pattern and zone; ValueError names what is wrong with either."""
        try:
            pattern = re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"--backup.pattern: not a regular expression: {exc}") from None
        return pattern, zone_named(self.time_zone)


Settings = Mapping[str, Any]


def _files(options: BackupOptions, settings: Settings, now: float) -> QueryResult:
    assert options.directory is not None
    pattern, zone = options.compiled()
    found = scan(
        options.directory, pattern, zone,
        now=now, in_progress_seconds=float(settings["backup_in_progress_seconds"]),
    )  # fmt: skip
    columns = summarize(
        found, now=now, zone=zone,
        retention_days=int(settings["backup_retention_seconds"]) // 86400,
        shrink_ratio=float(settings["backup_shrink_ratio"]),
    )  # fmt: skip
    return QueryResult(FILES_COLUMNS, [tuple(columns[c] for c in FILES_COLUMNS)], False)


def _records_dir(options: BackupOptions) -> Path:
    directory = options.state_dir or options.directory
    assert directory is not None
    return directory


def _verification(options: BackupOptions, settings: Settings, now: float) -> QueryResult:
    columns = verifications(_records_dir(options)).columns
    return QueryResult(
        VERIFICATION_COLUMNS, [tuple(columns[c] for c in VERIFICATION_COLUMNS)], False
    )


def _counts(options: BackupOptions, settings: Settings, now: float) -> QueryResult:
    counts = verifications(_records_dir(options)).counts
    return QueryResult(COUNTS_COLUMNS, sorted(counts.items()), False)


_READERS: Mapping[str, Callable[[BackupOptions, Settings, float], QueryResult]] = {
    "backup_files": _files,
    "backup_verification": _verification,
    "backup_verification_counts": _counts,
}


@dataclass
class FileReader:
    """Runs sources with a deadline, at most one hung read per source."""

    options: BackupOptions
    settings: Settings
    clock: Callable[[], float] = time.time
    _busy: dict[str, threading.Thread] = field(default_factory=dict)

    @property
    def configured(self) -> bool:
        return self.options.directory is not None

    def read(self, source: str, *, timeout: float, max_rows: int) -> QueryResult:
        """The source's result; CheckError(timeout | permission | other) with the reason."""
        running = self._busy.get(source)
        if running is not None and running.is_alive():
            raise CheckError(FailureReason.TIMEOUT, "the previous read has not returned yet")
        outcome: list[QueryResult | BaseException] = []

        def work() -> None:
            try:
                outcome.append(_READERS[source](self.options, self.settings, self.clock()))
            except BaseException as exc:  # handed to the caller below
                outcome.append(exc)

        thread = threading.Thread(target=work, name=f"source-{source}", daemon=True)
        self._busy[source] = thread
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise CheckError(FailureReason.TIMEOUT, f"reading files took longer than {timeout:g}s")
        result = outcome[0]
        if isinstance(result, PermissionError):
            raise CheckError(FailureReason.PERMISSION, _describe(result))
        if isinstance(result, OSError):
            raise CheckError(FailureReason.OTHER, _describe(result))
        if isinstance(result, BaseException):
            raise result
        if len(result.rows) > max_rows:
            return QueryResult(result.columns, result.rows[:max_rows], True)
        return result


def _describe(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"cannot read {where}{exc.strerror or exc}"
