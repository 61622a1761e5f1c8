"""The few Prometheus template functions the rules' annotations use, rendered as Prometheus does.

The generated promtool tests expect each alert's annotations rendered from the rules' own
templates, so a broken description or link fails ``promtool test rules``.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Callable, Mapping


def _g4(value: float) -> str:
    """Go's ``%.4g`` (same rules as Python's for the values used here)."""
    return f"{value:.4g}"


def _go_float(value: float) -> str:
    """Go's ``%v`` of a float64: shortest digits, exponent from 1e21 or below 1e-4."""
    if float(value).is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(float(value))


def _humanize(value: float) -> str:
    if value == 0 or math.isnan(value) or math.isinf(value):
        return _g4(value)
    prefix = ""
    if abs(value) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(value) < 1000:
                break
            prefix, value = p, value / 1000
        return _g4(value) + prefix
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(value) >= 1:
            break
        prefix, value = p, value * 1000
    return _g4(value) + prefix


def _humanize1024(value: float) -> str:
    if abs(value) <= 1:
        return _g4(value)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(value) < 1024:
            break
        prefix, value = p, value / 1024
    return _g4(value) + prefix


def _humanize_duration(value: float) -> str:
    if value == 0:
        return f"{_g4(value)}s"
    if value < 1:
        raise ValueError(f"sub-second duration {value}: not rendered here")
    whole = int(value)
    days, hours = whole // 86400, whole // 3600 % 24
    minutes, seconds = whole // 60 % 60, whole % 60
    if days:
        return f"{days}d {hours}h {minutes}m {seconds}s"
    if hours:
        return f"{hours}h {minutes}m {seconds}s"
    if minutes:
        return f"{minutes}m {seconds}s"
    return f"{_g4(value)}s"


FUNCTIONS: dict[str | None, Callable[[float], str]] = {
    None: _go_float,
    "humanize": _humanize,
    "humanize1024": _humanize1024,
    "humanizeDuration": _humanize_duration,
    "humanizePercentage": lambda v: f"{_g4(v * 100)}%",
}
_ACTION = re.compile(r"\{\{\s*\$(labels\.(\w+)|value)\s*(?:\|\s*(\w+)\s*)?\}\}")
# {{ with printf "QUERY" $labels.a … | query }}{{ with first . }}BODY{{ end }}{{ end }}: BODY
# rendered with the first series the query returns, nothing when it returns none
_QUERY = re.compile(
    r'\{\{\s*with printf "((?:[^"\\]|\\.)*)"(?:\s+\$labels\.\w+)*\s*\|\s*query\s*\}\}'
    r"\{\{\s*with first \.\s*\}\}(.*?)\{\{\s*end\s*\}\}\{\{\s*end\s*\}\}",
    re.DOTALL,
)
_FOUND = re.compile(r"\{\{\s*\.(Labels\.(\w+)|Value)\s*(?:\|\s*(\w+)\s*)?\}\}")
Series = tuple[Mapping[str, str], float]  # a query's first result: its labels and value


def _queried(match: re.Match[str], found: Mapping[str, Series]) -> str:
    """A query block, rendered with the series ``found`` holds for the metric it queries."""
    metric = re.search(r"[a-zA-Z_:][\w:]*(?=\{)", match.group(1))
    if metric is None:
        raise ValueError(f"no metric in the query {match.group(1)!r}")
    if metric.group() not in found:
        return ""
    labels, value = found[metric.group()]

    def action(inner: re.Match[str]) -> str:
        if inner.group(2) is not None:
            return labels.get(inner.group(2), "")
        return FUNCTIONS[inner.group(3)](value)

    return _FOUND.sub(action, match.group(2))


def render(
    template: str,
    *,
    labels: Mapping[str, str],
    value: float,
    found: Mapping[str, Series] | None = None,
) -> str:
    """``template`` as Prometheus renders it for an alert with ``labels`` and ``value``; a
    query block with what the query finds (``found``: metric → its first series)."""
    template = _QUERY.sub(lambda m: _queried(m, found or {}), template)

    def action(match: re.Match[str]) -> str:
        function = match.group(3)
        if match.group(2) is not None:
            text = labels.get(match.group(2), "")
            if function == "urlquery":
                return urllib.parse.quote_plus(text, safe="")
            if function is not None:
                raise ValueError(f"{function} on a label is not rendered here: {template}")
            return text
        if function not in FUNCTIONS:
            raise ValueError(f"{function} on $value is not rendered here: {template}")
        return FUNCTIONS[function](value)

    rendered = _ACTION.sub(action, template)
    if "{{" in rendered or re.search(r"\{ *\$", rendered):
        raise ValueError(f"a template action not rendered here: {rendered}")
    return rendered
