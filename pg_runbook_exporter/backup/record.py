"""The verification record: what ``verify-backup`` found, as a small JSON file the exporter reads.

It holds counts and versions only, never a row of customer data: the restored copy's table row
counts, the integrity checks' values, which server it was restored into, and why it failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

RECORD_SUFFIX = ".verification.json"
RECORD_FORMAT = 1


class Outcome(StrEnum):
    """How a verification ended; every value but ``passed`` is a failure."""

    PASSED = "passed"
    NOT_A_DUMP = "not_a_dump"
    TRUNCATED = "truncated"
    UNREADABLE = "unreadable"
    UNSUPPORTED_VERSION = "unsupported_version"
    NO_SPACE = "no_space"
    RESTORE_ERRORS = "restore_errors"
    NO_PORTAL_TABLES = "no_portal_tables"
    COUNTS_DIFFER = "counts_differ"
    LIVE_UNAVAILABLE = "live_unavailable"
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"


class RecordError(ValueError):
    """A record file that cannot be read or is not a verification record."""


@dataclass(frozen=True)
class VerificationRecord:
    """One verification of one backup file."""

    backup: str
    backup_bytes: int
    verified_at: float
    duration_seconds: float
    outcome: Outcome
    message: str = ""
    format: str | None = None
    dumped_from: str | None = None
    dumped_by: str | None = None
    server_version: str | None = None
    server_choice: str | None = None
    client_version: str | None = None
    tables: dict[str, int] = field(default_factory=dict)
    checks: dict[str, int] = field(default_factory=dict)
    live_tables: dict[str, int] = field(default_factory=dict)
    tolerated: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASSED

    def to_json(self) -> str:
        data: dict[str, Any] = {"record_format": RECORD_FORMAT, "passed": self.passed}
        data.update(asdict(self))
        data["outcome"] = str(self.outcome)
        data["verified_at_utc"] = datetime.fromtimestamp(self.verified_at, UTC).isoformat()
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> VerificationRecord:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordError(f"not JSON: {exc.msg} at line {exc.lineno}") from None
        if not isinstance(data, dict) or data.get("record_format") != RECORD_FORMAT:
            raise RecordError(f"not a verification record of format {RECORD_FORMAT}")
        values: dict[str, Any] = {}
        for item in fields(cls):
            if item.name in data:
                values[item.name] = data[item.name]
        try:
            values["outcome"] = Outcome(str(values.get("outcome")))
            record = cls(**values)
        except (TypeError, ValueError) as exc:
            raise RecordError(f"not a verification record: {exc}") from None
        _check_types(record)
        return record


def _check_types(record: VerificationRecord) -> None:
    numbers = ("backup_bytes", "verified_at", "duration_seconds")
    for name in numbers:
        value = getattr(record, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecordError(f"{name}: expected a number, got {value!r}")
    for name in ("tables", "checks", "live_tables", "tolerated"):
        mapping = getattr(record, name)
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in mapping.items()
        ):
            raise RecordError(f"{name}: expected names mapped to whole numbers")


def record_path(backup: Path, state_dir: Path | None = None) -> Path:
    """Where the record of ``backup`` goes: beside it, or in ``state_dir``."""
    return (state_dir or backup.parent) / f"{backup.name}{RECORD_SUFFIX}"


def write_record(record: VerificationRecord, path: Path) -> None:
    """Write atomically (a reader never sees half a record), readable by the exporter's user."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(record.to_json())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_record(path: Path) -> VerificationRecord:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return VerificationRecord.from_json(text)
