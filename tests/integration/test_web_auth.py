"""Basic auth under attack: bounded bcrypt work, remembered answers, rate limits and slots that
unauthenticated clients cannot take from an authenticated scraper.

bcrypt runs for real at realistic costs; a gate around it (``gated_bcrypt``) holds the one
verifier thread still when a test needs the queue in a known state, and counts every check.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import select
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from pg_runbook_exporter.exposition import EMPTY
from pg_runbook_exporter.web import auth
from pg_runbook_exporter.web.auth import BasicAuthenticator
from pg_runbook_exporter.web.limits import Limits
from pg_runbook_exporter.web.server import WebServer
from pg_runbook_exporter.web.statelog import HOLD_DOWN
from pg_runbook_exporter.web.webconfig import load_web_config
from tests.support.webclient import (
    Client,
    FakeClock,
    authorization,
    basic,
    connect,
    read_response,
    request,
    server_factory,
)

PASSWORD = "correct horse battery staple"
SHARED_LOGGER = "pg_runbook_exporter.web.shared"


@pytest.fixture(scope="module")
def cost12_hash() -> str:
    # Cost 12 (about 0.3 s a check here): a flood at this cost is what the bounds are for.
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=12)).decode()


class Gate:
    """Counts bcrypt checks; while closed, a check waits for it to open."""

    def __init__(self) -> None:
        self.calls = 0
        self.opened = threading.Event()
        self.opened.set()
        self.lock = threading.Lock()
        self.running = threading.Event()

    def close(self) -> None:
        self.opened.clear()
        self.running.clear()


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    gate = Gate()
    real = bcrypt.checkpw

    def checkpw(password: bytes, hashed: bytes) -> bool:
        with gate.lock:
            gate.calls += 1
        gate.running.set()
        assert gate.opened.wait(60)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", checkpw)
    yield gate
    gate.opened.set()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., WebServer]]:
    start_server, stop_all = server_factory()

    def start(web: dict[str, Any], **kwargs: Any) -> WebServer:
        path = tmp_path / "web.yml"
        path.write_text(yaml.safe_dump(web))
        return start_server(
            get_exposition=lambda: EMPTY,
            ready=lambda: (True, ""),
            web_config=load_web_config(path),
            **kwargs,
        )

    yield start
    stop_all()


def shared_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == SHARED_LOGGER]


def wait_for_connections(server: WebServer, count: int) -> None:
    for _ in range(600):  # a bound, not a goal
        if server.open_connections() == count:
            return
        threading.Event().wait(0.05)
    assert server.open_connections() == count


def answered(socks: list[socket.socket], count: int) -> list[socket.socket]:
    """The first `count` of `socks` to receive something (waits up to 30 s per answer)."""
    ready: list[socket.socket] = []
    waiting = list(socks)
    while len(ready) < count:
        readable, _, _ = select.select(waiting, [], [], 30)
        assert readable, f"only {len(ready)} of {count} answers arrived"
        ready += readable
        waiting = [s for s in waiting if s not in readable]
    return ready


def test_a_flood_of_wrong_passwords_is_refused_past_the_queue_and_never_delays_a_verified_scrape(
    serve: Callable[..., WebServer], cost12_hash: str, gate: Gate
) -> None:
    server = serve(
        {"basic_auth_users": {"prometheus": cost12_hash}},
        limits=Limits(max_pending_password_checks=2),
    )
    prometheus = Client(server.port)
    assert prometheus.get("/healthz", headers=basic("prometheus", PASSWORD)).status == 200
    assert gate.calls == 1
    gate.close()  # the verifier thread will hold the next check until the gate opens
    flood = []
    for i in range(20):
        sock = connect(server.port, source="127.0.0.2")
        sock.sendall(request("/metrics", headers=basic("prometheus", f"guess {i}")))
        flood.append(sock)
        if i == 0:
            assert gate.running.wait(30)  # the first guess holds the verifier
    # One check running, two queued: the other 17 are refused at once, without a bcrypt call.
    # An unbounded queue would answer none of them before the gate opens.
    refused = answered(flood, 17)
    assert {read_response(s.makefile("rb")).status for s in refused} == {429}
    # The verified scraper is served from the cache while the verifier is busy; a server that
    # queued it behind the guesses would leave this read waiting for the gate.
    assert prometheus.get("/metrics", headers=basic("prometheus", PASSWORD)).status == 200
    assert gate.calls == 2
    gate.opened.set()
    checked = [s for s in flood if s not in refused]
    assert [read_response(s.makefile("rb")).status for s in checked] == [401, 401, 401]
    assert gate.calls == 1 + 3
    for sock in flood:
        sock.close()
    prometheus.close()


def test_the_queued_check_of_a_client_that_left_is_dropped(
    serve: Callable[..., WebServer], cost12_hash: str, gate: Gate
) -> None:
    server = serve({"basic_auth_users": {"prometheus": cost12_hash}})
    gate.close()
    first = Client(server.port)
    first.send(request(headers=basic("prometheus", "guess")))
    assert gate.running.wait(30)
    leaving = [Client(server.port) for _ in range(3)]
    for i, client in enumerate(leaving):
        client.send(request(headers=basic("prometheus", f"other guess {i}")))
    wait_for_connections(server, 4)  # accepted, their checks queued behind the first
    for client in leaving:
        client.close()
    wait_for_connections(server, 1)  # seen to go
    gate.opened.set()
    assert read_response(first.file).status == 401
    # Without the cancellation the three departed checks would still run: 4 calls.
    assert Client(server.port).get("/healthz", headers=basic("prometheus", PASSWORD)).status == 200
    assert gate.calls == 1 + 1
    first.close()


def test_answers_are_remembered_by_an_hmac_of_the_header_and_failures_too(cost12_hash: str) -> None:
    authenticator = BasicAuthenticator({"prometheus": cost12_hash.encode()})
    good = authorization("prometheus", PASSWORD).encode()
    bad = authorization("prometheus", "guess").encode()
    unknown = authorization("nobody", PASSWORD).encode()
    loop = asyncio.new_event_loop()
    try:
        for header, expected in ((good, True), (bad, False), (unknown, False)):
            assert authenticator.cached(header) is None  # bcrypt decides the first time
            future = authenticator.verify(loop, header)
            assert future is not None
            assert loop.run_until_complete(future) is expected
            loop.run_until_complete(asyncio.sleep(0))  # let the done callbacks run
            assert authenticator.cached(header) is expected  # and never again
    finally:
        authenticator.close()
        loop.close()
    assert authenticator.cached(b"Bearer token") is False
    assert authenticator.cached(b"Basic !!!not-base64") is False
    remembered = [*authenticator._failed, *authenticator._verified.values()]
    assert len(remembered) == 3
    for digest in remembered:  # keyed digests: neither the secret nor a hash a guess reproduces
        assert PASSWORD.encode() not in digest
        assert digest not in {hashlib.sha256(h).digest() for h in (good, bad, unknown)}


def test_remembered_failures_are_bounded_and_the_least_recently_seen_goes_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fails when failures pile up without bound (a flood of distinct guesses grows memory for
    ever), when a failure seen again is evicted before older ones, or when guesses push out a
    verified scraper."""
    monkeypatch.setattr(auth, "FAILURES_REMEMBERED", 3)
    cost4 = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4))
    authenticator = BasicAuthenticator({"prometheus": cost4})
    good = authorization("prometheus", PASSWORD).encode()
    guesses = [authorization("prometheus", f"guess {n}").encode() for n in range(5)]
    loop = asyncio.new_event_loop()

    def check(header: bytes) -> bool:
        future = authenticator.verify(loop, header)
        assert future is not None
        answer = loop.run_until_complete(future)
        loop.run_until_complete(asyncio.sleep(0))  # let the done callbacks run
        return answer

    try:
        assert check(good) is True
        for guess in guesses[:4]:
            assert check(guess) is False
        assert len(authenticator._failed) == 3
        assert authenticator.cached(guesses[0]) is None  # the oldest went: bcrypt decides again
        assert authenticator.cached(guesses[1]) is False  # seen again: now the newest
        assert check(guesses[4]) is False
        assert [authenticator.cached(g) for g in guesses[1:]] == [False, None, False, False]
        assert len(authenticator._failed) == 3
        assert authenticator.cached(good) is True  # never among the failures
    finally:
        authenticator.close()
        loop.close()


def test_unauthenticated_requests_cannot_use_up_the_rate_limit_of_authenticated_ones(
    serve: Callable[..., WebServer], cost12_hash: str
) -> None:
    server = serve(
        {
            "basic_auth_users": {"prometheus": cost12_hash},
            "rate_limit": {"interval": "1h", "burst": 3},
        }
    )
    attacker = Client(server.port)
    statuses = {attacker.get().status for _ in range(30)}
    statuses |= {attacker.get(headers=basic("prometheus", "guess")).status for _ in range(30)}
    assert statuses == {401}  # a limit applied before authentication would answer 429 here
    attacker.close()
    prometheus = Client(server.port)
    auth = basic("prometheus", PASSWORD)
    assert [prometheus.get(headers=auth).status for _ in range(4)] == [200, 200, 200, 429]
    other = Client(server.port, source="127.0.0.2")  # each client address has its own bucket
    assert other.get(headers=auth).status == 200
    for client in (prometheus, other):
        client.close()


def test_clients_that_never_authenticate_cannot_keep_an_authenticated_scraper_out(
    serve: Callable[..., WebServer], cost12_hash: str
) -> None:
    server = serve(
        {"basic_auth_users": {"prometheus": cost12_hash}}, limits=Limits(max_connections=5)
    )
    auth = basic("prometheus", PASSWORD)
    prometheus = Client(server.port)
    assert prometheus.get(headers=auth).status == 200
    squatters = []
    for i in range(30):  # every slot taken again and again by clients that fail or say nothing
        sock = connect(server.port, source="127.0.0.2")
        if i % 2:
            sock.sendall(request(headers=basic("prometheus", "guess")))
        squatters.append(sock)
    assert prometheus.get(headers=auth).status == 200  # its connection was never evicted
    second = Client(server.port)  # and a new one gets a slot by pushing out a squatter
    assert second.get(headers=auth).status == 200
    assert server.open_connections() <= 5
    for sock in squatters:
        sock.close()
    for client in (prometheus, second):
        client.close()


