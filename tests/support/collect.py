"""Run the real pipeline (scheduler → cache → collector → exposition) in-process for tests."""

from __future__ import annotations

import contextlib
import dataclasses
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pg_runbook_exporter.backup.sources import BackupOptions
from pg_runbook_exporter.cli import Common, build_pipeline
from pg_runbook_exporter.config import Check, Config, Setting, load_config
from pg_runbook_exporter.database_url import parse_database_url
from pg_runbook_exporter.scheduler import Scheduler
from pg_runbook_exporter.state import ResultCache
from pg_runbook_exporter.web.server import WebServer

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


def collect_once(
    dsn: str,
    config: Config | None = None,
    *,
    connections: int = 1,
    backups: BackupOptions | None = None,
) -> Scrape:
    """Run every check of ``config`` once against ``dsn`` and parse what would be served."""
    common = Common(
        config=config or load_config(),
        target=parse_database_url(dsn),
        connections=connections,
        backups=backups or BackupOptions(),
    )
    cache, scheduler = build_pipeline(common)
    try:
        scheduler.run_once()
    finally:
        scheduler.stop()
    return Scrape.parse(cache.exposition.text.decode())


@dataclass(frozen=True)
class Serving:
    """The pipeline and web server, wired as ``run`` wires them, on an ephemeral port."""

    cache: ResultCache
    scheduler: Scheduler
    port: int

    def scrape(self, *, timeout: float = 5.0) -> Scrape:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            assert reply.status == 200
            return Scrape.parse(reply.read().decode())


@contextlib.contextmanager
def serving(dsn: str, config: Config, *, connections: int = 1) -> Iterator[Serving]:
    common = Common(config=config, target=parse_database_url(dsn), connections=connections)
    cache, scheduler = build_pipeline(common)
    server = WebServer(
        listen_address="127.0.0.1:0", get_exposition=lambda: cache.exposition, ready=cache.ready
    )
    port = server.start()
    scheduler.start()
    try:
        yield Serving(cache=cache, scheduler=scheduler, port=port)
    finally:
        server.stop()
        scheduler.stop()


def wait_for(predicate: Callable[[], bool], *, timeout: float = 20.0, what: str = "it") -> None:
    """Poll until ``predicate()`` holds; fail after ``timeout`` seconds (a bound, not a goal)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)
