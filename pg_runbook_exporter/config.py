"""queries.yaml: the checks as data, loaded into frozen dataclasses.

Every problem is collected and reported at once, each naming the file and the dotted path of the
key (``queries.yaml: checks.locks.interval: …``), so a bad config is fixed in one round.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pg_runbook_exporter import selfmetrics
from pg_runbook_exporter.backup.sources import SOURCES
from pg_runbook_exporter.errors import ConfigError
from pg_runbook_exporter.sqlvet import vet
from pg_runbook_exporter.status.rules import (
    Offenders,
    Rule,
    load_chapter,
    load_chapters,
    load_offenders,
    load_rules,
)
from pg_runbook_exporter.validation import Problems, UniqueKeyLoader

MetricType = Literal["gauge", "counter"]
SettingValue = int | float | str | tuple[str, ...]

_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
# Read left to right, so "%%" is one escape and its second "%" no stray; a lone "%" is captured.
_PERCENT = re.compile(r"%%|%\(\w+\)s|(%)")
_SERVER_SETTING = re.compile(r"^[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)?$")
_FIX_FIELD = re.compile(r"\{(\w+)\}")
# settings.label_value_max_length: its default, and the least that keeps a character before the
# "…" and 6 hex digits a cut value ends with (samples.capped).
LABEL_VALUE_MAX_LENGTH = 120
LABEL_VALUE_MIN_LENGTH = 8


@dataclass(frozen=True)
class Metric:
    column: str
    name: str
    type: MetricType
    help: str
    # what `check` tells the operator to run while the value is above 0 ({label} and {role}
    # are filled in, quoted as identifiers)
    fix: str | None = None


@dataclass(frozen=True)
class SqlVariant:
    sql: str
    min_version: int | None = None
    max_version: int | None = None

    def matches(self, major: int) -> bool:
        low_ok = self.min_version is None or major >= self.min_version
        return low_ok and (self.max_version is None or major <= self.max_version)


@dataclass(frozen=True)
class Requirements:
    min_version: int | None = None
    max_version: int | None = None
    primary: bool = False
    extension: str | None = None
    relations: tuple[str, ...] = ()
    settings: tuple[tuple[str, str], ...] = ()  # (name, value as pg_settings.setting shows it)


@dataclass(frozen=True)
class Check:
    name: str
    help: str
    interval: float
    timeout: float
    lock_timeout: float
    stale_intervals: int
    max_series: int
    requires: Requirements
    variants: tuple[SqlVariant, ...]
    labels: tuple[str, ...]
    metrics: tuple[Metric, ...]
    source: str | None = None  # reads files (backup/sources.py) instead of running SQL
    chapter: str = ""  # the runbook chapter the status page files it under
    status: tuple[Rule, ...] = ()  # the thresholds the status page colours it at
    offenders: Offenders | None = None  # its rows name sessions (the status page's offenders)

    def sql_for(self, major: int) -> str | None:
        """The SQL to run on this PostgreSQL major, or None when no variant covers it."""
        for variant in self.variants:
            if variant.matches(major):
                return variant.sql
        return None

    @property
    def stale_after(self) -> float:
        """Seconds a failed check's last values stay exported after its last success."""
        return self.stale_intervals * self.interval


@dataclass(frozen=True)
class Setting:
    name: str
    value: SettingValue
    help: str
    metric: str | None = None


@dataclass(frozen=True)
class Config:
    path: Path
    namespace: str
    checks: tuple[Check, ...]
    settings: tuple[Setting, ...] = field(default=())
    chapters: tuple[str, ...] = ()  # the runbook's chapters, in order (a check's `chapter`)

    def setting(self, name: str) -> SettingValue:
        for item in self.settings:
            if item.name == name:
                return item.value
        raise KeyError(name)

    def sql_params(self) -> dict[str, Any]:
        """Every setting, as the named parameters each check's SQL may use."""
        return {
            s.name: list(s.value) if isinstance(s.value, tuple) else s.value for s in self.settings
        }

    def metric_name(self, name: str) -> str:
        return f"{self.namespace}_{name}"

    @property
    def label_value_max_length(self) -> int:
        """The cap on every label value (settings.label_value_max_length, validated at load)."""
        try:
            value = self.setting("label_value_max_length")
        except KeyError:
            return LABEL_VALUE_MAX_LENGTH
        assert isinstance(value, int)
        return value


