"""Command line: ``pg-runbook-exporter run | check | diagnose | demo | generate | verify-backup``.

Flags become typed, frozen option objects; logging is set up before anything that can log; the
work is ``app.py``'s. This is the one place that maps errors to exit statuses: an ``ExporterError``
prints its lines as ``error: …`` and exits 2 for configuration problems, 1 otherwise. Every flag
can also come from the environment (``PGRB_…``; the database URL also from the app's own
``DATABASE_URL``). ``demo`` and ``generate`` import their wings inside the command.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from pg_runbook_exporter import __version__, app
from pg_runbook_exporter.backup.files import DEFAULT_PATTERN
from pg_runbook_exporter.backup.sources import BackupOptions
from pg_runbook_exporter.config import load_config
from pg_runbook_exporter.diagnose import format_report, parse_labels
from pg_runbook_exporter.errors import (
    ConfigError,
    DatabaseUrlError,
    DiagnoseError,
    ExporterError,
    OptionError,
    WebConfigError,
)
from pg_runbook_exporter.logs import LogFormat, RedactingFilter, setup_logging
from pg_runbook_exporter.report import format_table, summary

EXIT_FAILED = 1
EXIT_CONFIG = 2
CONFIG_ERRORS = (ConfigError, WebConfigError, DatabaseUrlError, OptionError, DiagnoseError)
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class LogOptions:
    level: str = "info"
    format: LogFormat = "logfmt"


def exit_status(error: ExporterError) -> int:
    return EXIT_CONFIG if isinstance(error, CONFIG_ERRORS) else EXIT_FAILED


@contextmanager
def reported() -> Iterator[None]:
    """Turn an ``ExporterError`` into ``error:`` lines on stderr and its exit status."""
    try:
        yield
    except ExporterError as error:
        for line in error.lines():
            click.echo(f"error: {line}", err=True)
        sys.exit(exit_status(error))


def _logging(options: LogOptions, *, quiet: bool = False) -> RedactingFilter:
    # ``check`` prints a table: its info lines would only repeat it.
    level = "error" if quiet and options.level == "info" else options.level
    return setup_logging(level=level, fmt=options.format)


def _prepared(options: app.CollectionOptions, redacting: RedactingFilter) -> app.Setup:
    setup = app.prepare(options)
    redacting.secrets = (*redacting.secrets, *setup.target.secrets)
    return setup


_log_level_option = click.option(
    "--log.level",
    "log_level",
    envvar="PGRB_LOG_LEVEL",
    default="info",
    type=click.Choice(["debug", "info", "warning", "error"]),
    show_default=True,
)
_config_option = click.option(
    "--config",
    "config",
    envvar="PGRB_CONFIG",
    type=click.Path(dir_okay=False, path_type=Path),
    help="queries.yaml with the checks (default: the bundled one).",
)


_BACKUP_OPTIONS = (
    click.option(
        "--backup.dir",
        "backup_dir",
        envvar="PGRB_BACKUP_DIR",
        type=click.Path(file_okay=False, path_type=Path),
        help="Directory of the full pg_dump backups to watch (the backup checks skip without it).",
    ),
    click.option(
        "--backup.pattern",
        "backup_pattern",
        envvar="PGRB_BACKUP_PATTERN",
        default=DEFAULT_PATTERN,
        show_default=True,
        help="Regular expression of a full backup's file name; its group `time` is "
        "YYYYMMDD_HHMMSS (else the mtime is the backup's time).",
    ),
    click.option(
        "--backup.time-zone",
        "backup_time_zone",
        envvar="PGRB_BACKUP_TIME_ZONE",
        default="UTC",
        show_default=True,
        help="Time zone of the times in backup file names (IANA name).",
    ),
    click.option(
        "--backup.state-dir",
        "backup_state_dir",
        envvar="PGRB_BACKUP_STATE_DIR",
        type=click.Path(file_okay=False, path_type=Path),
        help="Where verify-backup writes its records (default: --backup.dir).",
    ),
)


def _collection_options(func: F) -> F:
    decorators = [
        _config_option,
        click.option(
            "--database.url",
            "database_url",
            envvar=["PGRB_DATABASE_URL", "DATABASE_URL"],
            help="PostgreSQL URL; Prisma's form is accepted (env DATABASE_URL). A password here "
            "is visible to local users: prefer the file options or the environment.",
            show_envvar=True,
        ),
        click.option(
            "--database.url-file",
            "database_url_file",
            envvar="PGRB_DATABASE_URL_FILE",
            type=click.Path(dir_okay=False, path_type=Path),
            help="File holding the database URL.",
        ),
        click.option(
            "--database.password-file",
            "database_password_file",
            envvar="PGRB_DATABASE_PASSWORD_FILE",
            type=click.Path(dir_okay=False, path_type=Path),
            help="File holding the database password (else the URL's, PGPASSWORD or ~/.pgpass).",
        ),
        click.option(
            "--database.connections",
            "connections",
            envvar="PGRB_DATABASE_CONNECTIONS",
            type=click.IntRange(1, 10),
            default=1,
            show_default=True,
            help="Connections the exporter may open, one per collection worker (the role's "
            "CONNECTION LIMIT, 5 in pg_runbook_exporter/sql/monitoring-role.sql, must allow them).",
        ),
        *_BACKUP_OPTIONS,
        _log_level_option,
        click.option(
            "--log.format",
            "log_format",
            envvar="PGRB_LOG_FORMAT",
            default="logfmt",
            type=click.Choice(["logfmt", "json"]),
            show_default=True,
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _parse_collection(options: dict[str, Any]) -> tuple[app.CollectionOptions, LogOptions]:
    source = click.get_current_context().get_parameter_source("database_url")
    collection = app.CollectionOptions(
        config=options["config"],
        url=options["database_url"],
        url_file=options["database_url_file"],
        password_file=options["database_password_file"],
        connections=options["connections"],
        url_on_command_line=source is ParameterSource.COMMANDLINE,
        backups=BackupOptions(
            directory=options["backup_dir"],
            pattern=options["backup_pattern"],
            time_zone=options["backup_time_zone"],
            state_dir=options["backup_state_dir"],
        ),
    )
    return collection, LogOptions(level=options["log_level"], format=options["log_format"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pg-runbook-exporter")
def main() -> None:
    """Prometheus exporter for the portal PostgreSQL: the database runbook's checks as metrics."""


