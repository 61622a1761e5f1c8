"""queries.yaml validation: every problem reported at once, each naming file, check and key."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pg_runbook_exporter.config import load_config, parse_config
from pg_runbook_exporter.errors import ConfigError
from pg_runbook_exporter.validation import parse_duration

GOOD = """
namespace: pgrb
settings:
  long_running_query_seconds: {value: 300, help: Runbook threshold.}
  maintenance_applications: {value: [pg_dump], help: Maintenance clients.}
  app_pool_size: {value: 10, help: Pool per instance., metric: app_pool_size}
checks:
  connections:
    help: Connections by state.
    interval: 15s
    timeout: 2s
    sql: SELECT state, count(*) AS n FROM pg_stat_activity GROUP BY 1
    labels: [state]
    metrics:
      n: {name: connections, type: gauge, help: Client connections.}
  statements:
    help: Statements.
    requires: {extension: pg_stat_statements, min_version: 14}
    sql:
      - {max_version: 16, sql: "SELECT sum(blk_read_time) AS t FROM pg_stat_statements"}
      - {min_version: 17, sql: "SELECT sum(shared_blk_read_time) AS t FROM pg_stat_statements"}
    metrics:
      t: {name: statement_blk_read_seconds_total, type: counter, help: Read time.}
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(text), source="q.yaml")
    return caught.value.problems


def test_a_valid_config_loads_with_namespaced_metrics_and_version_variants() -> None:
    config = parse_config(GOOD, source="q.yaml")
    names = [m.name for c in config.checks for m in c.metrics]
    assert names == ["pgrb_connections", "pgrb_statement_blk_read_seconds_total"]
    statements = config.checks[1]
    assert "blk_read_time" in (statements.sql_for(15) or "")
    assert "shared_blk_read_time" in (statements.sql_for(17) or "")
    assert config.checks[0].interval == 15.0
    assert config.sql_params()["maintenance_applications"] == ["pg_dump"]


