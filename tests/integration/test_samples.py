"""Awkward values from a real PostgreSQL: converted exactly, escaped correctly, or refused clearly.

Every exposition here also passes ``promtool check metrics`` and the OpenMetrics parser.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import parser as openmetrics_parser
from psycopg import sql

from pg_runbook_exporter.config import Config, parse_config
from pg_runbook_exporter.errors import CheckError, FailureReason
from tests.conftest import MONITOR_PASSWORD, MONITOR_ROLE, PortalDb
from tests.support.collect import Scrape, collect
from tests.support.shapes import WRONG_SHAPE_ERRORS, WRONG_SHAPES

# The OpenMetrics parser carries no annotations; this binding gives it a type.
parse_openmetrics: Callable[[str], Iterator[Metric]] = (
    openmetrics_parser.text_string_to_metric_families
)

VALUES = """
checks:
  values:
    help: One value of every kind a check may return.
    sql: |
      SELECT NULL::float8 AS null_value,
             'NaN'::float8 AS nan_value,
             'NaN'::numeric AS numeric_nan_value,
             0.1::numeric AS decimal_value,
             12345678901234567890::numeric AS big_decimal_value,
             9223372036854775807::bigint AS bigint_value,
             true AS true_value,
             false AS false_value,
             '2024-01-02 03:04:05.5+00'::timestamptz AS timestamptz_value,
             '2024-01-02 03:04:05'::timestamp AS timestamp_value,
             '2024-01-02'::date AS date_value,
             interval '1 day 90 seconds' AS interval_value,
             1e400::numeric AS beyond_float_value,
             -1e400::numeric AS beyond_float_negative_value,
             1e-400::numeric AS below_float_value,
             'Infinity'::float8 AS infinity_value
    metrics:
      null_value: {name: v_null, type: gauge, help: NULL omits the sample.}
      nan_value: {name: v_nan, type: gauge, help: float8 NaN.}
      numeric_nan_value: {name: v_numeric_nan, type: gauge, help: numeric NaN.}
      decimal_value: {name: v_decimal, type: gauge, help: numeric.}
      big_decimal_value: {name: v_big_decimal, type: gauge, help: numeric past 2^64.}
      bigint_value: {name: v_bigint, type: gauge, help: bigint max.}
      true_value: {name: v_true, type: gauge, help: true is 1.}
      false_value: {name: v_false, type: gauge, help: false is 0.}
      timestamptz_value: {name: v_timestamptz, type: gauge, help: Unix seconds.}
      timestamp_value: {name: v_timestamp, type: gauge, help: Unix seconds taken as UTC.}
      date_value: {name: v_date, type: gauge, help: Unix seconds of midnight UTC.}
      interval_value: {name: v_interval, type: gauge, help: Seconds.}
      beyond_float_value: {name: v_beyond_float, type: gauge, help: Past float range.}
      beyond_float_negative_value: {name: v_beyond_float_negative, type: gauge, help: Negative.}
      below_float_value: {name: v_below_float, type: gauge, help: Under float precision.}
      infinity_value: {name: v_infinity, type: gauge, help: float8 Infinity.}
"""

EXPECTED_LINES = [
    "pgrb_v_nan NaN",
    "pgrb_v_numeric_nan NaN",
    "pgrb_v_decimal 0.1",
    "pgrb_v_big_decimal 1.2345678901234567e+19",
    "pgrb_v_bigint 9.223372036854776e+18",
    "pgrb_v_true 1.0",
    "pgrb_v_false 0.0",
    "pgrb_v_timestamptz 1.7041646455e+09",
    "pgrb_v_timestamp 1.704164645e+09",
    "pgrb_v_date 1.7041536e+09",
    "pgrb_v_interval 86490.0",
    "pgrb_v_beyond_float +Inf",
    "pgrb_v_beyond_float_negative -Inf",
    "pgrb_v_below_float 0.0",
    "pgrb_v_infinity +Inf",
]

# (case, SQL literal, the label value exported)
LABELS = [
    ("double_quote", """'say "hi"'""", 'say "hi"'),
    ("backslash", r"E'C:\\temp\\'", "C:\\temp\\"),
    ("newline", r"E'two\nlines'", "two\nlines"),
    ("carriage_return_and_tab", r"E'a\r\tb'", "a\r\tb"),
    ("unicode", "'grüße ✓'", "grüße ✓"),
    ("latin1_byte", "'caf' || chr(233)", "caf\ufffd"),  # one byte 0xe9 in SQL_ASCII
    ("null", "NULL", ""),
    ("braces_and_equals", """'x="1",y={2}'""", 'x="1",y={2}'),
]


def labels_config() -> Config:
    rows = "\nUNION ALL ".join(
        f"SELECT '{case}' AS \"case\", {literal}::text AS value, {i} AS n"
        for i, (case, literal, _) in enumerate(LABELS)
    )
    return parse_config(
        f"""