@main.command()
@_collection_options
@click.option(
    "--web.listen-address",
    "listen_address",
    envvar="PGRB_WEB_LISTEN_ADDRESS",
    default=app.DEFAULT_LISTEN_ADDRESS,
    show_default=True,
    help="Address to serve on.",
)
@click.option(
    "--web.telemetry-path",
    "telemetry_path",
    envvar="PGRB_WEB_TELEMETRY_PATH",
    default="/metrics",
    show_default=True,
    help="Path of the metrics.",
)
@click.option(
    "--web.config.file",
    "web_config_file",
    envvar="PGRB_WEB_CONFIG_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TLS and basic auth, in the Prometheus exporter-toolkit format.",
)
def run(**options: Any) -> None:
    """Serve the checks' metrics, collected in the background."""
    collection, log = _parse_collection(options)
    web = app.WebOptions(
        listen_address=options["listen_address"],
        telemetry_path=options["telemetry_path"],
        config_file=options["web_config_file"],
    )
    redacting = _logging(log)
    with reported():
        app.serve(_prepared(collection, redacting), web)


@main.command()
@_collection_options
def check(**options: Any) -> None:
    """Validate the config, connect, run every check once and print a table."""
    collection, log = _parse_collection(options)
    redacting = _logging(log, quiet=True)
    with reported():
        setup = _prepared(collection, redacting)
        click.echo(f"config: {setup.config.path} ({len(setup.config.checks)} checks)")
        click.echo(f"database: {setup.target.display}")
        for warning in setup.warnings:
            click.echo(f"warning: {warning}", err=True)
        lines = app.run_check(setup)
    click.echo(format_table(lines))
    click.echo(f"\n{summary(lines)}")
    sys.exit(EXIT_FAILED if any(x.failed for x in lines) else 0)


