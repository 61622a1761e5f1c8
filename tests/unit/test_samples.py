"""A check's rows as samples: every label value capped at one length, a cut one marked."""

from __future__ import annotations

import hashlib

import pytest

from pg_runbook_exporter.config import LABEL_VALUE_MAX_LENGTH, load_config, parse_config
from pg_runbook_exporter.errors import ConfigError
from pg_runbook_exporter.samples import build_samples, capped
from pg_runbook_exporter.session import QueryResult

CHECK = """
settings:
  label_value_max_length: {value: %s, help: Cap.}
checks:
  sessions:
    help: Sessions.
    sql: SELECT application_name, usename, 1 AS n FROM pg_stat_activity
    labels: [application_name, usename]
    metrics:
      n: {name: sessions, type: gauge, help: Sessions.}
"""


def sha6(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:6]


def test_a_value_up_to_the_cap_is_kept_whole() -> None:
    assert capped("x" * 20, 20) == "x" * 20
    assert capped("", 8) == ""


def test_a_longer_value_keeps_its_start_and_ends_with_the_marker_and_its_hash() -> None:
    value = "portal-bff-" + "y" * 30
    cut = capped(value, 20)
    assert cut == "portal-bff-yy…" + sha6(value)
    assert len(cut) == 20


def test_two_long_values_sharing_their_start_stay_apart() -> None:
    first, second = "a" * 200 + "1", "a" * 200 + "2"
    assert capped(first, 50) != capped(second, 50)
    assert capped(first, 50)[:43] == capped(second, 50)[:43]


def test_every_label_of_a_row_is_capped_at_the_setting() -> None:
    config = parse_config(CHECK % 16)
    (check,) = config.checks
    app, user = "a'\\\n" * 2500, "u" * 16  # 10 KB of quotes, backslashes and newlines
    result = QueryResult(columns=("application_name", "usename", "n"), rows=[(app, user, 1)],
                         truncated=False)  # fmt: skip
    samples = build_samples(check, result, label_value_max_length=config.label_value_max_length)
    assert samples.rows[0].labels == (app[:9] + "…" + sha6(app), user)


def test_the_shipped_cap_is_120_characters() -> None:
    assert load_config().label_value_max_length == LABEL_VALUE_MAX_LENGTH == 120


@pytest.mark.parametrize("value", ["7", "0", "'long'", "12.5"])
def test_a_cap_that_leaves_no_room_before_the_marker_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(CHECK % value, source="q.yaml")
    assert caught.value.problems == [
        "q.yaml: settings.label_value_max_length.value: expected a whole number of at least 8"
    ]
