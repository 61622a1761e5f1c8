"""Scrape load: wrk for throughput and latency; paced scrapers for the database-load window."""

from __future__ import annotations

import gzip
import http.client
import logging
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

LUA = Path(__file__).resolve().parent / "wrk" / "prometheus.lua"

ACCEPT = (
    "application/openmetrics-text;version=1.0.0,"
    "application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_HEADERS = {
    "Accept": ACCEPT,
    "Accept-Encoding": "gzip",
    "User-Agent": "Prometheus/2.42.0",
    "X-Prometheus-Scrape-Timeout-Seconds": "10",
}

_LINE = re.compile(r"^BENCH (.*)$", re.MULTILINE)


@dataclass(frozen=True)
class WrkResult:
    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    non_2xx: int

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk(url: str, *, connections: int, seconds: float, timeout_s: float = 10.0) -> WrkResult:
    """One wrk run with Prometheus' headers over `connections` keep-alive connections."""
    threads = max(1, min(2, connections))
    proc = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            f"--timeout={int(timeout_s)}s",
            "-s",
            str(LUA),
            url,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds + timeout_s + 30,
    )
    match = _LINE.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    fields = dict(pair.split("=", 1) for pair in match.group(1).split())
    non_2xx = 0
    for line in proc.stdout.splitlines():
        if "Non-2xx or 3xx responses" in line:
            non_2xx = int(line.rsplit(":", 1)[1])
    errors = sum(
        int(fields[k]) for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
    )
    return WrkResult(
        connections=connections,
        requests=int(fields["requests"]),
        seconds=int(fields["duration_us"]) / 1e6,
        p50_ms=int(fields["p50_us"]) / 1000,
        p99_ms=int(fields["p99_us"]) / 1000,
        errors=errors,
        non_2xx=non_2xx,
    )


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes  # as sent (possibly gzip)

    def text(self) -> str:
        raw = self.body
        if self.headers.get("content-encoding", "") == "gzip":
            raw = gzip.decompress(raw)
        return raw.decode()


def fetch(
    host: str,
    port: int,
    *,
    path: str = "/metrics",
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Response:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    finally:
        conn.close()


def series_count(exposition: str) -> int:
    """Samples in a text or OpenMetrics exposition (comment and EOF lines excluded)."""
    return sum(1 for line in exposition.splitlines() if line and not line.startswith("#"))


class PacedScrapers:
    """`count` scrapers per target, each scraping every `interval` seconds, phases spread out.

    Stands in for Prometheus servers (an HA pair is two) while the database load is read.
    """

    def __init__(self, targets: dict[str, tuple[str, int]], *, count: int, interval: float):
        self._targets = targets
        self._count = count
        self._interval = interval
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.scrapes: dict[str, int] = dict.fromkeys(targets, 0)
        self.failures: dict[str, int] = dict.fromkeys(targets, 0)
        self._lock = threading.Lock()

    def _loop(self, name: str, host: str, port: int, phase: float) -> None:
        if self._stop.wait(phase):
            return
        conn = http.client.HTTPConnection(host, port, timeout=self._interval)
        next_at = time.monotonic()
        while not self._stop.is_set():
            ok = True
            try:
                conn.request("GET", "/metrics", headers=PROMETHEUS_HEADERS)
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=self._interval)
            with self._lock:
                self.scrapes[name] += 1
                self.failures[name] += 0 if ok else 1
            next_at += self._interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        conn.close()

    def __enter__(self) -> PacedScrapers:
        for name, (host, port) in self._targets.items():
            for i in range(self._count):
                phase = self._interval * i / self._count
                t = threading.Thread(
                    target=self._loop,
                    args=(name, host, port, phase),
                    daemon=True,
                    name=f"scraper-{name}-{i}",
                )
                t.start()
                self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self._interval + 5)
