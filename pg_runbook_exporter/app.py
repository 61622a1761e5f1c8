"""The composition root: builds the pipeline from typed options, serves it, runs ``check``.

Everything here raises (an ``ExporterError`` for what an operator can fix) and never exits: the
command line maps errors to exit statuses. Logging is set up by the caller before anything here
runs, so every line logged on the way (the web config's own, the warnings) is seen.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

import psycopg.conninfo
from prometheus_client import ProcessCollector

from pg_runbook_exporter import __version__, diagnose
from pg_runbook_exporter.backup.sources import BackupOptions, FileReader
from pg_runbook_exporter.collector import Renderer
from pg_runbook_exporter.config import Config, load_config
from pg_runbook_exporter.database_url import DatabaseTarget, parse_database_url
from pg_runbook_exporter.errors import ListenError, OptionError, WebConfigError
from pg_runbook_exporter.report import Line, describe
from pg_runbook_exporter.scheduler import Scheduler
from pg_runbook_exporter.state import ResultCache
from pg_runbook_exporter.web.server import WebServer
from pg_runbook_exporter.web.webconfig import WebConfig, load_web_config

logger = logging.getLogger(__name__)

DEFAULT_LISTEN_ADDRESS = ":9819"


@dataclass(frozen=True)
class CollectionOptions:
    """What to collect and from where: ``--config`` and the ``--database.*`` flags."""

    config: Path | None = None
    url: str | None = None
    url_file: Path | None = None
    password_file: Path | None = None
    connections: int = 1
    url_on_command_line: bool = False  # ``--database.url`` was a flag, not the environment
    backups: BackupOptions = field(default_factory=BackupOptions)  # the ``--backup.*`` flags


@dataclass(frozen=True)
class WebOptions:
    """The ``--web.*`` flags."""

    listen_address: str = DEFAULT_LISTEN_ADDRESS
    telemetry_path: str = "/metrics"
    config_file: Path | None = None


@dataclass(frozen=True)
class Setup:
    """A loaded config and a database target, with the warnings found on the way."""

    config: Config
    target: DatabaseTarget
    connections: int = 1
    warnings: tuple[str, ...] = ()
    backups: BackupOptions = field(default_factory=BackupOptions)


# -- loading --------------------------------------------------------------------------------


def _read_secret_file(path: Path, what: str, warnings: list[str]) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise OptionError(f"{path}: cannot read the {what}: {reason}") from None
    if mode & stat.S_IROTH:
        # Group-readable stays quiet: Kubernetes mounts secrets group-readable for an fsGroup.
        warnings.append(
            f"{path}: the {what} is readable by every local user "
            f"(mode {stat.S_IMODE(mode):04o}); chmod o-r {path}"
        )
    return text


def database_target(options: CollectionOptions) -> tuple[DatabaseTarget, tuple[str, ...]]:
    """Where to connect, from the flags and libpq's environment; and the warnings about it."""
    warnings: list[str] = []
    url = options.url
    if options.url_file:
        url = _read_secret_file(options.url_file, "database URL file", warnings).strip()
    password = None
    if options.password_file:
        password = _read_secret_file(options.password_file, "password file", warnings)
        # One trailing newline (echo's, an editor's) is not part of it; nothing else is cut.
        password = password.removesuffix("\n")
    if not url:
        # libpq's own environment (PGHOST, PGUSER, PGPASSWORD, PGPASSFILE, …) then applies.
        url = "postgresql://"
    # A password file is explicit and wins; otherwise libpq's own order applies (the URL's
    # password, then PGPASSWORD, then ~/.pgpass), and PGPASSWORD is only redacted here.
    target = parse_database_url(url, password=password)
    env_password = os.environ.get("PGPASSWORD")
    if env_password:
        target = replace(target, secrets=(*target.secrets, env_password))
    if options.url_on_command_line and not options.url_file and target.password_in_url:
        warnings.append(
            "the database password is in --database.url, where every local user can read it "
            "(/proc/<pid>/cmdline, ps); pass it with --database.password-file or "
            "--database.url-file, or in the environment (PGRB_DATABASE_URL, DATABASE_URL, "
            "PGPASSWORD)"
        )
    return target, (*(f"database URL: {w}" for w in target.warnings), *warnings)


def prepare(options: CollectionOptions) -> Setup:
    """Load the config and resolve the database target; raises ``ExporterError``."""
    config = load_config(options.config)
    target, warnings = database_target(options)
    try:
        options.backups.compiled()
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    return Setup(
        config=config,
        target=target,
        connections=options.connections,
        warnings=warnings,
        backups=options.backups,
    )


# -- the pipeline ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pipeline:
    """scheduler → cache → (snapshot) → renderer; the web server reads ``renderer.exposition``."""

    cache: ResultCache
    renderer: Renderer
    scheduler: Scheduler


def build_pipeline(
    config: Config,
    target: DatabaseTarget,
    *,
    connections: int = 1,
    process_metrics: bool = True,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    backups: BackupOptions | None = None,
) -> Pipeline:
    cache = ResultCache(config=config, clock=clock, wall_clock=wall_clock)
    renderer = Renderer(*([ProcessCollector(registry=None)] if process_metrics else []))
    scheduler = Scheduler(
        config=config,
        target=target,
        cache=cache,
        publish=renderer.publish,
        connections=connections,
        clock=clock,
        files=FileReader(backups or BackupOptions(), config.sql_params()),
    )
    return Pipeline(cache=cache, renderer=renderer, scheduler=scheduler)


@dataclass(frozen=True)
class Running:
    pipeline: Pipeline
    server: WebServer
    port: int


@contextlib.contextmanager
def running(
    setup: Setup, web: WebOptions, *, web_config: WebConfig | None = None
) -> Iterator[Running]:
    """The pipeline collecting and the web server serving it, until the block ends."""
    pipeline = build_pipeline(
        setup.config, setup.target, connections=setup.connections, backups=setup.backups
    )
    try:
        server = WebServer(
            listen_address=web.listen_address,
            telemetry_path=web.telemetry_path,
            get_exposition=lambda: pipeline.renderer.exposition,
            ready=pipeline.cache.ready,
            web_config=web_config,
        )
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    try:
        port = server.start()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ListenError(web.listen_address, reason) from None
    pipeline.scheduler.start()
    try:
        yield Running(pipeline=pipeline, server=server, port=port)
    finally:
        server.stop()
        pipeline.scheduler.stop()


def read_web_config(path: Path | None) -> WebConfig | None:
    return load_web_config(path) if path else None


def serve(setup: Setup, web: WebOptions, *, on_ready: Callable[[int], None] | None = None) -> None:
    """Collect and serve until SIGINT or SIGTERM; SIGHUP re-reads the web config."""
    web_config = read_web_config(web.config_file)
    for warning in setup.warnings:
        logger.warning("%s", warning)
    # Caught from before the server starts: a signal during start-up waits its turn, never kills.
    with caught_signals() as signals, running(setup, web, web_config=web_config) as up:
        logger.info(
            "pg-runbook-exporter %s: %d checks from %s, database %s, listening on port %d",
            __version__,
            len(setup.config.checks),
            setup.config.path,
            setup.target.display,
            up.port,
        )
        if on_ready is not None:
            on_ready(up.port)
        signals.wait(on_hangup=lambda: reload_web_config(up.server, web.config_file))
        logger.info("shutting down")


class Signals:
    """SIGINT, SIGTERM and SIGHUP as they arrive, for the main thread to act on."""

    WATCHED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self._received: collections.deque[int] = collections.deque()
        self._wake = threading.Event()

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        self._received.append(signum)
        self._wake.set()

    def wait(self, *, on_hangup: Callable[[], None]) -> None:
        """Block until SIGINT or SIGTERM; call ``on_hangup`` for each SIGHUP."""
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._received:
                if self._received.popleft() != signal.SIGHUP:
                    return
                logger.info("SIGHUP: re-reading the web config")
                on_hangup()


@contextlib.contextmanager
def caught_signals() -> Iterator[Signals]:
    """Signals handled by a ``Signals`` while the block runs (main thread only)."""
    signals = Signals()
    previous = {signum: signal.signal(signum, signals.handle) for signum in Signals.WATCHED}
    try:
        yield signals
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)


def reload_web_config(server: WebServer, path: Path | None) -> None:
    """SIGHUP's work: re-read the web config (TLS certificates included) and hand it to the server.

    A file that does not load, or certificates the server cannot use, leave the running config.
    """
    if path is None:
        logger.info("no --web.config.file to re-read")
        return
    try:
        web_config = load_web_config(path)
        server.reload(web_config)
    except (WebConfigError, OSError, ValueError) as exc:
        problems = exc.problems if isinstance(exc, WebConfigError) else [str(exc)]
        for problem in problems:
            logger.error("web config not reloaded, the running one stays: %s", problem)
        return
    logger.info("web config %s applied", path)


# -- the check command ----------------------------------------------------------------------


def role_of(target: DatabaseTarget) -> str | None:
    user = psycopg.conninfo.conninfo_to_dict(target.conninfo).get("user")
    return str(user) if user else None


def run_check(setup: Setup) -> list[Line]:
    """Run every check once on one session; a report line per check, with the fixes it needs."""
    pipeline = build_pipeline(
        setup.config,
        setup.target,
        connections=setup.connections,
        process_metrics=False,
        backups=setup.backups,
    )
    try:
        pipeline.scheduler.run_once()
    finally:
        pipeline.scheduler.stop()
    role = role_of(setup.target) or os.environ.get("PGUSER") or "<exporter role>"
    return [describe(state, role) for state in pipeline.cache.snapshot().states]


# -- the diagnose command -------------------------------------------------------------------


def run_diagnose(setup: Setup, alert: str, labels: dict[str, str]) -> diagnose.Report:
    """Run ``alert``'s diagnosis once; raises ``DiagnoseError`` before connecting when it has none
    or a label is missing."""
    diagnose.diagnosis_of(alert, labels)
    return diagnose.run(setup.config, setup.target, alert, labels)
