"""Checks whose results have the wrong shape, and the error each fails with."""

from __future__ import annotations

WRONG_SHAPES = """
checks:
  texty:
    help: Text in a value column.
    sql: SELECT 'n/a'::text AS v
    metrics: {v: {name: texty, type: gauge, help: Not a number.}}
  numeric_text:
    help: A number, but as text.
    sql: SELECT '42'::text AS v
    metrics: {v: {name: numeric_text, type: gauge, help: Still text.}}
  renamed:
    help: Returns a column it does not declare and misses one it does.
    sql: SELECT 1 AS a, 2 AS c
    metrics:
      a: {name: renamed_a, type: gauge, help: Declared and returned.}
      b: {name: renamed_b, type: gauge, help: Declared but not returned.}
  twice:
    help: Two rows with the same labels.
    sql: SELECT 'x' AS k, 1 AS v UNION ALL SELECT 'x', 2
    labels: [k]
    metrics: {v: {name: twice, type: gauge, help: Ambiguous.}}
  fine:
    help: Unaffected by the others.
    sql: SELECT 7 AS v
    metrics: {v: {name: fine, type: gauge, help: Seven.}}
"""


WRONG_SHAPE_ERRORS = {
    "texty": "column v: str value 'n/a' is not a number",
    "numeric_text": "column v: str value '42' is not a number",
    "renamed": "checks.renamed.metrics.b: column not returned by the SQL; "
    "checks.renamed.sql: returns column 'c', declared in neither labels nor metrics",
    "twice": "two rows have the same labels (k='x')",
}
