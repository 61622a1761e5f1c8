"""A minute of the soak (`python -m tools.soak`) with one database restart and two terminations
of the exporter's session, under the full load: the invariants only, never a figure.

The restart window runs from just before `pg_ctl stop` until the exporter has a session on the
new server and says `pgrb_up 1`, plus 5 s, however long that takes (up to the soak's 120 s
bound), and a scrape may take 10 s: how fast the exporter reconnects or answers cannot make the
test fail. It fails when an authenticated scrape gets anything but a whole 200 outside that
window, when the exporter's log holds a traceback, or when 'lost the database' or 'connected …
again' is logged other than once per restart and per terminated session (a line per retry, or
none at all).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pg_runbook_exporter.pgserver.throwaway import ThrowawayServer
from tools.soak.run import Options, soak

MINUTE = Options(duration=60.0, restart_every=30.0, terminate_every=20.0, scrape_timeout=10.0)


@pytest.mark.fault
def test_a_minute_of_soak_with_one_restart_keeps_the_invariants(
    own_server: Callable[..., ThrowawayServer], tmp_path: Path
) -> None:
    verdict = soak(own_server(), MINUTE, tmp_path)
    summary = verdict.summary()
    assert verdict.faults.problems == [], summary
    assert len(verdict.faults.windows) == 1, summary
    assert [t.backends for t in verdict.faults.terminations] == [1, 1], summary
    assert verdict.load.scrapes > 0, summary
    assert verdict.failures_outside == [], summary
    assert verdict.log.tracebacks == 0, summary
    changes = verdict.faults.state_changes
    assert (verdict.log.lost, verdict.log.back) == (changes, changes), summary
