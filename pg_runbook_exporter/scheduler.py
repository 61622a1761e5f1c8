"""Runs each check on its own interval over a bounded number of sessions.

Every worker owns one session (one connection), so the exporter never opens more connections than
workers. A check is taken off the queue while it runs, so two runs of one check never overlap, and
the next run is due one interval after this one started (never a backlog of missed runs).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

from pg_runbook_exporter.config import Check, Config
from pg_runbook_exporter.database_url import DatabaseTarget
from pg_runbook_exporter.samples import build_samples
from pg_runbook_exporter.session import CheckError, Reason, ServerFacts, Session
from pg_runbook_exporter.state import ResultCache

logger = logging.getLogger(__name__)


def unmet_requirement(check: Check, facts: ServerFacts) -> str | None:
    """Why the check cannot run on this server, or None when it can."""
    req = check.requires
    if req.min_version is not None and facts.major < req.min_version:
        return "version"
    if req.max_version is not None and facts.major > req.max_version:
        return "version"
    if check.sql_for(facts.major) is None:
        return "version"
    if req.primary and facts.in_recovery:
        return "standby"
    if req.extension is not None and req.extension not in facts.extensions:
        return "extension"
    if any(r not in facts.relations for r in req.relations):
        return "relation"
    if any(facts.settings.get(name) != value for name, value in req.settings):
        return "setting"
    return None


class Scheduler:
    def __init__(
        self,
        *,
        config: Config,
        target: DatabaseTarget,
        cache: ResultCache,
        connections: int = 1,
        facts_interval: float = 15.0,
        max_backoff: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if connections < 1:
            raise ValueError("at least one connection is needed")
        self._config = config
        self._cache = cache
        self._facts_interval = facts_interval
        self._clock = clock
        self._params = config.sql_params()
        relations = sorted({r for c in config.checks for r in c.requires.relations})
        settings = sorted({n for c in config.checks for n, _ in c.requires.settings})
        # Reconnection never waits longer than half the shortest interval, so once the database
        # is back every check succeeds again at its next run at the latest.
        shortest = min((c.interval for c in config.checks), default=max_backoff)
        max_backoff = min(max_backoff, shortest / 2)
        self._sessions = [
            Session(
                target=target,
                probe_relations=relations,
                probe_settings=settings,
                max_backoff=max_backoff,
                name=f"session {i + 1}",
            )
            for i in range(connections)
        ]
        self._queue: list[tuple[float, int, Check]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._crashed: set[str] = set()
        start = clock()
        for check in config.checks:
            heapq.heappush(self._queue, (start, next(self._order), check))

    def start(self) -> None:
        self._cache.publish()
        for index, session in enumerate(self._sessions):
            thread = threading.Thread(
                target=self._work, args=(session,), name=f"collector-{index + 1}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for session in self._sessions:
            session.cancel()
        for index, session in enumerate(self._sessions):
            if index < len(self._threads):
                self._threads[index].join(timeout)
                if self._threads[index].is_alive():
                    continue  # closing a connection its thread still uses is unsafe; exit ends it
            session.close()

    def run_once(self) -> None:
        """Run every check once on the first session, in order (the ``check`` command)."""
        session = self._sessions[0]
        for check in self._config.checks:
            self._run(session, check)
        self._cache.publish()

    def _next(self) -> Check | None:
        with self._cond:
            while not self._stopping:
                if self._queue:
                    due = self._queue[0][0]
                    wait = due - self._clock()
                    if wait <= 0:
                        return heapq.heappop(self._queue)[2]
                else:
                    wait = None
                self._cond.wait(wait)
            return None

    def _requeue(self, check: Check, started: float) -> None:
        with self._cond:
            due = max(started + check.interval, self._clock())
            heapq.heappush(self._queue, (due, next(self._order), check))
            self._cond.notify()

    def _work(self, session: Session) -> None:
        while (check := self._next()) is not None:
            started = self._clock()
            try:
                self._run(session, check)
                self._cache.publish()
            except Exception:  # a bug must not kill collection, nor log a traceback every run
                first = check.name not in self._crashed
                self._crashed.add(check.name)
                logger.log(
                    logging.ERROR if first else logging.DEBUG,
                    "check %s: unexpected error",
                    check.name,
                    exc_info=first,
                )
            finally:
                self._requeue(check, started)

    def _run(self, session: Session, check: Check) -> None:
        started = self._clock()
        try:
            facts = session.ensure_facts(max_age=self._facts_interval)
        except CheckError as error:
            self._cache.set_up(False)
            self._cache.record_failure(check.name, error, self._clock() - started)
            return
        self._cache.set_up(True)
        started = self._clock()  # the check's duration excludes connecting and server facts
        unmet = unmet_requirement(check, facts)
        if unmet is not None:
            self._cache.record_skip(check.name, unmet)
            return
        sql = check.sql_for(facts.major)
        assert sql is not None  # unmet_requirement() covered it
        try:
            result = session.run(
                sql,
                self._params,
                timeout=check.timeout,
                lock_timeout=check.lock_timeout,
                max_rows=check.max_series,
            )
            samples = build_samples(check, result)
        except CheckError as error:
            if error.reason is Reason.CONNECTION:
                self._cache.set_up(False)
            self._cache.record_failure(check.name, error, self._clock() - started)
            return
        self._cache.record_success(check.name, samples, self._clock() - started)
