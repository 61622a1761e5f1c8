"""Run the real pipeline (scheduler → cache → renderer → exposition) in-process for tests."""

from __future__ import annotations

import contextlib
import dataclasses
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pg_runbook_exporter import app
from pg_runbook_exporter.backup.sources import BackupOptions
from pg_runbook_exporter.config import Check, Config, Setting, load_config
from pg_runbook_exporter.database_url import parse_database_url
from pg_runbook_exporter.scheduler import Scheduler
from pg_runbook_exporter.state import CheckState, ResultCache
from pg_runbook_exporter.status.publish import StatusPages

LabelSet = frozenset[tuple[str, str]]
# The checks that read backup files, not the database: skipped without --backup.dir.
FILE_CHECKS = tuple(c.name for c in load_config().checks if c.source is not None)


@dataclass(frozen=True)
class Scrape:
    """A parsed Prometheus text exposition."""

    text: str
    samples: Mapping[str, Mapping[LabelSet, float]]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples: dict[str, dict[LabelSet, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                series = samples.setdefault(sample.name, {})
                series[frozenset(sample.labels.items())] = sample.value
        return cls(text=text, samples=samples)

    def series(self, name: str) -> dict[LabelSet, float]:
        return dict(self.samples.get(name, {}))

    def get(self, name: str, /, **labels: str) -> float | None:
        """The value of the one series of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        found = [v for k, v in self.samples.get(name, {}).items() if wanted <= set(k)]
        if len(found) > 1:
            raise AssertionError(f"{name}{labels} matches {len(found)} series")
        return found[0] if found else None

    def value(self, name: str, /, **labels: str) -> float:
        found = self.get(name, **labels)
        if found is None:
            raise AssertionError(f"no series {name}{labels} in the exposition")
        return found


def configured(
    *,
    only: Iterable[str] | None = None,
    settings: Mapping[str, int | float | str] | None = None,
    base: Config | None = None,
    **check_overrides: Any,
) -> Config:
    """The shipped config (or ``base``), narrowed to some checks, with settings overridden."""
    config = base or load_config()
    checks: tuple[Check, ...] = config.checks
    if only is not None:
        names = list(only)
        checks = tuple(c for c in checks if c.name in names)
        assert len(checks) == len(names), f"unknown check among {names}"
    if check_overrides:
        checks = tuple(dataclasses.replace(c, **check_overrides) for c in checks)
    new_settings: tuple[Setting, ...] = tuple(
        dataclasses.replace(s, value=settings[s.name]) if settings and s.name in settings else s
        for s in config.settings
    )
    return dataclasses.replace(config, checks=checks, settings=new_settings)


def state_of(cache: ResultCache, name: str) -> CheckState:
    """The current state of the check ``name``, read from a snapshot."""
    found = [s for s in cache.snapshot().states if s.check.name == name]
    assert len(found) == 1, f"{len(found)} checks named {name}"
    return found[0]


def pipeline_for(dsn: str, config: Config, **options: Any) -> app.Pipeline:
    """The pipeline ``run`` builds, against ``dsn`` (``options``: see ``app.build_pipeline``)."""
    return app.build_pipeline(config, parse_database_url(dsn), **options)


@dataclass(frozen=True)
class Collected:
    """One run of every check: the pipeline's cache and what it would serve."""

    cache: ResultCache
    scrape: Scrape
    openmetrics: bytes

    def state(self, name: str) -> CheckState:
        return state_of(self.cache, name)


def collect(
    dsn: str,
    config: Config | None = None,
    *,
    connections: int = 1,
    backups: BackupOptions | None = None,
) -> Collected:
    """Run every check of ``config`` once, in order, on one session against ``dsn``."""
    pipeline = pipeline_for(dsn, config or load_config(), connections=connections, backups=backups)
    try:
        pipeline.scheduler.run_once()
    finally:
        pipeline.scheduler.stop()
    exposition = pipeline.renderer.exposition
    return Collected(
        cache=pipeline.cache,
        scrape=Scrape.parse(exposition.text.decode()),
        openmetrics=exposition.openmetrics,
    )


def collect_once(
    dsn: str,
    config: Config | None = None,
    *,
    connections: int = 1,
    backups: BackupOptions | None = None,
) -> Scrape:
    """Run every check of ``config`` once against ``dsn`` and parse what would be served."""
    return collect(dsn, config, connections=connections, backups=backups).scrape


@dataclass(frozen=True)
class Serving:
    """The pipeline and web server, wired as ``run`` wires them, on an ephemeral port."""

    cache: ResultCache
    scheduler: Scheduler
    port: int
    status: StatusPages | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self, name: str) -> CheckState:
        return state_of(self.cache, name)

    def scrape(self, *, timeout: float = 5.0) -> Scrape:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            assert reply.status == 200
            return Scrape.parse(reply.read().decode())


@contextlib.contextmanager
def serving(
    dsn: str, config: Config, *, connections: int = 1, status: bool = False
) -> Iterator[Serving]:
    """The exporter as ``run`` serves it; ``status``: with ``--web.status``."""
    setup = app.Setup(config=config, target=parse_database_url(dsn), connections=connections)
    web = app.WebOptions(listen_address="127.0.0.1:0", status=status)
    with app.running(setup, web) as up:
        yield Serving(
            cache=up.pipeline.cache,
            scheduler=up.pipeline.scheduler,
            port=up.port,
            status=up.status,
        )


def wait_for(predicate: Callable[[], bool], *, timeout: float = 20.0, what: str = "it") -> None:
    """Poll until ``predicate()`` holds; fail after ``timeout`` seconds (a bound, not a goal)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)
