"""A check's rows turned into samples: label values and one number per declared metric."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pg_runbook_exporter.config import LABEL_VALUE_MAX_LENGTH, Check
from pg_runbook_exporter.errors import CheckError, FailureReason
from pg_runbook_exporter.session import QueryResult


@dataclass(frozen=True)
class Row:
    labels: tuple[str, ...]
    values: tuple[float | None, ...]  # one per metric of the check, in declaration order


@dataclass(frozen=True)
class Samples:
    rows: tuple[Row, ...]
    truncated: bool = False  # the check returned more rows than its max_series

    @property
    def series(self) -> int:
        return sum(v is not None for row in self.rows for v in row.values)


def to_number(value: Any) -> float | None:
    """A column value as a float; None stays None (the sample is omitted)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, float | Decimal):
        return float(value)
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return aware.timestamp()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    raise TypeError(f"{type(value).__name__} value {str(value)[:40]!r} is not a number")


# What ends a cut value: "…" and 6 hex digits of a hash of the whole value (so cut values that
# share a prefix stay apart). config.LABEL_VALUE_MIN_LENGTH leaves at least one character before.
MARK = "…"
HASH_DIGITS = 6


def capped(value: str, max_length: int) -> str:
    """``value``, or its first characters, "…" and a hash of it when longer than ``max_length``."""
    if len(value) <= max_length:
        return value
    digest = hashlib.sha256(value.encode("utf-8", errors="surrogatepass")).hexdigest()
    keep = max_length - len(MARK) - HASH_DIGITS
    return value[:keep] + MARK + digest[:HASH_DIGITS]


def label_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_samples(
    check: Check,
    result: QueryResult,
    *,
    label_value_max_length: int = LABEL_VALUE_MAX_LENGTH,
) -> Samples:
    """Validate the result's shape against the check and convert every row; every label value
    is capped at ``label_value_max_length`` characters (see ``capped``)."""
    declared = list(check.labels) + [m.column for m in check.metrics]
    extra = [c for c in result.columns if c not in declared]
    missing_labels = [c for c in check.labels if c not in result.columns]
    missing_metrics = [m.column for m in check.metrics if m.column not in result.columns]
    if (
        extra
        or missing_labels
        or missing_metrics
        or len(set(result.columns)) != len(result.columns)
    ):
        # Named like config problems, so the fix in queries.yaml is obvious.
        where = f"checks.{check.name}"
        parts = [f"{where}.labels: column {c!r} is not returned by the SQL" for c in missing_labels]
        parts += [f"{where}.metrics.{c}: column not returned by the SQL" for c in missing_metrics]
        parts += [
            f"{where}.sql: returns column {c!r}, declared in neither labels nor metrics"
            for c in extra
        ]
        if not parts:
            parts.append(f"{where}.sql: returns a column name twice")
        raise CheckError(FailureReason.INVALID_RESULT, "; ".join(parts))
    label_at = [result.columns.index(name) for name in check.labels]
    value_at = [result.columns.index(m.column) for m in check.metrics]
    rows = []
    seen: set[tuple[str, ...]] = set()
    for raw in result.rows:
        labels = tuple(capped(label_text(raw[i]), label_value_max_length) for i in label_at)
        if labels in seen:
            shown = ", ".join(f"{n}={v!r}" for n, v in zip(check.labels, labels, strict=True))
            raise CheckError(
                FailureReason.INVALID_RESULT, f"two rows have the same labels ({shown})"
            )
        seen.add(labels)
        values = []
        for metric, i in zip(check.metrics, value_at, strict=True):
            try:
                values.append(to_number(raw[i]))
            except TypeError as exc:
                raise CheckError(
                    FailureReason.INVALID_RESULT, f"column {metric.column}: {exc}"
                ) from None
        rows.append(Row(labels=labels, values=tuple(values)))
    return Samples(rows=tuple(rows), truncated=result.truncated)
