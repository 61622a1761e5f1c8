"""Runs each check on its own interval over a bounded number of sessions.

Every worker owns one session (one connection), so the exporter never opens more connections than
workers. A check is taken off the queue while it runs, so two runs of one check never overlap, and
the next run is due one interval after this one started (never a backlog of missed runs). Checks
due at one moment run back to back and are published (rendered and joined) once, after the last
of them, unless the next was slow last time — a result waits at most about `PUBLISH_HOLD`.

A lost session is taken up by its worker as soon as it is noticed (a failed run, or the watcher
seeing the idle socket end) rather than at the next due run: reconnected at once, with backoff only
after repeated failures, and every check is due again the moment the session is lost and again
when it is back, so ``pgrb_up`` and each check's success tell the truth within seconds.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

from pg_runbook_exporter.backup.sources import FileReader
from pg_runbook_exporter.config import Check, Config
from pg_runbook_exporter.database_url import DatabaseTarget
from pg_runbook_exporter.errors import CheckError, FailureReason, SkipReason
from pg_runbook_exporter.samples import build_samples
from pg_runbook_exporter.session import QueryResult, ServerFacts, Session
from pg_runbook_exporter.state import ResultCache, Snapshot
from pg_runbook_exporter.statement import Statements

logger = logging.getLogger(__name__)

PUBLISH_HOLD = 1.0
"""Seconds a result may wait for the checks due with it before the snapshot is published anyway."""
SHORT_RUN = 0.1
"""A result is held back only for a next check whose last run took less than this (seconds)."""


def unmet_requirement(check: Check, facts: ServerFacts) -> SkipReason | None:
    """Why the check cannot run on this server, or None when it can."""
    req = check.requires
    if req.min_version is not None and facts.major < req.min_version:
        return SkipReason.VERSION
    if req.max_version is not None and facts.major > req.max_version:
        return SkipReason.VERSION
    if check.sql_for(facts.major) is None:
        return SkipReason.VERSION
    if req.primary and facts.in_recovery:
        return SkipReason.STANDBY
    if req.extension is not None and req.extension not in facts.extensions:
        return SkipReason.EXTENSION
    if any(r not in facts.relations for r in req.relations):
        return SkipReason.RELATION
    if any(facts.settings.get(name) != value for name, value in req.settings):
        return SkipReason.SETTING
    return None


class Scheduler:
    def __init__(
        self,
        *,
        config: Config,
        target: DatabaseTarget,
        cache: ResultCache,
        publish: Callable[[Snapshot], object] = lambda _: None,
        connections: int = 1,
        facts_interval: float = 15.0,
        max_backoff: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        files: FileReader | None = None,
    ) -> None:
        if connections < 1:
            raise ValueError("at least one connection is needed")
        self._config = config
        self._cache = cache
        self._publish = publish
        self._facts_interval = facts_interval
        self._clock = clock
        self._params = config.sql_params()
        self._label_cap = config.label_value_max_length
        self._statements = Statements(label_value_max_length=self._label_cap)
        # Checks that read files run on a thread of their own, never waiting on the database.
        self._files = files
        relations = sorted({r for c in config.checks for r in c.requires.relations})
        settings = sorted({n for c in config.checks for n, _ in c.requires.settings})
        # Reconnection never waits longer than half the shortest interval, so once the database
        # is back every check succeeds again at its next run at the latest.
        shortest = min((c.interval for c in config.checks if c.source is None), default=max_backoff)
        max_backoff = min(max_backoff, shortest / 2)
        self._sessions = [
            Session(
                target=target,
                probe_relations=relations,
                probe_settings=settings,
                max_backoff=max_backoff,
                name=f"session {i + 1}",
                on_idle_readable=self._suspect,
            )
            for i in range(connections)
        ]
        self._suspects: set[Session] = set()  # idle sessions whose socket woke up
        self._queue: list[tuple[float, int, Check]] = []
        self._files_queue: list[tuple[float, int, Check]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._crashed: set[str] = set()
        start = clock()
        for check in config.checks:
            queue = self._files_queue if check.source is not None else self._queue
            heapq.heappush(queue, (start, next(self._order), check))

    def publish(self) -> None:
        """Hand the cache's current snapshot to whoever renders it."""
        self._publish(self._cache.snapshot())

    def start(self) -> None:
        self.publish()
        for index, session in enumerate(self._sessions):
            thread = threading.Thread(
                target=self._work, args=(session,), name=f"collector-{index + 1}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        if self._files_queue:
            thread = threading.Thread(target=self._work_files, name="files", daemon=True)
            thread.start()  # not in _threads: it holds no session

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for session in self._sessions:
            session.liveness.stop()  # the statement running ends now, even on a hung path
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
            if check.source is None:
                self._run(session, check)
            else:
                self._run_source(check)
        self.publish()

    def _next(
        self, queue: list[tuple[float, int, Check]], session: Session | None = None
    ) -> Check | Session | None:
        """The next check due; or ``session`` when it needs looking after first (see _revive)."""
        with self._cond:
            while not self._stopping:
                wait: float | None = None
                if session is not None:
                    if session in self._suspects:
                        self._suspects.discard(session)
                        return session
                    if session.lost:
                        wait = session.liveness.retry_in()
                        if wait <= 0:
                            return session
                if queue:
                    due = queue[0][0] - self._clock()
                    if due <= 0:
                        return heapq.heappop(queue)[2]
                    wait = due if wait is None else min(wait, due)
                self._cond.wait(wait)
            return None

    def _suspect(self, session: Session) -> None:
        """The watcher's call: ``session``'s idle socket became readable."""
        with self._cond:
            self._suspects.add(session)
            self._cond.notify_all()

    def _all_due(self) -> None:
        """Every database check due now (those running are requeued when they end)."""
        with self._cond:
            now = self._clock()
            self._queue[:] = [(min(due, now), order, c) for due, order, c in self._queue]
            heapq.heapify(self._queue)
            self._cond.notify_all()

    def _revive(self, session: Session) -> None:
        """A session that woke up or was lost: keep it, or reconnect now (or when backoff says).

        On losing it ``pgrb_up`` is 0 and every check due, so each says so at once; when it is
        back every check runs again at once.
        """
        if session.connected:
            if session.check_idle():
                return  # a notice, not the end of the session
            self._cache.set_up(False)
            self._all_due()
            self.publish()
        try:
            session.connect()
        except CheckError:
            self._cache.set_up(False)
            self.publish()
            return
        self._cache.set_up(True)
        self._all_due()
        self.publish()

    def _requeue(self, queue: list[tuple[float, int, Check]], check: Check, started: float) -> None:
        with self._cond:
            due = max(started + check.interval, self._clock())
            heapq.heappush(queue, (due, next(self._order), check))
            self._cond.notify_all()

    def _work(self, session: Session) -> None:
        self._loop(self._queue, lambda check: self._run(session, check), session=session)

    def _work_files(self) -> None:
        self._loop(self._files_queue, self._run_source)

    def _loop(
        self,
        queue: list[tuple[float, int, Check]],
        run: Callable[[Check], None],
        *,
        session: Session | None = None,
    ) -> None:
        held: float | None = None  # when the oldest result not yet published was recorded
        while (check := self._next(queue, session)) is not None:
            if isinstance(check, Session):
                self._revive(check)
                held = None
                continue
            started = self._clock()
            try:
                run(check)
                held = self._held(queue, held)
                if held is None:
                    self.publish()
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
                self._requeue(queue, check, started)

    def _held(self, queue: list[tuple[float, int, Check]], held: float | None) -> float | None:
        """Hold a result back while another check of `queue` is due (within `SHORT_RUN`) and was
        quick last time, so checks due together are published (rendered, joined) once — but none
        longer than `PUBLISH_HOLD`; None: publish now."""
        with self._cond:
            now = self._clock()
            # Due now or nearly: checks that ran back to back fall due a run's length apart.
            due = queue[0][2] if queue and queue[0][0] <= now + SHORT_RUN else None
        if due is None:
            return None
        last = self._cache.state(due.name)  # a skip is instant; a check never run may be slow
        if last.skipped is None and (last.duration is None or last.duration >= SHORT_RUN):
            return None
        held = now if held is None else held
        return held if now - held < PUBLISH_HOLD else None

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

        def execute(text: str) -> QueryResult:
            return session.run(
                text,
                self._params,
                timeout=check.timeout,
                lock_timeout=check.lock_timeout,
                max_rows=check.max_series,
            )

        try:
            # The server stops at max_series and cuts long label values (statement.py).
            result = self._statements.run(
                sql, labels=check.labels, max_rows=check.max_series, execute=execute
            )
            samples = build_samples(check, result, label_value_max_length=self._label_cap)
        except CheckError as error:
            lost = error.reason is FailureReason.CONNECTION or session.lost
            if lost and not self._stopping:  # a stop shuts the socket: the database is fine
                self._cache.set_up(False)
            self._cache.record_failure(check.name, error, self._clock() - started)
            if session.lost:
                self._all_due()  # every check says so now, not at its next run
            return
        self._cache.record_success(check.name, samples, self._clock() - started)

    def _run_source(self, check: Check) -> None:
        """A check that reads files (``source``): no session, no server facts."""
        assert check.source is not None
        if self._files is None or not self._files.configured:
            self._cache.record_skip(check.name, SkipReason.UNCONFIGURED)
            return
        started = self._clock()
        try:
            result = self._files.read(
                check.source, timeout=check.timeout, max_rows=check.max_series
            )
            samples = build_samples(check, result, label_value_max_length=self._label_cap)
        except CheckError as error:
            self._cache.record_failure(check.name, error, self._clock() - started)
            return
        self._cache.record_success(check.name, samples, self._clock() - started)
