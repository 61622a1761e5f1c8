"""The backups directory read as the runbook's *Automated Backups* promise it: one full dump a day.

A scan lists the files whose names match the full-backup pattern, takes each one's time from its
name (in the configured time zone) or else its mtime, sniffs its header, and leaves out files
still being written. The summaries are the columns of the ``backup_files`` and
``backup_verification`` checks; reading never changes anything in the directory.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from pg_runbook_exporter.backup.dumpfile import read_header
from pg_runbook_exporter.backup.record import RECORD_SUFFIX, RecordError, read_record

DEFAULT_PATTERN = r"^backup_(?P<time>\d{8}_\d{6})\.(?:sql|sql\.gz|dump)$"
NAME_TIME_FORMAT = "%Y%m%d_%H%M%S"
DAY_SECONDS = 86400.0

Value = float | None


@dataclass(frozen=True)
class BackupFile:
    """One full backup: its name, its time (from the name, else the mtime) and size."""

    name: str
    time: float
    size: int
    time_from_name: bool


@dataclass(frozen=True)
class Scan:
    """What the directory holds now; ``full`` is oldest first."""

    full: tuple[BackupFile, ...]
    not_dumps: int
    in_progress: int


def name_time(name: str, pattern: re.Pattern[str], zone: dt.tzinfo) -> float | None:
    """The time written in a backup's name, read in ``zone``; None when it names none."""
    match = pattern.match(name)
    if match is None or "time" not in pattern.groupindex or match.group("time") is None:
        return None
    try:
        naive = dt.datetime.strptime(match.group("time"), NAME_TIME_FORMAT)
    except ValueError:
        return None
    return naive.replace(tzinfo=zone).timestamp()


def scan(
    directory: Path,
    pattern: re.Pattern[str],
    zone: dt.tzinfo,
    *,
    now: float,
    in_progress_seconds: float,
) -> Scan:
    """Read ``directory``; OSError when the directory itself cannot be listed."""
    full: list[BackupFile] = []
    not_dumps = in_progress = 0
    with os.scandir(directory) as entries:
        names = [(entry.name, entry) for entry in entries if pattern.match(entry.name)]
    for name, entry in sorted(names):
        try:
            info = entry.stat()
        except OSError:
            not_dumps += 1
            continue
        if not stat.S_ISREG(info.st_mode):
            not_dumps += 1
            continue
        if now - info.st_mtime < in_progress_seconds:
            in_progress += 1  # pg_dump still writes it: neither a backup nor garbage yet
            continue
        try:
            header = read_header(Path(entry.path))
        except OSError:
            header = None
        if header is None:
            not_dumps += 1
            continue
        from_name = name_time(name, pattern, zone)
        full.append(
            BackupFile(
                name=name,
                time=from_name if from_name is not None else info.st_mtime,
                size=info.st_size,
                time_from_name=from_name is not None,
            )
        )
    full.sort(key=lambda f: (f.time, f.name))
    return Scan(full=tuple(full), not_dumps=not_dumps, in_progress=in_progress)


def summarize(
    found: Scan, *, now: float, zone: dt.tzinfo, retention_days: int, shrink_ratio: float
) -> dict[str, Value]:
    """The ``backup_files`` check's columns (None: no sample)."""
    full = found.full
    newest = full[-1] if full else None
    previous = full[-2] if len(full) > 1 else None
    window_start = now - retention_days * DAY_SECONDS
    return {
        "backup_full_files": float(len(full)),
        "backup_newest_timestamp_seconds": newest.time if newest else None,
        "backup_newest_size_bytes": float(newest.size) if newest else None,
        "backup_previous_size_bytes": float(previous.size) if previous else None,
        "backup_newest_shrunk": (
            float(newest.size < shrink_ratio * previous.size) if newest and previous else None
        ),
        "backup_oldest_timestamp_seconds": full[0].time if full else None,
        "backup_full_files_within_retention": float(sum(f.time >= window_start for f in full)),
        "backup_retention_days_missing": float(
            missing_days(full, now=now, zone=zone, days=retention_days)
        ),
        "backup_files_not_dump": float(found.not_dumps),
        "backup_files_in_progress": float(found.in_progress),
    }


def missing_days(full: tuple[BackupFile, ...], *, now: float, zone: dt.tzinfo, days: int) -> int:
    """Completed days of the retention window (yesterday and the ``days - 1`` before it, in
    ``zone``) without a full backup. Today is left out: its backup may still be due."""
    today = dt.datetime.fromtimestamp(now, zone).date()
    wanted = {today - dt.timedelta(days=n) for n in range(1, days)}
    have = {dt.datetime.fromtimestamp(f.time, zone).date() for f in full}
    return len(wanted - have)


@dataclass(frozen=True)
class Verifications:
    """The verification records of a directory: the newest, the newest passed, the bad ones."""

    columns: dict[str, Value]
    counts: dict[str, int]


def verifications(directory: Path) -> Verifications:
    """The ``backup_verification`` columns and the newest record's counts; OSError as scan()."""
    records = []
    invalid = 0
    with os.scandir(directory) as entries:
        paths = [Path(e.path) for e in entries if e.name.endswith(RECORD_SUFFIX)]
    for path in paths:
        try:
            records.append(read_record(path))
        except RecordError:
            invalid += 1
    records.sort(key=lambda r: r.verified_at)
    last = records[-1] if records else None
    passed = [r for r in records if r.passed]
    columns: dict[str, Value] = {
        "backup_verification_timestamp_seconds": last.verified_at if last else None,
        "backup_verification_passed": float(last.passed) if last else None,
        "backup_verification_last_passed_timestamp_seconds": (
            passed[-1].verified_at if passed else None
        ),
        "backup_verification_duration_seconds": last.duration_seconds if last else None,
        "backup_verification_server_version_num": (
            version_num(last.server_version) if last else None
        ),
        "backup_verification_tolerated_errors": (
            float(sum(last.tolerated.values())) if last else None
        ),
        "backup_verification_records_invalid": float(invalid),
    }
    counts: Mapping[str, int] = {**last.tables, **last.checks} if last else {}
    return Verifications(columns=columns, counts=dict(counts))


def version_num(version: str | None) -> float | None:
    """``180006`` of ``18.6`` (server_version_num's form)."""
    match = re.match(r"^(\d+)\.(\d+)", version or "")
    return float(int(match.group(1)) * 10000 + int(match.group(2))) if match else None


def zone_named(name: str) -> dt.tzinfo:
    """A time zone by IANA name (``UTC``, ``Europe/Berlin``); ValueError names a bad one."""
    if name.upper() == "UTC":
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc
