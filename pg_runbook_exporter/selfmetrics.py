"""The metrics the exporter exports about itself: one table for the collector and the docs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class SelfMetric:
    name: str  # without the namespace
    type: Literal["gauge", "counter"]
    labels: tuple[str, ...]
    help: str


UP = SelfMetric(
    "up", "gauge", (), "1 when the database answered the exporter's last attempt, else 0."
)
BUILD_INFO = SelfMetric(
    "build_info", "gauge", ("version", "python_version"), "Exporter version; the value is always 1."
)
CHECK_SUCCESS = SelfMetric(
    "check_success",
    "gauge",
    ("check",),
    "1 when the check's last run succeeded, 0 when it failed; absent while skipped.",
)
CHECK_SKIPPED = SelfMetric(
    "check_skipped",
    "gauge",
    ("check", "reason"),
    "1 while the check cannot run here (reason: version, standby, extension, relation, or "
    "unconfigured: a backup check without --backup.dir).",
)
CHECK_DURATION = SelfMetric(
    "check_duration_seconds", "gauge", ("check",), "Wall time of the check's last run."
)
CHECK_LAST_SUCCESS = SelfMetric(
    "check_last_success_timestamp_seconds",
    "gauge",
    ("check",),
    "Unix time of the check's last successful run.",
)
CHECK_INTERVAL = SelfMetric(
    "check_interval_seconds", "gauge", ("check",), "How often the check runs."
)
CHECK_ERRORS = SelfMetric(
    "check_errors_total",
    "counter",
    ("check", "reason"),
    "Failed runs of the check by reason (timeout, lock_timeout, permission, connection, "
    "invalid_result, other).",
)
CHECK_SERIES = SelfMetric(
    "check_series",
    "gauge",
    ("check",),
    "Series the check exports now (0 once stale values are dropped).",
)
CHECK_TRUNCATED = SelfMetric(
    "check_truncated",
    "gauge",
    ("check",),
    "1 when the check returned more rows than its max_series and the rest were dropped.",
)
CHECK_RUNS = SelfMetric(
    "check_runs_total",
    "counter",
    ("check",),
    "Completed runs of the check: succeeded, failed or skipped.",
)
CHECK_RENDERS = SelfMetric(
    "check_renders_total",
    "counter",
    ("check",),
    "Times the check's series were rendered into the exposition: once per completed run (and "
    "when its last values go stale), never per scrape or per other check's run.",
)

PER_CHECK = (
    CHECK_SUCCESS,
    CHECK_SKIPPED,
    CHECK_DURATION,
    CHECK_LAST_SUCCESS,
    CHECK_INTERVAL,
    CHECK_ERRORS,
    CHECK_SERIES,
    CHECK_TRUNCATED,
    CHECK_RUNS,
    CHECK_RENDERS,
)
"""The families with a series per check, in the order they are exported."""

ALL = (
    UP,
    BUILD_INFO,
    *PER_CHECK,
)
NAMES = tuple(m.name for m in ALL)
