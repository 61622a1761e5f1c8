"""The ``check`` command's table: fixes named from a check's results, names quoted safely."""

from __future__ import annotations

import textwrap

from pg_runbook_exporter.config import parse_config
from pg_runbook_exporter.report import describe, format_table, identifier
from pg_runbook_exporter.samples import Row, Samples
from pg_runbook_exporter.state import CheckState

CONFIG = parse_config(
    textwrap.dedent(
        """
        checks:
          seqs:
            help: Sequences the role cannot read.
            sql: SELECT 'public' AS schemaname, 1 AS unreadable
            labels: [schemaname]
            metrics:
              unreadable:
                name: unreadable
                type: gauge
                help: x
                fix: GRANT SELECT ON ALL SEQUENCES IN SCHEMA {schemaname} TO {role};
        """
    ),
    source="q.yaml",
)


def test_a_database_name_printed_into_a_statement_stays_one_quoted_name() -> None:
    assert identifier("public") == '"public"'
    assert identifier('x"; DROP TABLE users; --') == '"x""; DROP TABLE users; --"'
    # no control character reaches the terminal: PostgreSQL's U& escapes stand for it
    assert identifier("a\x1b[2Jb\\") == 'U&"a\\+00001B[2Jb\\+00005C"'


def test_a_fix_is_printed_for_each_row_above_zero_with_its_labels_filled_in() -> None:
    (check,) = CONFIG.checks
    samples = Samples(
        rows=(
            Row(labels=("public",), values=(3.0,)),
            Row(labels=("Billing",), values=(1.0,)),
            Row(labels=("audit",), values=(0.0,)),
        )
    )
    line = describe(CheckState(check=check, samples=samples, success=True), "pgrb_exporter")
    assert line.status == "ok" and not line.failed
    assert line.more_fixes == (
        'GRANT SELECT ON ALL SEQUENCES IN SCHEMA "public" TO "pgrb_exporter";',
        'GRANT SELECT ON ALL SEQUENCES IN SCHEMA "Billing" TO "pgrb_exporter";',
    )
    assert "Missing privileges; as a superuser run:" in format_table([line])
