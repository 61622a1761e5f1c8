"""Each alert's diagnosis, as alerts.yaml declares it: the first SQL, the fix, what not to do.

alerts.yaml (package data beside the generators in ``mixin/``) is the one source: the generated
pages show the same SQL and the same fix the ``diagnose`` command runs and fills in. This module
reads only the ``diagnosis`` of each alert and imports nothing from ``mixin/``.

A fix is a template with fields: ``{pid}`` stands for a value as it is (the exporter's own numbers),
``{name:literal}`` for a SQL string literal and ``{name:ident}`` for a quoted SQL identifier. The
command fills them from each result row (then from its ``--label`` values); the page fills them
from the labels of the alert's top offender series or its own, or shows ``<name>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path

import yaml

from pg_runbook_exporter import sqlvet
from pg_runbook_exporter.errors import ConfigError
from pg_runbook_exporter.validation import Problems, UniqueKeyLoader

ALERTS_FILE = Path(__file__).parent / "mixin" / "alerts.yaml"
FIELD = re.compile(r"\{(\w+)(?::(\w+))?\}")
_PARAM = re.compile(r"%\((\w+)\)s")
# the column of pg_stat_activity / pg_stat_statements holding statement text (customer data)
_QUERY_TEXT = re.compile(r"\bquery\b", re.IGNORECASE)


class Quote(StrEnum):
    """How a fix's field is written into SQL."""

    AS_IS = ""
    LITERAL = "literal"
    IDENT = "ident"


@dataclass(frozen=True)
class Fix:
    """One fix template; ``when`` names the field that must be non-empty for it to apply."""

    text: str
    when: str | None = None


@dataclass(frozen=True)
class Diagnosis:
    """What an alert's responder runs first, and the mitigation written for a human to run."""

    alert: str
    sql: str
    labels: tuple[str, ...]  # the alert's labels the SQL takes as %(name)s parameters
    fixes: tuple[Fix, ...]
    do_not: str | None = None

    def settings_used(self) -> tuple[str, ...]:
        """The parameters of the SQL that are settings of queries.yaml, not labels."""
        return tuple(n for n in dict.fromkeys(_PARAM.findall(self.sql)) if n not in self.labels)

    def fix_for(self, values: Mapping[str, str]) -> str:
        """The first fix that applies, its fields filled from ``values``."""
        for fix in self.fixes:
            if fix.when is None or values.get(fix.when):
                return fill(fix.text, values)
        return ""


def quote(value: str, how: Quote) -> str:
    if how is Quote.LITERAL:
        return "'" + value.replace("'", "''") + "'"
    if how is Quote.IDENT:
        return '"' + value.replace('"', '""') + '"'
    return value


def fields(text: str) -> Iterator[tuple[str, Quote]]:
    for match in FIELD.finditer(text):
        yield match.group(1), Quote(match.group(2) or "")


def fill(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each field quoted as it says; a field without a value stays ``<name>``."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            return f"<{name}>"
        return quote(values[name], Quote(match.group(2) or ""))

    return FIELD.sub(one, text)


def _fixes(raw: object, path: str, problems: Problems) -> tuple[Fix, ...]:
    if isinstance(raw, str):
        raw = [{"text": raw}]
    if not isinstance(raw, list) or not raw:
        problems.add(path, "expected a fix text, or a list of {text, when}")
        return ()
    found = []
    for index, item in enumerate(raw):
        where = f"{path}[{index}]"
        data = problems.mapping(item, where, {"text", "when"}, {"text"})
        text = problems.text(data.get("text"), f"{where}.text")
        _checked_fields(text, f"{where}.text", problems)
        when = data.get("when")
        if when is not None and not (isinstance(when, str) and when.isidentifier()):
            problems.add(f"{where}.when", f"expected a field name, got {when!r}")
        found.append(Fix(text=text, when=when))
    if any(f.when is not None for f in found[-1:]):
        problems.add(path, "the last fix needs no `when`: it is what applies otherwise")
    return tuple(found)


def _checked_fields(text: str, path: str, problems: Problems) -> list[tuple[str, Quote]]:
    found = []
    for match in FIELD.finditer(text):
        try:
            found.append((match.group(1), Quote(match.group(2) or "")))
        except ValueError:
            problems.add(path, f"{match.group(0)}: a field is {{name}}, {{name:literal}} or "
                         "{name:ident}")  # fmt: skip
    return found


def _diagnosis(alert: str, raw: object, path: str, problems: Problems) -> Diagnosis | None:
    keys = {"sql", "labels", "fix", "do_not"}
    data = problems.mapping(raw, path, keys, {"sql", "fix"})
    sql = problems.text(data.get("sql"), f"{path}.sql")
    for problem in sqlvet.vet(sql) if sql else ():
        problems.add(f"{path}.sql", problem)
    if _QUERY_TEXT.search(sql):
        problems.add(f"{path}.sql", "reads query text, which may hold customer data: use query_id")
    labels = data.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        problems.add(f"{path}.labels", f"expected a list of label names, got {labels!r}")
        labels = []
    for name in labels:
        if f"%({name})s" not in sql:
            problems.add(f"{path}.labels", f"{name}: the SQL does not use %({name})s")
    do_not = data.get("do_not")
    if do_not is not None:
        do_not = problems.text(do_not, f"{path}.do_not")
    fixes = _fixes(data.get("fix"), f"{path}.fix", problems)
    if not sql or not fixes:
        return None
    return Diagnosis(alert, sql, tuple(labels), fixes, do_not)


@cache
def load(path: Path = ALERTS_FILE) -> dict[str, Diagnosis]:
    """Alert name → its diagnosis, for every alert of ``path`` that has one; every problem at
    once, as a ConfigError. A parameter of the SQL that is not a label is a setting of
    queries.yaml (``settings_used``; the generator and the command check it there)."""
    problems = Problems(str(path))
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)  # noqa: S506
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError([f"{path}: {exc}"]) from exc
    entries = raw.get("alerts") if isinstance(raw, dict) else None
    found: dict[str, Diagnosis] = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or "diagnosis" not in entry:
            continue
        name = str(entry.get("alert"))
        where = f"alerts.{name}.diagnosis"
        if (diagnosis := _diagnosis(name, entry["diagnosis"], where, problems)) is None:
            continue
        found[name] = diagnosis
    if problems.items:
        raise ConfigError(problems.items)
    return found


def alert_names(path: Path = ALERTS_FILE) -> tuple[str, ...]:
    """Every alert of ``path``, with a diagnosis or not (to tell unknown from undiagnosable)."""
    raw = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)  # noqa: S506
    return tuple(str(e.get("alert")) for e in raw.get("alerts", []) if isinstance(e, dict))