@dataclass(frozen=True)
class _Defaults:
    interval: float = 30.0
    timeout: float = 5.0
    lock_timeout: float = 0.1
    stale_intervals: int = 3
    max_series: int = 500


def _load_defaults(raw: object, problems: Problems) -> _Defaults:
    if raw is None:
        return _Defaults()
    base = _Defaults()
    data = problems.mapping(
        raw, "defaults", {"interval", "timeout", "lock_timeout", "stale_intervals", "max_series"}
    )
    return _Defaults(
        interval=problems.duration(data.get("interval"), "defaults.interval", base.interval),
        timeout=problems.duration(data.get("timeout"), "defaults.timeout", base.timeout),
        lock_timeout=problems.duration(
            data.get("lock_timeout"), "defaults.lock_timeout", base.lock_timeout
        ),
        stale_intervals=problems.positive_int(
            data.get("stale_intervals"), "defaults.stale_intervals", base.stale_intervals
        ),
        max_series=problems.positive_int(
            data.get("max_series"), "defaults.max_series", base.max_series
        ),
    )


def _load_settings(raw: object, problems: Problems) -> tuple[Setting, ...]:
    if raw is None:
        return ()
    settings = []
    for name, item in problems.mapping(
        raw, "settings", set(raw) if isinstance(raw, dict) else set()
    ).items():
        path = f"settings.{name}"
        if not _NAME.match(str(name)):
            problems.add(path, "setting names are letters, digits and underscores")
        data = problems.mapping(item, path, {"value", "help", "metric"}, {"value", "help"})
        value = data.get("value")
        parsed: SettingValue
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            parsed = tuple(value)
        elif isinstance(value, int | float | str) and not isinstance(value, bool):
            parsed = value
        else:
            if "value" in data:
                problems.add(f"{path}.value", "expected a number, a string or a list of strings")
            parsed = 0
        metric = data.get("metric")
        if metric is not None and (not isinstance(metric, str) or not _NAME.match(metric)):
            problems.add(f"{path}.metric", f"not a valid metric name: {metric!r}")
            metric = None
        if metric is not None and not isinstance(parsed, int | float):
            problems.add(f"{path}.metric", "only numeric settings can be exported as a metric")
            metric = None
        if name == "label_value_max_length" and not (
            isinstance(parsed, int) and parsed >= LABEL_VALUE_MIN_LENGTH
        ):
            problems.add(
                f"{path}.value", f"expected a whole number of at least {LABEL_VALUE_MIN_LENGTH}"
            )
            parsed = LABEL_VALUE_MAX_LENGTH
        settings.append(
            Setting(
                name=str(name),
                value=parsed,
                help=problems.text(data.get("help"), f"{path}.help"),
                metric=metric,
            )
        )
    return tuple(settings)


def _load_variants(raw: object, path: str, problems: Problems) -> tuple[SqlVariant, ...]:
    if isinstance(raw, str):
        return (SqlVariant(sql=problems.text(raw, path)),)
    if not isinstance(raw, list) or not raw:
        problems.add(
            path, "expected the SQL as a string, or a list of {min_version, max_version, sql}"
        )
        return ()
    variants = []
    for index, item in enumerate(raw):
        vpath = f"{path}[{index}]"
        data = problems.mapping(item, vpath, {"sql", "min_version", "max_version"}, {"sql"})
        variants.append(
            SqlVariant(
                sql=problems.text(data.get("sql"), f"{vpath}.sql"),
                min_version=problems.version(data.get("min_version"), f"{vpath}.min_version"),
                max_version=problems.version(data.get("max_version"), f"{vpath}.max_version"),
            )
        )
    for major in range(9, 100):
        if sum(v.matches(major) for v in variants) > 1:
            problems.add(path, f"more than one variant applies to PostgreSQL {major}")
            break
    return tuple(variants)


