"""Units read from metric names (base units, as the names spell them) and values for people."""

from __future__ import annotations

import math
from enum import StrEnum


class Unit(StrEnum):
    TIMESTAMP = "timestamp"  # Unix seconds: shown as an age
    SECONDS = "seconds"
    BYTES = "bytes"
    RATIO = "ratio"
    COUNT = "count"


def unit_of(metric: str) -> Unit:
    name = metric.removesuffix("_total")
    if name.endswith("_timestamp_seconds"):
        return Unit.TIMESTAMP
    if name.endswith("_seconds"):
        return Unit.SECONDS
    if name.endswith("_bytes"):
        return Unit.BYTES
    if name.endswith("_ratio"):
        return Unit.RATIO
    return Unit.COUNT


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.5 h``, ``2.1 d``."""
    if not math.isfinite(seconds):
        return str(seconds)
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if seconds < 120:
        text = f"{seconds:.0f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"
    elif seconds < 7200:
        text = f"{seconds / 60:.0f} min"
    elif seconds < 172800:
        text = f"{seconds / 3600:.1f} h"
    else:
        text = f"{seconds / 86400:.1f} d"
    return sign + text


def size(count: float) -> str:
    """``512 B``, ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def number(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.4g}"


def shown(value: float, unit: Unit, now: float) -> str:
    """A sample's value as the page shows it; a timestamp as the time since it."""
    if unit is Unit.TIMESTAMP:
        return f"{duration(now - value)} ago"
    if unit is Unit.SECONDS:
        return duration(value)
    if unit is Unit.BYTES:
        return size(value)
    if unit is Unit.RATIO:
        return f"{value * 100:.1f} %"
    return number(value)


def compared(value: float, unit: Unit, now: float) -> float:
    """What a threshold is compared with: a timestamp's age, else the value itself."""
    return now - value if unit is Unit.TIMESTAMP else value
