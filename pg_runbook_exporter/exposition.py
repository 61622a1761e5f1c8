"""The metrics exposition, rendered once per completed collection and served as bytes.

A scrape never renders: the collection side calls `render()` after every completed check run and
hands the result to the web server, which only picks one of the four pre-built bodies by the
request's `Accept` and `Accept-Encoding` headers (`negotiate()`).
"""

from __future__ import annotations

import enum
import gzip
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import exposition as text_format
from prometheus_client.openmetrics import exposition as openmetrics_format
from prometheus_client.registry import Collector

# Written out rather than imported: older prometheus_client releases name these constants
# differently, and the bodies below are exactly these two formats whatever the library default.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

# Measured on 300 / 2,000 series with varied values (31 KB / 210 KB of text): level 1 takes 70 us /
# 0.8 ms and yields 18% of the input, level 6 takes 2.5x as long for 15%. Rendering the same
# registry takes 5 / 34 ms, so either is cheap; the faster one keeps a check run's tail short.
GZIP_LEVEL = 1


class Variant(enum.IntEnum):
    """One of the four bodies; the value indexes `Exposition.bodies`."""

    TEXT = 0
    TEXT_GZIP = 1
    OPENMETRICS = 2
    OPENMETRICS_GZIP = 3

    @property
    def content_type(self) -> str:
        return OPENMETRICS_CONTENT_TYPE if self >= Variant.OPENMETRICS else TEXT_CONTENT_TYPE

    @property
    def gzipped(self) -> bool:
        return self in (Variant.TEXT_GZIP, Variant.OPENMETRICS_GZIP)


@dataclass(frozen=True)
class Exposition:
    """Prometheus text 0.0.4 and OpenMetrics 1.0.0 bodies, each plain and gzip-compressed."""

    text: bytes
    text_gzip: bytes
    openmetrics: bytes
    openmetrics_gzip: bytes

    @property
    def bodies(self) -> tuple[bytes, bytes, bytes, bytes]:
        """The bodies in `Variant` order."""
        return (self.text, self.text_gzip, self.openmetrics, self.openmetrics_gzip)

    def body(self, variant: Variant) -> bytes:
        return self.bodies[variant]


# The OpenMetrics module carries no annotations; this binding gives its one call a type.
_generate_openmetrics: Callable[[Collector], bytes] = openmetrics_format.generate_latest


def _compress(data: bytes) -> bytes:
    # mtime=0 keeps the output a pure function of the input, so equal renders compress equally.
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def render(registry: Collector) -> Exposition:
    """Collect `registry` twice (once per format) and build all four bodies."""
    text = text_format.generate_latest(registry)
    openmetrics = _generate_openmetrics(registry)
    return Exposition(
        text=text,
        text_gzip=_compress(text),
        openmetrics=openmetrics,
        openmetrics_gzip=_compress(openmetrics),
    )


def _empty() -> Exposition:
    openmetrics = b"# EOF\n"
    return Exposition(
        text=b"",
        text_gzip=_compress(b""),
        openmetrics=openmetrics,
        openmetrics_gzip=_compress(openmetrics),
    )


EMPTY = _empty()
"""Served before the first collection completes: valid, and without a single sample."""


def _q_value(params: str) -> float:
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return min(max(q, 0.0), 1.0)
    return 1.0


def _media_preferences(accept: str) -> tuple[float, float]:
    """The q-values the client gives OpenMetrics and the text format.

    The most specific matching range decides (`application/openmetrics-text` over `application/*`
    over `*/*`); among equally specific ranges, such as Prometheus' two OpenMetrics versions, the
    highest q counts.
    """
    best_om = (0, 0.0)
    best_text = (0, 0.0)
    for part in accept.split(","):
        media, _, params = part.partition(";")
        media = media.strip().lower()
        om_rank = _OM_RANKS.get(media, 0)
        text_rank = _TEXT_RANKS.get(media, 0)
        if not om_rank and not text_rank:
            continue
        q = _q_value(params)
        if om_rank:
            best_om = max(best_om, (om_rank, q))
        if text_rank:
            best_text = max(best_text, (text_rank, q))
    return best_om[1], best_text[1]


_OM_RANKS = {"application/openmetrics-text": 3, "application/*": 2, "*/*": 1}
_TEXT_RANKS = {"text/plain": 3, "text/*": 2, "*/*": 1}


def _accepts_gzip(accept_encoding: str) -> bool:
    explicit: float | None = None
    wildcard = 0.0
    for part in accept_encoding.split(","):
        coding, _, params = part.partition(";")
        coding = coding.strip().lower()
        if coding in ("gzip", "x-gzip"):
            explicit = max(explicit or 0.0, _q_value(params))
        elif coding == "*":
            wildcard = _q_value(params)
    return (wildcard if explicit is None else explicit) > 0.0


def negotiate(accept: str, accept_encoding: str) -> Variant:
    """Pick the body for a request's `Accept` and `Accept-Encoding` header values.

    OpenMetrics only when the client prefers it strictly over the text format (a bare `*/*` or no
    header gets text, which every scraper reads); gzip whenever it is acceptable at all, since it
    is already compressed and smaller.
    """
    q_om, q_text = _media_preferences(accept) if accept else (0.0, 1.0)
    openmetrics = q_om > 0.0 and q_om > q_text
    gzipped = bool(accept_encoding) and _accepts_gzip(accept_encoding)
    return Variant(2 * openmetrics + gzipped)
