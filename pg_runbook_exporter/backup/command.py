"""The ``verify-backup`` command's glue: options in, a record and a summary out, an exit status.

Exit status: 0 passed, 1 failed (a record says why), 2 bad options or settings, 130 interrupted
(no record: an interrupted verification says nothing about the backup).
"""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path

import click

from pg_runbook_exporter.backup.record import VerificationRecord, record_path, write_record
from pg_runbook_exporter.backup.verify import VerifyOptions, portal_checks, verify
from pg_runbook_exporter.config import load_config
from pg_runbook_exporter.database_url import DatabaseTarget, parse_database_url
from pg_runbook_exporter.errors import ConfigError, DatabaseUrlError
from pg_runbook_exporter.logs import setup_logging
from pg_runbook_exporter.validation import parse_duration

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


def _fail(message: str) -> int:
    click.echo(f"error: {message}", err=True)
    return EXIT_CONFIG


def _live_target(url: str | None, password_file: Path | None) -> DatabaseTarget | None:
    if not url:
        return None
    password = None
    if password_file is not None:
        password = password_file.read_text(encoding="utf-8").strip()
    return parse_database_url(url, password=password)


def run(
    *,
    backup: Path,
    config: str | None,
    work_dir: Path | None,
    state_dir: Path | None,
    bindir: Path | None,
    timeout: str,
    database_url: str | None,
    database_password_file: Path | None,
    log_level: str,
) -> int:
    """Verify ``backup`` and write its record; the exit status."""
    try:
        loaded = load_config(Path(config) if config else None)
        portal_checks(loaded)
        seconds = parse_duration(timeout)
        live = _live_target(database_url, database_password_file)
    except ConfigError as exc:
        return _fail("\n".join(exc.problems))
    except (ValueError, DatabaseUrlError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{database_password_file}: cannot read the password file: {exc.strerror}")
    setup_logging(level=log_level, fmt="logfmt", secrets=live.secrets if live else ())
    options = VerifyOptions(
        backup=backup,
        config=loaded,
        work_dir=work_dir or Path(tempfile.gettempdir()),
        timeout=seconds,
        bindir=bindir,
        live=live,
    )
    # cron and systemd stop a job with SIGTERM: cleaned up like Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        record = verify(options)
    except KeyboardInterrupt:
        click.echo("interrupted: the throwaway server and its directory are removed", err=True)
        return EXIT_INTERRUPTED
    except ValueError as exc:  # a check of queries.yaml that cannot run on the copy
        return _fail(str(exc))
    path = record_path(backup, state_dir)
    try:
        write_record(record, path)
    except OSError as exc:
        return _fail(f"{path}: cannot write the record: {exc.strerror} (see --backup.state-dir)")
    click.echo(summary(record, path))
    return EXIT_PASSED if record.passed else EXIT_FAILED


def summary(record: VerificationRecord, path: Path) -> str:
    """What a person reading cron mail needs: the verdict, the counts, where the record is."""
    verdict = "passed" if record.passed else f"FAILED ({record.outcome})"
    lines = [f"{record.backup}: {verdict} in {record.duration_seconds:.1f}s"]
    if record.message:
        lines.append(f"  why:       {record.message}")
    if record.format:
        source = f"dumped from PostgreSQL {record.dumped_from or '?'}"
        lines.append(f"  backup:    {record.format}, {source} by pg_dump {record.dumped_by or '?'}")
    if record.server_version:
        lines.append(
            f"  restored:  into PostgreSQL {record.server_version} ({record.server_choice});"
            f" psql and pg_restore {record.client_version}"
        )
    for title, values in (
        ("rows", record.tables),
        ("checks", record.checks),
        ("live rows", record.live_tables),
        ("tolerated", record.tolerated),
    ):
        if values:
            shown = ", ".join(f"{name} {value}" for name, value in values.items())
            lines.append(f"  {title + ':':<10} {shown}")
    lines.append(f"  record:    {path}")
    return "\n".join(lines)
