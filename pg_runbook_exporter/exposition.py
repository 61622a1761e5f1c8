"""The metrics exposition, assembled from rendered fragments once per snapshot and served as bytes.

A scrape never renders: the collection side renders a check's fragment when the check completes a
run, `assemble()`s the plain bodies from the fragments once per snapshot and hands them to the web
server, which picks a body by the request's `Accept` and `Accept-Encoding` headers
(`web.negotiation.negotiate()`). A gzip body is built with the plain ones when scrapers asked for
it before (compressing only the fragments never compressed); only the first scrape ever of a
gzip variant builds it itself.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Sequence

from prometheus_client import exposition as text_format
from prometheus_client.openmetrics import exposition as openmetrics_format
from prometheus_client.registry import Collector

from pg_runbook_exporter.web.negotiation import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    Variant,
    negotiate,
)

__all__ = [
    "EMPTY",
    "GENERATION_HEADER",
    "OPENMETRICS_CONTENT_TYPE",
    "TEXT_CONTENT_TYPE",
    "Exposition",
    "Fragment",
    "Variant",
    "assemble",
    "formats",
    "negotiate",
    "render",
]

# Measured on 300 / 2,000 series with varied values (31 KB / 210 KB of text): level 1 takes 70 us /
# 0.8 ms and yields 18% of the input, level 6 takes 2.5x as long for 15%. Rendering the same
# registry takes 5 / 34 ms, so either is cheap; the faster one keeps a check run's tail short.
GZIP_LEVEL = 1
# The response header that carries a render's snapshot generation: /metrics, /status and
# /status.json of one generation were rendered from one snapshot.
GENERATION_HEADER = "X-Snapshot-Generation"


def generation_header(generation: int) -> bytes:
    return f"{GENERATION_HEADER}: {generation}\r\n".encode()


class Exposition:
    """Prometheus text 0.0.4 and OpenMetrics 1.0.0 bodies, each plain and gzip-compressed.

    The plain bodies are joined when the exposition is made; a gzip body from its parts' members
    (each compressed once) when `prepare_like` finds that scrapers asked for it from the exposition
    before, else by the first scrape that asks. Scrapers that all ask for one variant (Prometheus:
    OpenMetrics, gzip) never cost the other three, and after their first scrape they only read.
    """

    __slots__ = ("_gzip", "_parts", "generation", "openmetrics", "text")

    def __init__(self, parts: Sequence[Fragment], generation: int = 0) -> None:
        self._parts = tuple(parts)
        self.text = b"".join(p.text for p in self._parts)
        self.openmetrics = b"".join(p.openmetrics for p in self._parts)
        self.generation = generation  # counts renders; 0 before the first
        self._gzip: list[bytes | None] = [None, None]

    @property
    def headers(self) -> bytes:
        """The generation header line, so a client can match /metrics with /status."""
        return generation_header(self.generation)

    def _gzipped(self, openmetrics: bool) -> bytes:
        # Two threads asking at once both build the same bytes; either result is right.
        body = self._gzip[openmetrics]
        if body is None:
            body = b"".join(p.member(openmetrics) for p in self._parts)
            self._gzip[openmetrics] = body
        return body

    def prepare_like(self, previous: Exposition) -> None:
        """Build now (on the collection side) the gzip bodies `previous` was asked for."""
        for openmetrics in (False, True):
            if previous._gzip[openmetrics] is not None:
                self._gzipped(openmetrics)

    @property
    def text_gzip(self) -> bytes:
        return self._gzipped(False)

    @property
    def openmetrics_gzip(self) -> bytes:
        return self._gzipped(True)

    def body(self, variant: Variant) -> bytes:
        if variant.gzipped:
            return self._gzipped(variant >= Variant.OPENMETRICS)
        return self.openmetrics if variant >= Variant.OPENMETRICS else self.text


# The OpenMetrics module carries no annotations; this binding gives its one call a type.
_generate_openmetrics: Callable[[Collector], bytes] = openmetrics_format.generate_latest
EOF = b"# EOF\n"


def _compress(data: bytes) -> bytes:
    # mtime=0 keeps the output a pure function of the input, so equal renders compress equally.
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def formats(collector: Collector) -> tuple[bytes, bytes]:
    """What `collector` yields in the text format and in OpenMetrics, the latter without `# EOF`."""
    text = text_format.generate_latest(collector)
    openmetrics = _generate_openmetrics(collector)
    return text, openmetrics.removesuffix(EOF)


class Fragment:
    """A run of whole lines of the exposition in both formats, each also as its own gzip member.

    Gzip members concatenated are one valid gzip stream whose content is the concatenation of
    theirs (RFC 1952), so a gzip body is its fragments' members joined: a fragment is compressed
    once, the first time a body needs it, however often the bodies around it change.
    """

    __slots__ = ("_members", "openmetrics", "text")

    def __init__(self, text: bytes, openmetrics: bytes) -> None:
        self.text = text
        self.openmetrics = openmetrics
        self._members: list[bytes | None] = [None, None]

    def member(self, openmetrics: bool) -> bytes:
        """The gzip member of the OpenMetrics (else the text) lines."""
        member = self._members[openmetrics]
        if member is None:
            member = _compress(self.openmetrics if openmetrics else self.text)
            self._members[openmetrics] = member
        return member


def assemble(
    fragments: Sequence[Fragment], text: bytes, openmetrics: bytes, generation: int = 0
) -> Exposition:
    """The bodies of `fragments` followed by one last part.

    The last part carries OpenMetrics' `# EOF`, so the fragments before it are reused as they are.
    """
    return Exposition((*fragments, Fragment(text, openmetrics + EOF)), generation)


def render(collector: Collector, generation: int = 0) -> Exposition:
    """Collect `collector` twice (once per format) and build all four bodies in one part."""
    return assemble((), *formats(collector), generation)


EMPTY = assemble((), b"", b"")
"""Served before the first collection completes: valid, and without a single sample."""
