"""The bodies of an exposition: gzip bodies built only for the variants scrapers ask for."""

from __future__ import annotations

import gzip

from pg_runbook_exporter.exposition import Fragment, Variant, assemble


def test_a_gzip_body_scrapers_asked_for_is_built_with_the_next_exposition_and_no_other() -> None:
    """Fails if the next exposition leaves the asked-for body to the scrape path (None below),
    or builds the text gzip body nobody asked for."""
    kept = Fragment(b"pgrb_a 1\n", b"pgrb_a 1\n")
    first = assemble([kept], b"pgrb_up 1\n", b"pgrb_up 1\n", generation=1)
    first.body(Variant.OPENMETRICS_GZIP)  # a scrape as Prometheus sends it
    second = assemble([kept], b"pgrb_up 0\n", b"pgrb_up 0\n", generation=2)
    second.prepare_like(first)
    built_text, built_openmetrics = second._gzip
    assert built_text is None
    assert built_openmetrics is not None
    plain = b"pgrb_a 1\npgrb_up 0\n# EOF\n"
    assert gzip.decompress(built_openmetrics) == second.openmetrics == plain
    assert second.body(Variant.OPENMETRICS_GZIP) is built_openmetrics  # the scrape only reads
