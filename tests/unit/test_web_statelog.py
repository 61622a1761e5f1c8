"""A condition's log: one line as it starts, one with the count once it has been absent for the
hold-down, however often it comes and goes in between."""

from __future__ import annotations

import logging

import pytest

from pg_runbook_exporter.web.statelog import HOLD_DOWN, StateLog
from tests.support.webclient import FakeClock

END = "quiet for %(seconds)g s; %(count)d in all"


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "flood"]


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> tuple[StateLog, FakeClock]:
    caplog.set_level(logging.INFO, logger="flood")
    clock = FakeClock()
    return StateLog(logging.getLogger("flood"), END, clock), clock


def test_a_flood_with_gaps_shorter_than_the_hold_down_is_one_start_and_one_end(
    log: tuple[StateLog, FakeClock], caplog: pytest.LogCaptureFixture
) -> None:
    """Fails if a gap between events (settled meanwhile, as each tick does) ends the condition:
    then every event after a gap logs a start again."""
    state, clock = log
    for i in range(100):
        state.occurred("guess %d refused", i)
        clock.advance(HOLD_DOWN / 2)
        state.settle(clock())
    assert lines(caplog) == ["guess 0 refused"]
    clock.advance(HOLD_DOWN / 2)  # the hold-down since the last event
    state.settle(clock())
    state.settle(clock())
    assert lines(caplog) == ["guess 0 refused", "quiet for 5 s; 100 in all"]


def test_an_event_after_the_hold_down_ends_the_old_condition_before_starting_a_new_one(
    log: tuple[StateLog, FakeClock], caplog: pytest.LogCaptureFixture
) -> None:
    """Fails if the end is only noticed by ``settle``: the second flood would then be counted as
    part of the first, without a line of its own."""
    state, clock = log
    state.occurred("first")
    state.occurred("first again")
    clock.advance(HOLD_DOWN)
    state.occurred("second")
    assert lines(caplog) == ["first", "quiet for 5 s; 2 in all", "second"]