def _check_placeholders(
    variants: tuple[SqlVariant, ...], path: str, settings: set[str], problems: Problems
) -> None:
    for index, variant in enumerate(variants):
        where = path if len(variants) == 1 else f"{path}[{index}].sql"
        for name in sorted(set(_PLACEHOLDER.findall(variant.sql)) - settings):
            problems.add(
                where, f"%({name})s names no setting (settings: {', '.join(sorted(settings))})"
            )
        if any(match.group(1) for match in _PERCENT.finditer(variant.sql)):
            problems.add(where, "a literal % must be written %% (settings are bound as %(name)s)")


def _vet_sql(variants: tuple[SqlVariant, ...], path: str, problems: Problems) -> None:
    for index, variant in enumerate(variants):
        where = path if len(variants) == 1 else f"{path}[{index}].sql"
        for problem in vet(variant.sql) if variant.sql else ():
            problems.add(where, problem)


def _load_requires(raw: object, path: str, problems: Problems) -> Requirements:
    if raw is None:
        return Requirements()
    data = problems.mapping(
        raw, path, {"min_version", "max_version", "primary", "extension", "relations", "settings"}
    )
    primary = data.get("primary", False)
    if not isinstance(primary, bool):
        problems.add(f"{path}.primary", f"expected true or false, got {primary!r}")
        primary = False
    extension = data.get("extension")
    if extension is not None and not isinstance(extension, str):
        problems.add(f"{path}.extension", "expected an extension name")
        extension = None
    relations = data.get("relations", [])
    if not isinstance(relations, list) or not all(isinstance(r, str) for r in relations):
        problems.add(f"{path}.relations", "expected a list of table names")
        relations = []
    return Requirements(
        min_version=problems.version(data.get("min_version"), f"{path}.min_version"),
        max_version=problems.version(data.get("max_version"), f"{path}.max_version"),
        primary=primary,
        extension=extension,
        relations=tuple(relations),
        settings=_load_required_settings(data.get("settings", {}), f"{path}.settings", problems),
    )


def _load_required_settings(
    raw: object, path: str, problems: Problems
) -> tuple[tuple[str, str], ...]:
    """``{logging_collector: on}`` → (("logging_collector", "on"),), as pg_settings spells it."""
    if not isinstance(raw, dict):
        problems.add(path, "expected a mapping of server setting to its required value")
        return ()
    found = []
    for name, value in raw.items():
        if not isinstance(name, str) or not _SERVER_SETTING.match(name):
            problems.add(f"{path}.{name}", "not a server setting name")
            continue
        if isinstance(value, bool):  # YAML reads a bare on/off as a boolean
            found.append((name, "on" if value else "off"))
        elif isinstance(value, str | int):
            found.append((name, str(value)))
        else:
            problems.add(f"{path}.{name}", f"expected the value as text, got {value!r}")
    return tuple(found)


def _load_metrics(raw: object, path: str, namespace: str, problems: Problems) -> tuple[Metric, ...]:
    if not isinstance(raw, dict) or not raw:
        problems.add(path, "expected a mapping of result column to {name, type, help}")
        return ()
    metrics = []
    for column, item in raw.items():
        mpath = f"{path}.{column}"
        data = problems.mapping(
            item, mpath, {"name", "type", "help", "fix"}, {"name", "type", "help"}
        )
        name = data.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            if "name" in data:
                problems.add(f"{mpath}.name", f"not a valid metric name: {name!r}")
            continue
        kind = data.get("type")
        if kind not in ("gauge", "counter"):
            if "type" in data:
                problems.add(f"{mpath}.type", f"expected gauge or counter, got {kind!r}")
            continue
        if kind == "counter" and not name.endswith("_total"):
            problems.add(f"{mpath}.name", "a counter's name ends in _total")
        if kind == "gauge" and name.endswith("_total"):
            problems.add(f"{mpath}.name", "_total is reserved for counters")
        metrics.append(
            Metric(
                column=str(column),
                name=f"{namespace}_{name}",
                type=kind,
                help=problems.text(data.get("help"), f"{mpath}.help"),
                fix=problems.text(data["fix"], f"{mpath}.fix") if "fix" in data else None,
            )
        )
    return tuple(metrics)


def _load_statement(
    data: dict[str, Any], path: str, settings: set[str], problems: Problems
) -> tuple[str | None, tuple[SqlVariant, ...]]:
    """A check's SQL variants, or its ``source`` (a reader of backup/sources.py)."""
    if "source" not in data:
        variants = _load_variants(data.get("sql"), f"{path}.sql", problems)
        _check_placeholders(variants, f"{path}.sql", settings, problems)
        _vet_sql(variants, f"{path}.sql", problems)
        return None, variants
    source = data["source"]
    if source not in SOURCES:
        problems.add(f"{path}.source", f"expected one of: {', '.join(SOURCES)}, got {source!r}")
        return None, ()
    if "sql" in data:
        problems.add(f"{path}.sql", "a check reads either SQL or a source, not both")
    columns = SOURCES[source]
    named = [*(data.get("labels") or []), *(data.get("metrics") or {})]
    for column in named:
        if column not in columns:
            problems.add(f"{path}", f"source {source} returns no column {column!r}")
    return str(source), ()


def _load_check(
    name: str,
    raw: object,
    *,
    namespace: str,
    defaults: _Defaults,
    settings: dict[str, SettingValue],
    chapters: tuple[str, ...],
    problems: Problems,
) -> Check | None:
    path = f"checks.{name}"
    if not _NAME.match(name):
        problems.add(path, "check names are letters, digits and underscores")
    allowed = {
        "help",
        "interval",
        "timeout",
        "lock_timeout",
        "stale_intervals",
        "max_series",
        "requires",
        "sql",
        "labels",
        "metrics",
        "source",
        "chapter",
        "status",
        "offenders",
    }
    reads_files = isinstance(raw, dict) and "source" in raw
    data = problems.mapping(
        raw, path, allowed, {"help", "metrics", "source" if reads_files else "sql"}
    )
    if not data:
        return None
    source, variants = _load_statement(data, path, set(settings), problems)
    labels = data.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        problems.add(f"{path}.labels", "expected a list of column names")
        labels = []
    for label in labels:
        if not _NAME.match(label) or label.startswith("__"):
            problems.add(f"{path}.labels", f"not a valid label name: {label!r}")
    if len(set(labels)) != len(labels):
        problems.add(f"{path}.labels", "a label is listed twice")
    metrics = _load_metrics(data.get("metrics"), f"{path}.metrics", namespace, problems)
    for metric in metrics:
        if metric.column in labels:
            problems.add(f"{path}.metrics.{metric.column}", "column is also listed in labels")
        for field_name in _FIX_FIELD.findall(metric.fix or ""):
            if field_name != "role" and field_name not in labels:
                problems.add(
                    f"{path}.metrics.{metric.column}.fix",
                    f"{{{field_name}}} is neither {{role}} nor a label of the check",
                )
    interval = problems.duration(data.get("interval"), f"{path}.interval", defaults.interval)
    timeout = problems.duration(data.get("timeout"), f"{path}.timeout", defaults.timeout)
    if timeout > interval:
        problems.add(
            f"{path}.timeout", f"timeout ({timeout:g}s) exceeds the interval ({interval:g}s)"
        )
    lock_timeout = problems.duration(
        data.get("lock_timeout"), f"{path}.lock_timeout", defaults.lock_timeout
    )
    if lock_timeout > timeout:
        problems.add(f"{path}.lock_timeout", "lock_timeout exceeds the statement timeout")
    return Check(
        name=name,
        help=problems.text(data.get("help"), f"{path}.help"),
        interval=interval,
        timeout=timeout,
        lock_timeout=lock_timeout,
        stale_intervals=problems.positive_int(
            data.get("stale_intervals"), f"{path}.stale_intervals", defaults.stale_intervals
        ),
        max_series=problems.positive_int(
            data.get("max_series"), f"{path}.max_series", defaults.max_series
        ),
        requires=_load_requires(data.get("requires"), f"{path}.requires", problems),
        variants=variants,
        labels=tuple(labels),
        metrics=metrics,
        source=source,
        chapter=load_chapter(data.get("chapter"), f"{path}.chapter", chapters, problems),
        status=load_rules(
            data.get("status"),
            f"{path}.status",
            columns=tuple(m.column for m in metrics),
            labels=tuple(labels),
            settings=settings,
            problems=problems,
        ),
        offenders=load_offenders(
            data.get("offenders"), f"{path}.offenders", tuple(labels), problems
        ),
    )


def _check_unique_metrics(
    config_checks: list[Check], settings: tuple[Setting, ...], namespace: str, problems: Problems
) -> None:
    owner: dict[str, str] = {
        f"{namespace}_{name}": "the exporter itself" for name in selfmetrics.NAMES
    }
    for setting in settings:
        if setting.metric is None:
            continue
        full = f"{namespace}_{setting.metric}"
        if full in owner:
            problems.add(
                f"settings.{setting.name}.metric", f"{full} is already exported by {owner[full]}"
            )
        owner[full] = f"settings.{setting.name}"
    for check in config_checks:
        for metric in check.metrics:
            where = f"checks.{check.name}.metrics.{metric.column}.name"
            if metric.name in owner:
                problems.add(where, f"{metric.name} is already exported by {owner[metric.name]}")
            owner[metric.name] = f"checks.{check.name}"


def parse_config(text: str, *, source: str = "queries.yaml", path: Path | None = None) -> Config:
    """Parse and validate a queries.yaml document; raises ConfigError listing every problem."""
    problems = Problems(source)
    try:
        raw = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{source}: {where}invalid YAML: {reason}"]) from None
    data = problems.mapping(
        raw, "", {"namespace", "defaults", "settings", "chapters", "checks"}, {"checks"}
    )
    namespace = data.get("namespace", "pgrb")
    if not isinstance(namespace, str) or not _NAME.match(namespace):
        problems.add("namespace", f"not a valid metric prefix: {namespace!r}")
        namespace = "pgrb"
    defaults = _load_defaults(data.get("defaults"), problems)
    settings = _load_settings(data.get("settings"), problems)
    chapters = load_chapters(data.get("chapters"), problems)
    checks: list[Check] = []
    raw_checks = data.get("checks")
    if "checks" in data and (not isinstance(raw_checks, dict) or not raw_checks):
        problems.add("checks", "expected a mapping of check name to check")
    elif isinstance(raw_checks, dict):
        values = {s.name: s.value for s in settings}
        for name, item in raw_checks.items():
            check = _load_check(
                str(name),
                item,
                namespace=namespace,
                defaults=defaults,
                settings=values,
                chapters=chapters,
                problems=problems,
            )
            if check is not None:
                checks.append(check)
    _check_unique_metrics(checks, settings, namespace, problems)
    if problems.items:
        raise ConfigError(problems.items)
    return Config(
        path=path or Path(source),
        namespace=namespace,
        checks=tuple(checks),
        settings=settings,
        chapters=chapters,
    )


def default_config_path() -> Path:
    """The bundled queries.yaml, package data beside this module."""
    return Path(__file__).resolve().parent / "queries.yaml"


def load_config(path: Path | None = None) -> Config:
    path = path or default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    return parse_config(text, source=str(path), path=path)