def test_a_flood_that_drains_between_guesses_logs_one_start_and_one_end_per_condition(
    serve: Callable[..., WebServer], cost12_hash: str, gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    """Five rounds of a full password queue that drains in between (a 429, then the queue free
    again), each with a 401 and a verified scrape after it: what a wrong-password flood beside a
    working Prometheus looks like. Fails when the queue draining or the scrape's login ends the
    condition: then each round logs a start (and an end) again, 20 lines instead of 2."""
    caplog.set_level(logging.INFO, logger=SHARED_LOGGER)
    clock = FakeClock()
    server = serve(
        {"basic_auth_users": {"prometheus": cost12_hash}},
        limits=Limits(max_pending_password_checks=0),  # one check at a time, none waiting
        clock=clock,
    )
    prometheus = Client(server.port)
    auth = basic("prometheus", PASSWORD)
    assert prometheus.get("/healthz", headers=auth).status == 200
    for i in range(5):
        gate.close()
        checked = Client(server.port, source="127.0.0.2")
        checked.send(request(headers=basic("prometheus", f"guess {i}")))
        assert gate.running.wait(30)  # the verifier holds this guess: the queue is full
        refused = Client(server.port, source="127.0.0.2")
        assert refused.get(headers=basic("prometheus", f"other guess {i}")).status == 429
        gate.opened.set()
        assert read_response(checked.file).status == 401  # the queue is free again
        assert prometheus.get(headers=auth).status == 200
        clock.advance(HOLD_DOWN / 2)  # gaps shorter than the hold-down, each swept
        server.expire_overdue()
        for client in (checked, refused):
            client.close()
    assert shared_lines(caplog) == [
        "password checks queued to the limit (limits.max_pending_password_checks): answering "
        "429 to new ones while it is full",
        "basic auth failed from 127.0.0.2; further failures are counted and logged when they stop",
    ]
    caplog.clear()
    clock.advance(HOLD_DOWN / 2)  # the hold-down since the last round
    server.expire_overdue()
    assert shared_lines(caplog) == [
        "basic auth: no failure for 5 s; 5 failed attempts",
        "password check queue not full for 5 s; 5 requests were answered 429",
    ]
    assert gate.calls == 1 + 5
    prometheus.close()