@main.command()
@click.argument("alertname")
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="NAME=VALUE",
    help="A label of the firing alert the diagnosis needs (bound as a parameter, never in SQL).",
)
@_collection_options
def diagnose(alertname: str, labels: tuple[str, ...], **options: Any) -> None:
    """Run ALERTNAME's diagnosis SQL (read-only) and print the rows and their fix, never run it.

    Exits 0 when it finds something, 1 when it finds nothing (or the database fails), 2 for an
    unknown alert, one without a database diagnosis, or a missing label."""
    collection, log = _parse_collection(options)
    redacting = _logging(log, quiet=True)
    with reported():
        parsed = parse_labels(labels)
        setup = _prepared(collection, redacting)
        for warning in setup.warnings:
            click.echo(f"warning: {warning}", err=True)
        report = app.run_diagnose(setup, alertname, parsed)
    click.echo(format_report(report))
    sys.exit(0 if report.found else EXIT_FAILED)


class WingDefault(click.Option):
    """An option whose default is a constant of a wing, imported only when a command needs it
    (its run or its ``--help``): the serving path never loads ``mixin/`` or the demo."""

    def __init__(self, param_decls: Sequence[str], *, wing: tuple[str, str], **attrs: Any) -> None:
        super().__init__(param_decls, **attrs)
        self.wing = wing

    def get_default(self, ctx: click.Context, call: bool = True) -> Any:
        module, name = self.wing
        return getattr(importlib.import_module(module), name)


@main.command()
@click.option(
    "--web.listen-address",
    "listen_address",
    envvar="PGRB_WEB_LISTEN_ADDRESS",
    default=f"127.0.0.1{app.DEFAULT_LISTEN_ADDRESS}",
    show_default=True,
    help="Address to serve on.",
)
@click.option(
    "--postgres.major",
    "major",
    type=click.IntRange(14, 18),
    cls=WingDefault,
    wing=("pg_runbook_exporter.demo", "DEMO_MAJOR"),
    show_default=True,
    help="PostgreSQL major of the throwaway server.",
)
@_log_level_option
def demo(listen_address: str, major: int, log_level: str) -> None:
    """Run the exporter against a throwaway, seeded portal database (Ctrl-C cleans up)."""
    redacting = _logging(LogOptions(level=log_level))
    with reported():
        from pg_runbook_exporter import demo as demo_wing  # noqa: PLC0415

        def add_secrets(*secrets: str) -> None:
            redacting.secrets = (*redacting.secrets, *secrets)

        demo_wing.run(
            major=major,
            web=app.WebOptions(listen_address=listen_address),
            add_secrets=add_secrets,
            say=click.echo,
        )


_MIXIN_OPTIONS = "pg_runbook_exporter.mixin.options"


def _parsed(parse: str) -> Callable[[click.Context, click.Parameter, str], Any]:
    """A click callback running ``mixin/options.py``'s ``parse`` (imported on use); its
    ValueError becomes a usage error naming the option."""

    def callback(_ctx: click.Context, _param: click.Parameter, value: str) -> Any:
        try:
            return getattr(importlib.import_module(_MIXIN_OPTIONS), parse)(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc

    return callback


@main.command()
@_config_option
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Repository root to write into.",
)
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Write nothing; exit 1 when a generated file is out of date.",
)
@click.option(
    "--alerts.runbook-base-url",
    "runbook_base_url",
    cls=WingDefault,
    wing=(_MIXIN_OPTIONS, "DEFAULT_RUNBOOK_BASE_URL"),
    show_default=True,
    help="Where the playbooks (docs/alerts/) are served; + <AlertName>.md.",
)
@click.option(
    "--alerts.dashboard-base-url",
    "dashboard_base_url",
    cls=WingDefault,
    wing=(_MIXIN_OPTIONS, "DEFAULT_DASHBOARD_BASE_URL"),
    show_default=True,
    help="Grafana's /d/ URL; + the board's uid.",
)
@click.option(
    "--mixin.job",
    "job",
    callback=_parsed("parse_job"),
    cls=WingDefault,
    wing=(_MIXIN_OPTIONS, "DEFAULT_JOB"),
    show_default=True,
    help="The job Prometheus scrapes the exporter as: the rules' up{job=…} and their tests' "
    "series (the boards list the jobs that export pgrb_up).",
)
@click.option(
    "--mixin.selector",
    "selector",
    callback=_parsed("parse_selector"),
    default="",
    metavar='LABEL="VALUE",…',
    help='Equality matchers, e.g. \'cluster="eu1", env="prod"\', that every selector of the '
    "rules, their tests' series and the boards' queries carries (default: none).",
)
@click.option(
    "--mixin.node-job",
    "node_job",
    callback=_parsed("parse_node_job"),
    cls=WingDefault,
    wing=(_MIXIN_OPTIONS, "DEFAULT_NODE_JOB"),
    show_default=True,
    help="The job Prometheus scrapes node_exporter as: the disk rules and the storage board's "
    "data volume read its node_filesystem_* series.",
)
@click.option(
    "--mixin.node-mountpoint",
    "node_mountpoint",
    callback=_parsed("parse_mountpoint"),
    cls=WingDefault,
    wing=(_MIXIN_OPTIONS, "DEFAULT_NODE_MOUNTPOINT"),
    show_default=True,
    help="The mountpoint of the volume holding the data directory, as node_exporter reports it.",
)
def generate(
    config: Path | None,
    root: Path,
    check_only: bool,
    *,
    runbook_base_url: str,
    dashboard_base_url: str,
    job: str,
    selector: tuple[tuple[str, str], ...],
    node_job: str,
    node_mountpoint: str,
) -> None:
    """Regenerate docs, alert rules and their promtool tests, dashboards and README tables."""
    from pg_runbook_exporter.mixin import generate as generated  # noqa: PLC0415
    from pg_runbook_exporter.mixin import options as mixin_options  # noqa: PLC0415

    options = mixin_options.MixinOptions(
        runbook_base_url, dashboard_base_url, job, selector, node_job, node_mountpoint
    )
    with reported():
        loaded = load_config(config)
        if check_only:
            drifted = generated.drift(loaded, root=root, options=options)
        else:
            written = generated.write(loaded, root=root, options=options)
    if check_only:
        for item in drifted:
            click.echo(f"{item.path}: {item.reason}; run `pg-runbook-exporter generate`", err=True)
        sys.exit(EXIT_FAILED if drifted else 0)
    for path in written:
        click.echo(f"wrote {path}")


@main.command("verify-backup")
@click.argument("backup", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_config_option
@click.option(
    "--work-dir",
    "work_dir",
    envvar="PGRB_WORK_DIR",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Where the private (0700) directory of the restored copy goes (default: $TMPDIR).",
)
@click.option(
    "--backup.state-dir",
    "state_dir",
    envvar="PGRB_BACKUP_STATE_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the verification record goes (default: beside the backup).",
)
@click.option(
    "--pg.bindir",
    "bindir",
    envvar="PGRB_PG_BINDIR",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="PostgreSQL programs to use instead of the installed ones (psql, pg_restore, server).",
)
@click.option("--timeout", default="1h", show_default=True, help="Give up (and fail) after this.")
@click.option(
    "--database.url",
    "database_url",
    envvar="PGRB_DATABASE_URL",
    help="Also compare the row counts with this live database (read-only, bounded).",
)
@click.option(
    "--database.password-file",
    "database_password_file",
    envvar="PGRB_DATABASE_PASSWORD_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
)
@_log_level_option
def verify_backup(**options: Any) -> None:
    """Restore BACKUP into a throwaway server, run the integrity checks, write a record."""
    from pg_runbook_exporter.backup import command  # noqa: PLC0415

    sys.exit(command.run(**options))