def test_durations_accept_units_and_reject_nonsense() -> None:
    assert parse_duration("100ms") == pytest.approx(0.1)
    assert parse_duration("5m") == 300.0
    assert parse_duration(2) == 2.0
    for bad in ("soon", "-1s", 0, True, "5 parsecs"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_malformed_yaml_names_the_file_and_line() -> None:
    problems = problems_of("checks:\n  a: [unclosed\n")
    assert len(problems) == 1
    assert problems[0].startswith("q.yaml: line ")
    assert "invalid YAML" in problems[0]


def test_every_problem_is_reported_with_its_dotted_path() -> None:
    problems = problems_of(
        """
        checks:
          locks:
            help: Locks.
            interval: often
            colour: blue
            sql: SELECT 1 AS n
            metrics:
              n: {name: locks, type: histogram, help: x}
          sizes:
            sql: SELECT 1 AS n
            metrics:
              n: {name: sizes, type: gauge}
        """
    )
    assert problems == [
        "q.yaml: checks.locks.colour: unknown key (expected one of: chapter, help, interval, "
        "labels, lock_timeout, max_series, metrics, offenders, requires, source, sql, "
        "stale_intervals, status, timeout)",
        "q.yaml: checks.locks.metrics.n.type: expected gauge or counter, got 'histogram'",
        "q.yaml: checks.locks.interval: expected a duration such as 15s, 100ms or 5m, got 'often'",
        "q.yaml: checks.sizes.help: missing required key",
        "q.yaml: checks.sizes.metrics.n.help: missing required key",
        "q.yaml: checks.sizes.metrics.n.help: expected a non-empty string",
        "q.yaml: checks.sizes.help: expected a non-empty string",
    ]


def test_duplicate_metric_names_across_checks_are_rejected() -> None:
    problems = problems_of(
        """
        checks:
          a:
            help: A.
            sql: SELECT 1 AS n
            metrics: {n: {name: rows, type: gauge, help: x}}
          b:
            help: B.
            sql: SELECT 1 AS n
            metrics: {n: {name: rows, type: gauge, help: x}}
          c:
            help: C.
            sql: SELECT 1 AS n
            metrics: {n: {name: up, type: gauge, help: x}}
        """
    )
    assert problems == [
        "q.yaml: checks.b.metrics.n.name: pgrb_rows is already exported by checks.a",
        "q.yaml: checks.c.metrics.n.name: pgrb_up is already exported by the exporter itself",
    ]


def test_duplicate_yaml_keys_are_an_error_not_a_silent_override() -> None:
    problems = problems_of(
        """
        checks:
          a:
            help: A.
            sql: SELECT 1 AS n
            metrics: {n: {name: rows, type: gauge, help: x}}
          a:
            help: again
        """
    )
    assert "duplicate key 'a'" in problems[0]


def test_counter_and_gauge_naming_rules_are_enforced() -> None:
    problems = problems_of(
        """
        checks:
          a:
            help: A.
            sql: SELECT 1 AS n, 2 AS m
            metrics:
              n: {name: archived, type: counter, help: x}
              m: {name: size_total, type: gauge, help: x}
        """
    )
    assert problems == [
        "q.yaml: checks.a.metrics.n.name: a counter's name ends in _total",
        "q.yaml: checks.a.metrics.m.name: _total is reserved for counters",
    ]


def test_unknown_sql_parameters_and_stray_percent_signs_are_rejected() -> None:
    problems = problems_of(
        """
        checks:
          a:
            help: A.
            sql: "SELECT count(*) AS n FROM users WHERE x LIKE 'a%' AND y > %(nope)s"
            metrics: {n: {name: rows, type: gauge, help: x}}
        """
    )
    assert problems == [
        "q.yaml: checks.a.sql: %(nope)s names no setting (settings: )",
        "q.yaml: checks.a.sql: a literal % must be written %% (settings are bound as %(name)s)",
    ]


@pytest.mark.parametrize(
    "condition", ["x LIKE 'a%%'", "x LIKE '%%a%%'", "x LIKE '100%%%%'", "y %% 2 = 0"]
)
def test_a_literal_percent_written_as_the_error_message_asks_is_accepted(condition: str) -> None:
    # Fails when the second % of an escaped %% is taken for a stray one.
    config = parse_config(
        textwrap.dedent(f"""
        checks:
          a:
            help: A.
            sql: "SELECT count(*) AS n FROM users WHERE {condition}"
            metrics: {{n: {{name: rows, type: gauge, help: x}}}}
        """),
        source="q.yaml",
    )
    assert config.checks[0].sql_for(17) == f"SELECT count(*) AS n FROM users WHERE {condition}"


@pytest.mark.parametrize("condition", ["x LIKE 'a%%%'", "x LIKE '%a'", "x LIKE 'a%(n)'"])
def test_an_odd_percent_is_still_refused(condition: str) -> None:
    problems = problems_of(f"""
        checks:
          a:
            help: A.
            sql: "SELECT count(*) AS n FROM users WHERE {condition}"
            metrics: {{n: {{name: rows, type: gauge, help: x}}}}
        """)
    assert problems == [
        "q.yaml: checks.a.sql: a literal % must be written %% (settings are bound as %(name)s)"
    ]


def test_overlapping_version_variants_and_label_clashes_are_rejected() -> None:
    problems = problems_of(
        """
        checks:
          a:
            help: A.
            timeout: 1m
            interval: 30s
            sql:
              - {max_version: 16, sql: SELECT 1 AS n}
              - {min_version: 15, sql: SELECT 2 AS n}
            labels: [n]
            metrics: {n: {name: rows, type: gauge, help: x}}
        """
    )
    assert problems == [
        "q.yaml: checks.a.sql: more than one variant applies to PostgreSQL 15",
        "q.yaml: checks.a.metrics.n: column is also listed in labels",
        "q.yaml: checks.a.timeout: timeout (60s) exceeds the interval (30s)",
    ]


def test_a_required_server_setting_reads_a_bare_on_as_pg_settings_spells_it() -> None:
    config = parse_config(
        textwrap.dedent(
            """
            checks:
              logs:
                help: Logs.
                requires: {settings: {logging_collector: on, log_file_mode: "0600"}}
                sql: SELECT 1 AS n
                metrics: {n: {name: n, type: gauge, help: x}}
            """
        ),
        source="q.yaml",
    )
    assert config.checks[0].requires.settings == (
        ("logging_collector", "on"),
        ("log_file_mode", "0600"),
    )


def test_required_settings_and_fixes_naming_nothing_are_rejected() -> None:
    problems = problems_of(
        """
        checks:
          a:
            help: A.
            requires: {settings: {"Bad Name": on, work_mem: [1]}}
            sql: SELECT 'public' AS schemaname, 1 AS n
            labels: [schemaname]
            metrics:
              n:
                name: rows
                type: gauge
                help: x
                fix: GRANT SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role};
        """
    )
    assert problems == [
        "q.yaml: checks.a.metrics.n.fix: {schema} is neither {role} nor a label of the check",
        "q.yaml: checks.a.requires.settings.Bad Name: not a server setting name",
        "q.yaml: checks.a.requires.settings.work_mem: expected the value as text, got [1]",
    ]


def test_a_check_reads_a_known_source_and_only_its_columns() -> None:
    problems = problems_of(
        """
        checks:
          files:
            help: x
            source: backup_files
            sql: SELECT 1 AS n
            metrics:
              backup_full_files: {name: backup_full_files, type: gauge, help: x}
              n: {name: n, type: gauge, help: x}
          elsewhere:
            help: x
            source: tape_library
            metrics:
              n: {name: m, type: gauge, help: x}
        """
    )
    assert problems == [
        "q.yaml: checks.files.sql: a check reads either SQL or a source, not both",
        "q.yaml: checks.files: source backup_files returns no column 'n'",
        "q.yaml: checks.elsewhere.source: expected one of: backup_files, backup_verification, "
        "backup_verification_counts, got 'tape_library'",
    ]


def test_the_shipped_queries_yaml_is_valid() -> None:
    config = load_config()
    assert config.namespace == "pgrb"
    assert len(config.checks) >= 15


def test_check_command_exits_2_on_a_bad_config_and_names_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "queries.yaml"
    bad.write_text("checks:\n  a:\n    help: A.\n    sql: SELECT 1 AS n\n    metrics: []\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pg_runbook_exporter",
            "check",
            "--config",
            str(bad),
            "--database.url",
            "postgresql://nobody:hunter2@127.0.0.1:1/none",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"{bad}: checks.a.metrics: expected a mapping" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr
