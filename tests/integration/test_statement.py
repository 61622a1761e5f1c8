"""The server sends a check no more than it keeps: rows stop at the cap, results stay the same.

The memory tests run the real ``run`` command twice on the same portal database, once with a
check at its cap and once with the same check far past it, and compare the two processes' peak
RSS (``VmHWM``) once every check has run: the difference is what the big result cost. A bound
on memory, not on time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pg_runbook_exporter.config import LABEL_VALUE_MAX_LENGTH, parse_config
from pg_runbook_exporter.errors import FailureReason
from pg_runbook_exporter.samples import capped
from pg_runbook_exporter.statement import bounded
from tests.conftest import MONITOR_ROLE, PortalDb
from tests.support.collect import Scrape, collect_once, pipeline_for, state_of
from tests.support.stack import ExporterProcess, wait_until
from tests.support.unvetted import unvetted_config

MIB = 1024 * 1024
# Generous: the two processes differ by what their one run of the check costs, nothing else.
RSS_BOUND = 30 * MIB
ROWS = 3_000_000
CAP = 1000


def _kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    match = re.search(rf"^{field}:\s+(\d+) kB$", status, flags=re.MULTILINE)
    assert match, f"no {field} in /proc/{pid}/status"
    return int(match.group(1)) * 1024


def _config(path: Path, sql: str, *, max_series: int = CAP) -> Path:
    # Every line of the SQL indented into the YAML block scalar.
    body = "\n".join("      " + line for line in sql.strip().splitlines())
    path.write_text(
        f"""
checks:
  big:
    help: A check whose result may be far past its cap.
    interval: 10m
    timeout: 60s
    max_series: {max_series}
    sql: |
{body}
    labels: [k]
    metrics: {{v: {{name: big_value, type: gauge, help: A value.}}}}
""",
        encoding="utf-8",
    )
    return path


def _peak_and_scrape(workdir: Path, db: PortalDb, sql: str) -> tuple[int, bytes]:
    """The peak RSS of ``run`` with the check ``sql`` once it has run, and its /metrics body."""
    workdir.mkdir()
    exporter = ExporterProcess(
        workdir, database_url=db.monitor_dsn, config=_config(workdir / "q.yaml", sql)
    )
    try:
        # /readyz answers once the run is recorded; /metrics once it is rendered, just after.
        def ran() -> bytes | None:
            body = exporter.scrape().encode()
            return body if b'pgrb_check_success{check="big"}' in body else None

        body = wait_until(ran, what="the check's run in /metrics", logs=exporter.log)
        return _kib(exporter.pid, "VmHWM"), body
    finally:
        exporter.stop()


def test_a_check_returning_millions_of_rows_costs_no_more_memory_than_one_at_its_cap(
    portal_db: PortalDb, tmp_path: Path
) -> None:
    """Fails when the rows past the cap reach the exporter: on main (fetchmany after libpq had
    received all 3,000,000 rows) the peak was 162 MiB above the check at its cap."""
    rows = "SELECT i::text AS k, i AS v FROM generate_series(1, {n}) AS i"
    at_cap, _ = _peak_and_scrape(tmp_path / "at-cap", portal_db, rows.format(n=CAP))
    past_cap, body = _peak_and_scrape(tmp_path / "past-cap", portal_db, rows.format(n=ROWS))
    assert past_cap - at_cap < RSS_BOUND, f"{(past_cap - at_cap) / MIB:.1f} MiB more"
    scrape = Scrape.parse(body.decode())
    assert scrape.value("pgrb_check_success", check="big") == 1
    assert scrape.series("pgrb_big_value") == {
        frozenset({("k", str(i))}): float(i) for i in range(1, CAP + 1)
    }
    assert scrape.value("pgrb_check_series", check="big") == CAP
    assert scrape.value("pgrb_check_truncated", check="big") == 1


# 50,000,000 characters built on the server from allowed functions (no repeat() there).
HUGE = 50_000_000
HUGE_SQL = """
SELECT p.s AS k, 1 AS v
FROM (SELECT string_agg(c.s, '') AS s
      FROM (SELECT string_agg('0123456789', '') AS s FROM generate_series(1, 1000)) AS c,
           generate_series(1, 5000)) AS p
"""


def test_a_50_mb_label_value_is_served_cut_and_costs_bounded_memory(
    portal_db: PortalDb, tmp_path: Path
) -> None:
    """Fails when the value is held in full more than the cut allows (RSS), or served uncut."""
    small, _ = _peak_and_scrape(tmp_path / "small", portal_db, "SELECT 'x' AS k, 1 AS v")
    huge, body = _peak_and_scrape(tmp_path / "huge", portal_db, HUGE_SQL)
    assert huge - small < RSS_BOUND, f"{(huge - small) / MIB:.1f} MiB more"
    expected = capped("0123456789" * (HUGE // 10), LABEL_VALUE_MAX_LENGTH)
    assert len(expected) == LABEL_VALUE_MAX_LENGTH
    scrape = Scrape.parse(body.decode())
    assert scrape.series("pgrb_big_value") == {frozenset({("k", expected)}): 1.0}
    assert len(body) < 20_000  # the whole exposition, this label included


# -- the wrap keeps results as they were --------------------------------------------------------


@pytest.fixture
def conn(portal_db: PortalDb) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(portal_db.monitor_dsn, autocommit=True) as connection:
        yield connection


ORDERED = [
    # (statement, its rows as written)
    ("SELECT i AS k FROM generate_series(1, 20) AS i ORDER BY i DESC", list(range(20, 0, -1))),
    ("SELECT i AS k FROM generate_series(1, 20) AS i ORDER BY i %% 7, i DESC LIMIT 5",
     [14, 7, 15, 8, 1]),
    ("WITH t AS (SELECT i FROM generate_series(1, 9) AS i) SELECT i AS k FROM t ORDER BY -i;",
     list(range(9, 0, -1))),
    ("SELECT column1 AS k FROM (VALUES (3), (1), (2)) AS v -- trailing comment",
     [3, 1, 2]),
    ("SELECT i AS k FROM generate_series(1, 20) AS i ORDER BY i LIMIT %(n)s OFFSET 2",
     [3, 4, 5, 6]),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "rows"), ORDERED)
def test_the_wrapped_statement_returns_the_rows_of_the_statement_in_its_order(
    conn: psycopg.Connection[tuple[object, ...]], sql: str, rows: list[int]
) -> None:
    """Fails when the wrap loses the statement's ORDER BY, LIMIT, OFFSET or parameters, or
    does not parse (a trailing ';' or '--' comment inside the parentheses)."""
    params = {"n": 4}
    assert [k for (k,) in conn.execute(sql, params)] == rows  # the statement as written
    assert [k for (k,) in conn.execute(bounded(sql, 100), params)] == rows
    # At a cap below its length: the statement's first rows, and one past the cap.
    assert [k for (k,) in conn.execute(bounded(sql, 2), params)] == rows[:3]


def test_the_wrap_keeps_every_column_and_its_name(
    conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    """Fails when the wrap renames, drops or converts a column (the shape check reads them)."""
    sql = "SELECT 'a%%' AS k, 1::bigint AS v, true AS flag, 2 AS v, NULL::text"
    wrapped = conn.execute(bounded(sql, 10), {})
    assert [c.name for c in wrapped.description or ()] == ["k", "v", "flag", "v", "text"]
    assert wrapped.fetchall() == [("a%", 1, True, 2, None)]


EVERY_TABLE_ORDERED = """
checks:
  ordered:
    help: The cap keeps the statement's first rows in its own order.
    max_series: 3
    sql: SELECT i::text AS k, i AS v FROM generate_series(1, 3000000) AS i ORDER BY i DESC
    labels: [k]
    metrics: {v: {name: ordered_value, type: gauge, help: A value.}}
"""


def test_a_capped_check_keeps_its_first_rows_in_its_own_order(portal_db: PortalDb) -> None:
    """Fails when the cap is applied before the check's ORDER BY (the 3 smallest, not largest)."""
    scrape = collect_once(portal_db.monitor_dsn, parse_config(EVERY_TABLE_ORDERED))
    top = (3_000_000, 2_999_999, 2_999_998)
    assert scrape.series("pgrb_ordered_value") == {
        frozenset({("k", str(i))}): float(i) for i in top
    }
    assert scrape.value("pgrb_check_truncated", check="ordered") == 1


# -- label values the server cuts ----------------------------------------------------------------

LONG_ASCII = "0123456789" * 30  # 300 characters
LONG_WIDE = "é€😀" * 100  # 300 characters of 2, 3 and 4 bytes
KINDS = f"""
checks:
  kinds:
    help: Label values of every kind, short and long.
    sql: |
      SELECT * FROM (VALUES
        (1, 'plain', 5, true, '2024-01-02 03:04:05.5+00'::timestamptz, NULL::text),
        (2, '{LONG_ASCII}', -7, false, NULL, 'x'),
        (3, '{LONG_WIDE}', NULL, NULL, NULL, '')) AS t(v, txt, num, flag, at, maybe)
      ORDER BY v
    labels: [txt, num, flag, at, maybe]
    metrics: {{v: {{name: kinds_value, type: gauge, help: The row.}}}}
"""


def test_label_values_of_every_kind_are_served_as_before_and_long_ones_cut_as_before(
    portal_db: PortalDb,
) -> None:
    """Fails when the server's cut differs from samples.capped (kept characters, the hash of
    the value's UTF-8 bytes, the mark) or a short value of any type changes on its way."""
    scrape = collect_once(portal_db.monitor_dsn, parse_config(KINDS))
    assert scrape.series("pgrb_kinds_value") == {
        frozenset({("txt", "plain"), ("num", "5"), ("flag", "true"),
                   ("at", "2024-01-02 03:04:05.500000+00:00"), ("maybe", "")}): 1.0,
        frozenset({("txt", capped(LONG_ASCII, LABEL_VALUE_MAX_LENGTH)), ("num", "-7"),
                   ("flag", "false"), ("at", ""), ("maybe", "x")}): 2.0,
        frozenset({("txt", capped(LONG_WIDE, LABEL_VALUE_MAX_LENGTH)), ("num", ""),
                   ("flag", ""), ("at", ""), ("maybe", "")}): 3.0,
    }  # fmt: skip
    assert len(capped(LONG_WIDE, LABEL_VALUE_MAX_LENGTH)) == LABEL_VALUE_MAX_LENGTH


def test_a_check_whose_columns_changed_since_they_were_asked_for_is_asked_again(
    portal_db: PortalDb,
) -> None:
    """Fails when a relation that lost a column under ``SELECT *`` fails the run with the wrap's
    own error (``column q.v does not exist``) instead of the shape check's."""
    portal_db.server.execute(
        "CREATE TABLE shifting (k text, v int); INSERT INTO shifting VALUES ('a', 1);"
        f"GRANT SELECT ON shifting TO {MONITOR_ROLE}",
        dbname=portal_db.name,
    )
    config = unvetted_config("""
checks:
  shifting:
    help: Every column of a table the test changes.
    sql: SELECT * FROM shifting
    labels: [k]
    metrics: {v: {name: shifting_value, type: gauge, help: The value.}}
""")
    pipeline = pipeline_for(portal_db.monitor_dsn, config)
    try:
        pipeline.scheduler.run_once()
        assert state_of(pipeline.cache, "shifting").success is True
        portal_db.server.execute("ALTER TABLE shifting RENAME COLUMN v TO w", dbname=portal_db.name)
        pipeline.scheduler.run_once()
    finally:
        pipeline.scheduler.stop()
    error = state_of(pipeline.cache, "shifting").last_error
    assert error is not None
    assert (error.reason, str(error)) == (
        FailureReason.INVALID_RESULT,
        "checks.shifting.metrics.v: column not returned by the SQL; "
        "checks.shifting.sql: returns column 'w', declared in neither labels nor metrics",
    )
