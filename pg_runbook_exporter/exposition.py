"""The metrics exposition, assembled from rendered fragments once per snapshot and served as bytes.

A scrape never renders: the collection side renders a check's fragment when the check completes a
run, `assemble()`s the bodies from the fragments once per snapshot and hands them to the web
server, which only picks one of the four pre-built bodies by the request's `Accept` and
`Accept-Encoding` headers (`web.negotiation.negotiate()`).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Exposition:
    """Prometheus text 0.0.4 and OpenMetrics 1.0.0 bodies, each plain and gzip-compressed."""

    text: bytes
    text_gzip: bytes
    openmetrics: bytes
    openmetrics_gzip: bytes
    generation: int = 0  # counts renders; 0 before the first

    @property
    def headers(self) -> bytes:
        """The generation header line, so a client can match /metrics with /status."""
        return generation_header(self.generation)

    @property
    def bodies(self) -> tuple[bytes, bytes, bytes, bytes]:
        """The bodies in `Variant` order."""
        return (self.text, self.text_gzip, self.openmetrics, self.openmetrics_gzip)

    def body(self, variant: Variant) -> bytes:
        return self.bodies[variant]


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


@dataclass(frozen=True)
class Fragment:
    """A run of whole lines of the exposition in both formats, each also as its own gzip member.

    Gzip members concatenated are one valid gzip stream whose content is the concatenation of
    theirs (RFC 1952), so a body is its fragments' members joined: a fragment is compressed once,
    when it is rendered, however often the bodies around it change.
    """

    text: bytes
    openmetrics: bytes
    text_gzip: bytes
    openmetrics_gzip: bytes

    @classmethod
    def of(cls, text: bytes, openmetrics: bytes) -> Fragment:
        return cls(text, openmetrics, _compress(text), _compress(openmetrics))


def assemble(
    fragments: Sequence[Fragment], text: bytes, openmetrics: bytes, generation: int = 0
) -> Exposition:
    """The four bodies of `fragments` followed by one last part, given plain and compressed here.

    The last part carries OpenMetrics' `# EOF`, so the fragments before it are reused as they are.
    """
    last = Fragment.of(text, openmetrics + EOF)
    parts = (*fragments, last)
    return Exposition(
        text=b"".join(p.text for p in parts),
        text_gzip=b"".join(p.text_gzip for p in parts),
        openmetrics=b"".join(p.openmetrics for p in parts),
        openmetrics_gzip=b"".join(p.openmetrics_gzip for p in parts),
        generation=generation,
    )


def render(collector: Collector, generation: int = 0) -> Exposition:
    """Collect `collector` twice (once per format) and build all four bodies in one part."""
    return assemble((), *formats(collector), generation)


EMPTY = assemble((), b"", b"")
"""Served before the first collection completes: valid, and without a single sample."""
