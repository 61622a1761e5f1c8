"""queries.yaml: the checks as data, loaded into frozen dataclasses.

Every problem is collected and reported at once, each naming the file and the dotted path of the
key (``queries.yaml: checks.locks.interval: …``), so a bad config is fixed in one round.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from exporter import selfmetrics
from exporter.sqlvet import vet

logger = logging.getLogger(__name__)

MetricType = Literal["gauge", "counter"]
SettingValue = int | float | str | tuple[str, ...]

_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_STRAY_PERCENT = re.compile(r"%(?!%|\(\w+\)s)")


class ConfigError(Exception):
    """A configuration that cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Metric:
    column: str
    name: str
    type: MetricType
    help: str


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


def parse_duration(value: object) -> float:
    """``15s``, ``100ms``, ``5m``, ``1h`` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 15s, 100ms or 5m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value.strip())):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"expected a duration such as 15s, 100ms or 5m, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"must be positive, got {value!r}")
    return seconds


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys instead of keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return dict(loader.construct_pairs(node))


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(
            f"{self.source}: {path}: {message}" if path else f"{self.source}: {message}"
        )


def _mapping(
    raw: object,
    path: str,
    problems: _Problems,
    allowed: set[str],
    required: frozenset[str] | set[str] = frozenset(),
) -> dict[str, Any]:
    if not isinstance(raw, dict):
        problems.add(path, f"expected a mapping, got {type(raw).__name__}")
        return {}
    for key in raw:
        if key not in allowed:
            hint = ", ".join(sorted(allowed))
            problems.add(
                f"{path}.{key}" if path else str(key), f"unknown key (expected one of: {hint})"
            )
    for key in sorted(required - raw.keys()):
        problems.add(f"{path}.{key}" if path else key, "missing required key")
    return {k: v for k, v in raw.items() if k in allowed}


def _text(raw: object, path: str, problems: _Problems) -> str:
    if not isinstance(raw, str) or not raw.strip():
        problems.add(path, "expected a non-empty string")
        return ""
    return raw.strip()


def _duration(raw: object, path: str, problems: _Problems, default: float) -> float:
    if raw is None:
        return default
    try:
        return parse_duration(raw)
    except ValueError as exc:
        problems.add(path, str(exc))
        return default


def _positive_int(raw: object, path: str, problems: _Problems, default: int) -> int:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        problems.add(path, f"expected a positive whole number, got {raw!r}")
        return default
    return raw


def _version(raw: object, path: str, problems: _Problems) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 9 <= raw <= 99:
        problems.add(path, f"expected a PostgreSQL major version such as 14, got {raw!r}")
        return None
    return raw


@dataclass(frozen=True)
class _Defaults:
    interval: float = 30.0
    timeout: float = 5.0
    lock_timeout: float = 0.1
    stale_intervals: int = 3
    max_series: int = 500


def _load_defaults(raw: object, problems: _Problems) -> _Defaults:
    if raw is None:
        return _Defaults()
    base = _Defaults()
    data = _mapping(
        raw,
        "defaults",
        problems,
        {"interval", "timeout", "lock_timeout", "stale_intervals", "max_series"},
    )
    return _Defaults(
        interval=_duration(data.get("interval"), "defaults.interval", problems, base.interval),
        timeout=_duration(data.get("timeout"), "defaults.timeout", problems, base.timeout),
        lock_timeout=_duration(
            data.get("lock_timeout"), "defaults.lock_timeout", problems, base.lock_timeout
        ),
        stale_intervals=_positive_int(
            data.get("stale_intervals"), "defaults.stale_intervals", problems, base.stale_intervals
        ),
        max_series=_positive_int(
            data.get("max_series"), "defaults.max_series", problems, base.max_series
        ),
    )


def _load_settings(raw: object, problems: _Problems) -> tuple[Setting, ...]:
    if raw is None:
        return ()
    settings = []
    for name, item in _mapping(
        raw, "settings", problems, set(raw) if isinstance(raw, dict) else set()
    ).items():
        path = f"settings.{name}"
        if not _NAME.match(str(name)):
            problems.add(path, "setting names are letters, digits and underscores")
        data = _mapping(item, path, problems, {"value", "help", "metric"}, {"value", "help"})
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
        settings.append(
            Setting(
                name=str(name),
                value=parsed,
                help=_text(data.get("help"), f"{path}.help", problems),
                metric=metric,
            )
        )
    return tuple(settings)


def _load_variants(raw: object, path: str, problems: _Problems) -> tuple[SqlVariant, ...]:
    if isinstance(raw, str):
        return (SqlVariant(sql=_text(raw, path, problems)),)
    if not isinstance(raw, list) or not raw:
        problems.add(
            path, "expected the SQL as a string, or a list of {min_version, max_version, sql}"
        )
        return ()
    variants = []
    for index, item in enumerate(raw):
        vpath = f"{path}[{index}]"
        data = _mapping(item, vpath, problems, {"sql", "min_version", "max_version"}, {"sql"})
        variants.append(
            SqlVariant(
                sql=_text(data.get("sql"), f"{vpath}.sql", problems),
                min_version=_version(data.get("min_version"), f"{vpath}.min_version", problems),
                max_version=_version(data.get("max_version"), f"{vpath}.max_version", problems),
            )
        )
    for major in range(9, 100):
        if sum(v.matches(major) for v in variants) > 1:
            problems.add(path, f"more than one variant applies to PostgreSQL {major}")
            break
    return tuple(variants)


def _check_placeholders(
    variants: tuple[SqlVariant, ...], path: str, settings: set[str], problems: _Problems
) -> None:
    for index, variant in enumerate(variants):
        where = path if len(variants) == 1 else f"{path}[{index}].sql"
        for name in sorted(set(_PLACEHOLDER.findall(variant.sql)) - settings):
            problems.add(
                where, f"%({name})s names no setting (settings: {', '.join(sorted(settings))})"
            )
        if _STRAY_PERCENT.search(variant.sql):
            problems.add(where, "a literal % must be written %% (settings are bound as %(name)s)")


def _vet_sql(variants: tuple[SqlVariant, ...], path: str, problems: _Problems) -> None:
    for index, variant in enumerate(variants):
        where = path if len(variants) == 1 else f"{path}[{index}].sql"
        for problem in vet(variant.sql) if variant.sql else ():
            problems.add(where, problem)


def _load_requires(raw: object, path: str, problems: _Problems) -> Requirements:
    if raw is None:
        return Requirements()
    data = _mapping(
        raw, path, problems, {"min_version", "max_version", "primary", "extension", "relations"}
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
        min_version=_version(data.get("min_version"), f"{path}.min_version", problems),
        max_version=_version(data.get("max_version"), f"{path}.max_version", problems),
        primary=primary,
        extension=extension,
        relations=tuple(relations),
    )


def _load_metrics(
    raw: object, path: str, namespace: str, problems: _Problems
) -> tuple[Metric, ...]:
    if not isinstance(raw, dict) or not raw:
        problems.add(path, "expected a mapping of result column to {name, type, help}")
        return ()
    metrics = []
    for column, item in raw.items():
        mpath = f"{path}.{column}"
        data = _mapping(item, mpath, problems, {"name", "type", "help"}, {"name", "type", "help"})
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
                help=_text(data.get("help"), f"{mpath}.help", problems),
            )
        )
    return tuple(metrics)


def _load_check(
    name: str,
    raw: object,
    *,
    namespace: str,
    defaults: _Defaults,
    settings: set[str],
    problems: _Problems,
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
    }
    data = _mapping(raw, path, problems, allowed, {"help", "sql", "metrics"})
    if not data:
        return None
    variants = _load_variants(data.get("sql"), f"{path}.sql", problems)
    _check_placeholders(variants, f"{path}.sql", settings, problems)
    _vet_sql(variants, f"{path}.sql", problems)
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
    interval = _duration(data.get("interval"), f"{path}.interval", problems, defaults.interval)
    timeout = _duration(data.get("timeout"), f"{path}.timeout", problems, defaults.timeout)
    if timeout > interval:
        problems.add(
            f"{path}.timeout", f"timeout ({timeout:g}s) exceeds the interval ({interval:g}s)"
        )
    lock_timeout = _duration(
        data.get("lock_timeout"), f"{path}.lock_timeout", problems, defaults.lock_timeout
    )
    if lock_timeout > timeout:
        problems.add(f"{path}.lock_timeout", "lock_timeout exceeds the statement timeout")
    return Check(
        name=name,
        help=_text(data.get("help"), f"{path}.help", problems),
        interval=interval,
        timeout=timeout,
        lock_timeout=lock_timeout,
        stale_intervals=_positive_int(
            data.get("stale_intervals"),
            f"{path}.stale_intervals",
            problems,
            defaults.stale_intervals,
        ),
        max_series=_positive_int(
            data.get("max_series"), f"{path}.max_series", problems, defaults.max_series
        ),
        requires=_load_requires(data.get("requires"), f"{path}.requires", problems),
        variants=variants,
        labels=tuple(labels),
        metrics=metrics,
    )


def _check_unique_metrics(
    config_checks: list[Check], settings: tuple[Setting, ...], namespace: str, problems: _Problems
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
    problems = _Problems(source)
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{source}: {where}invalid YAML: {reason}"]) from None
    data = _mapping(raw, "", problems, {"namespace", "defaults", "settings", "checks"}, {"checks"})
    namespace = data.get("namespace", "pgrb")
    if not isinstance(namespace, str) or not _NAME.match(namespace):
        problems.add("namespace", f"not a valid metric prefix: {namespace!r}")
        namespace = "pgrb"
    defaults = _load_defaults(data.get("defaults"), problems)
    settings = _load_settings(data.get("settings"), problems)
    checks: list[Check] = []
    raw_checks = data.get("checks")
    if "checks" in data and (not isinstance(raw_checks, dict) or not raw_checks):
        problems.add("checks", "expected a mapping of check name to check")
    elif isinstance(raw_checks, dict):
        names = {s.name for s in settings}
        for name, item in raw_checks.items():
            check = _load_check(
                str(name),
                item,
                namespace=namespace,
                defaults=defaults,
                settings=names,
                problems=problems,
            )
            if check is not None:
                checks.append(check)
    _check_unique_metrics(checks, settings, namespace, problems)
    if problems.items:
        raise ConfigError(problems.items)
    return Config(
        path=path or Path(source), namespace=namespace, checks=tuple(checks), settings=settings
    )


def default_config_path() -> Path:
    """queries.yaml of a source checkout, else the copy installed inside the package."""
    package = Path(__file__).resolve().parent
    checkout = package.parent / "queries.yaml"
    return checkout if checkout.is_file() else package / "queries.yaml"


def load_config(path: Path | None = None) -> Config:
    path = path or default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    config = parse_config(text, source=str(path), path=path)
    logger.debug("loaded %d checks from %s", len(config.checks), path)
    return config


def settings_by_name(config: Config) -> Mapping[str, Setting]:
    return {s.name: s for s in config.settings}