checks:
  labels:
    help: Label values that need escaping.
    sql: |
{"".join("      " + line + chr(10) for line in rows.splitlines())}
    labels: [case, value]
    metrics:
      n: {{name: label_case, type: gauge, help: The case's index.}}
""",
        source="labels.yaml",
    )


def collect_both(dsn: str, config: Config) -> tuple[Scrape, bytes]:
    """One collection: the parsed text exposition and the OpenMetrics body."""
    collected = collect(dsn, config)
    return collected.scrape, collected.openmetrics


def assert_promtool_accepts(text: str) -> None:
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text.encode(), capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == b""


@pytest.fixture
def sql_ascii_db(portal_db: PortalDb) -> Iterator[str]:
    """A SQL_ASCII database, where text holds any bytes, as the exporter's role sees it."""
    name = portal_db.name + "_ascii"
    portal_db.server.execute(
        sql.SQL(
            "CREATE DATABASE {} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        ).format(sql.Identifier(name))
    )
    try:
        yield portal_db.server.dsn(user=MONITOR_ROLE, password=MONITOR_PASSWORD, dbname=name)
    finally:
        portal_db.server.execute(
            sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
        )


def test_every_kind_of_value_is_exported_as_its_number(portal_db: PortalDb) -> None:
    scrape, openmetrics = collect_both(portal_db.monitor_dsn, parse_config(VALUES, source="v.yaml"))
    assert scrape.value("pgrb_check_success", check="values") == 1
    lines = scrape.text.splitlines()
    for line in EXPECTED_LINES:
        assert line in lines
    assert not [line for line in lines if line.startswith("pgrb_v_null")]
    assert scrape.value("pgrb_check_series", check="values") == len(EXPECTED_LINES)
    assert_promtool_accepts(scrape.text)
    assert len(list(parse_openmetrics(openmetrics.decode()))) > 0


def test_label_values_are_escaped_and_non_utf8_bytes_replaced(sql_ascii_db: str) -> None:
    scrape, openmetrics = collect_both(sql_ascii_db, labels_config())
    assert scrape.value("pgrb_check_success", check="labels") == 1
    exported = {
        dict(labels)["case"]: (dict(labels)["value"], value)
        for labels, value in scrape.series("pgrb_label_case").items()
    }
    assert exported == {case: (text, float(i)) for i, (case, _, text) in enumerate(LABELS)}
    assert r'value="two\nlines"' in scrape.text
    assert r'value="say \"hi\""' in scrape.text
    assert r'value="C:\\temp\\"' in scrape.text
    assert_promtool_accepts(scrape.text)
    families = {f.name: f for f in parse_openmetrics(openmetrics.decode())}
    om_values = {s.labels["case"]: s.labels["value"] for s in families["pgrb_label_case"].samples}
    assert om_values == {case: text for case, _, text in LABELS}


def test_results_of_the_wrong_shape_fail_their_check_only(portal_db: PortalDb) -> None:
    config = parse_config(WRONG_SHAPES, source="shapes.yaml")
    collected = collect(portal_db.monitor_dsn, config)
    for name, message in WRONG_SHAPE_ERRORS.items():
        assert collected.state(name).last_error == CheckError(FailureReason.INVALID_RESULT, message)
    scrape = collected.scrape
    for name in WRONG_SHAPE_ERRORS:
        assert scrape.value("pgrb_check_errors_total", check=name, reason="invalid_result") == 1
        assert scrape.value("pgrb_check_success", check=name) == 0
    assert scrape.value("pgrb_fine") == 7
    assert scrape.get("pgrb_renamed_a") is None  # no half of a result is exported
    assert_promtool_accepts(scrape.text)
