"""The soak's figures and its invariants, judged once the soak is over, and its printed summary."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from tools.soak.exporter import LogFigures
from tools.soak.faults import FaultFigures
from tools.soak.load import Failure, LoadFigures

MIB = 1024.0


@dataclass(frozen=True)
class Invariant:
    name: str
    held: bool
    detail: str


@dataclass(frozen=True)
class Verdict:
    load: LoadFigures
    faults: FaultFigures
    log: LogFigures
    rss: list[tuple[float, int]]  # (seconds since the load started, KiB)
    started: float  # time.monotonic() when the load started
    duration: float
    warm_up: float
    max_rss_spread_mib: float
    exit_status: int

    def in_window(self, failure: Failure) -> bool:
        return any(w.start <= failure.ended and failure.sent <= w.end for w in self.faults.windows)

    @property
    def failures_inside(self) -> list[Failure]:
        return [f for f in self.load.failures if self.in_window(f)]

    @property
    def failures_outside(self) -> list[Failure]:
        return [f for f in self.load.failures if not self.in_window(f)]

    @property
    def rss_after_warm_up(self) -> list[int]:
        return [kib for t, kib in self.rss if t >= self.warm_up]

    def invariants(self) -> list[Invariant]:
        log, changes = self.log, self.faults.state_changes
        outside = self.failures_outside
        found = [
            Invariant(
                "no failed authenticated scrape outside the restart windows",
                not outside and self.load.scrapes > 0,
                f"{len(outside)} failed outside, {self.load.scrapes} served"
                + "".join(f"; {self._describe(f)}" for f in outside[:5]),
            ),
            Invariant(
                "no traceback in the exporter's log", log.tracebacks == 0, f"{log.tracebacks}"
            ),
            Invariant(
                "one log line per state change",
                log.lost == changes and log.back == changes,
                f"lost {log.lost}, back {log.back}, state changes {changes}",
            ),
            Invariant(
                "no wrong password served",
                self.load.flood["200"] == 0,
                f"{self.load.flood['200']} answered 200",
            ),
            Invariant(
                "no password in the exporter's log",
                log.leaked_secrets == 0,
                f"{log.leaked_secrets} occurrences",
            ),
            Invariant(
                "every fault ran and the exporter came back after each",
                not self.faults.problems,
                "; ".join(self.faults.problems) or "yes",
            ),
            Invariant(
                "the exporter exited 0 on SIGTERM", self.exit_status == 0, f"{self.exit_status}"
            ),
        ]
        samples = self.rss_after_warm_up
        if samples:
            spread = (max(samples) - min(samples)) / MIB
            found.append(
                Invariant(
                    f"RSS flat within {self.max_rss_spread_mib:g} MiB after the warm-up",
                    spread <= self.max_rss_spread_mib,
                    f"max - min {spread:.2f} MiB over {len(samples)} samples",
                )
            )
        return found

    @property
    def passed(self) -> bool:
        return all(i.held for i in self.invariants())

    def _describe(self, failure: Failure) -> str:
        return (
            f"{failure.client} at {failure.sent - self.started:.1f} s: {failure.what} "
            f"after {failure.ended - failure.sent:.2f} s"
        )

    def summary(self) -> str:
        load, faults, log = self.load, self.faults, self.log
        lines = [f"duration: {self.duration:.0f} s of load"]
        backs = [w.exporter_back - w.start for w in faults.windows if w.exporter_back is not None]
        lines.append(
            f"faults: {len(faults.windows)} restarts (pg_ctl stop -m fast, start), "
            f"{len(faults.terminations)} pg_terminate_backend rounds ending "
            f"{sum(t.backends for t in faults.terminations)} exporter sessions"
            + (
                f"; restart windows {min(backs):.1f}-{max(backs):.1f} s from stop to the "
                f"exporter back (then a margin)"
                if backs
                else ""
            )
        )
        latencies = sorted(load.latencies)
        if latencies:
            p50 = latencies[len(latencies) // 2] * 1000
            p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
            latency = (
                f"; latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1] * 1000:.0f} ms"
            )
        else:
            latency = ""
        lines.append(
            f"authenticated scrapes: {load.scrapes:,} served; failed: "
            f"{len(self.failures_inside)} inside restart windows, "
            f"{len(self.failures_outside)} outside{latency}"
        )
        for failure in load.failures[:10]:
            where = "inside" if self.in_window(failure) else "OUTSIDE"
            lines.append(f"  failed ({where}): {self._describe(failure)}")
        lines.append("wrong-password flood: " + _counts(load.flood))
        held = load.idle_open_samples or [0]
        lines.append(
            f"idle sockets: open at once min {min(held)}, mean {statistics.mean(held):.0f}, "
            f"max {max(held)}; opened {load.idle_opened:,} in all, connect errors "
            f"{load.idle_connect_errors}; ended: " + _counts(load.idle_ended)
        )
        samples = self.rss_after_warm_up
        if samples:
            lines.append(
                f"exporter RSS (MiB, 1 s samples after a {self.warm_up:g} s warm-up): "
                f"start {samples[0] / MIB:.1f}, end {samples[-1] / MIB:.1f}, "
                f"min {min(samples) / MIB:.1f}, max {max(samples) / MIB:.1f}, "
                f"mean {statistics.mean(samples) / MIB:.1f}"
            )
        elif self.rss:
            lines.append(f"exporter RSS: no sample after the {self.warm_up:g} s warm-up")
        lines.append(
            f"exporter log: {log.lines} lines ({_counts(log.by_level)}); "
            f"'lost the database' {log.lost}, 'connected again' {log.back}, for "
            f"{faults.state_changes} state changes; tracebacks {log.tracebacks}"
        )
        for message, count in log.others.most_common(10):
            lines.append(f"  {count} x {message}")
        lines.append("invariants:")
        for invariant in self.invariants():
            mark = "PASS" if invariant.held else "FAIL"
            lines.append(f"  {mark} {invariant.name} ({invariant.detail})")
        lines.append("RESULT: " + ("PASS" if self.passed else "FAIL"))
        return "\n".join(lines)


def _counts(counter: object) -> str:
    assert isinstance(counter, dict)
    return ", ".join(f"{key} x{value:,}" for key, value in sorted(counter.items())) or "none"
