"""Content negotiation for /metrics: which of four bodies a request's headers ask for."""

from __future__ import annotations

import enum
from typing import Protocol

# Written out rather than imported: older prometheus_client releases name these constants
# differently, and the bodies served are exactly these two formats whatever the library default.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class Variant(enum.IntEnum):
    """One of the four bodies: the text format or OpenMetrics, each plain or gzip-compressed."""

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


class Bodies(Protocol):
    """What the server serves on /metrics: a body per variant (built at once, or compressed the
    first time a request asks), and the header lines (each ending in CRLF) its responses carry
    besides the usual ones."""

    @property
    def headers(self) -> bytes: ...

    def body(self, variant: Variant) -> bytes: ...


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


_OM_RANKS = {"application/openmetrics-text": 3, "application/*": 2, "*/*": 1}
_TEXT_RANKS = {"text/plain": 3, "text/*": 2, "*/*": 1}


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
