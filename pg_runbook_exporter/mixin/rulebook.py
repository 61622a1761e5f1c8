"""The vocabulary of the promtool rule-test examples: series, an alert that fires, an example.

An example is input series (promtool's expanding notation), an evaluation time and the alerts
expected to fire then, at which severity and value. ``Book`` writes them for the exporter target
the rules select: its ``instance``, the ``--mixin.job`` and the ``--mixin.selector`` labels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from pg_runbook_exporter.config import Config
from pg_runbook_exporter.mixin.options import MixinOptions
from pg_runbook_exporter.mixin.promtemplate import Series

INSTANCE = "db1:9819"


@dataclass(frozen=True)
class Fired:
    """An alert expected at eval time: its severity, ``$value`` and every label but severity."""

    severity: str
    value: float
    labels: Mapping[str, str]
    # what the annotations' query blocks find: metric → its first series (labels, value)
    found: Mapping[str, Series] = field(default_factory=dict)


@dataclass(frozen=True)
class Example:
    alert: str
    name: str
    series: Mapping[str, str]  # full selector → promtool values
    at: str  # eval_time
    fires: tuple[Fired, ...] = ()
    interval: str = "1m"


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def const(value: float, steps: int = 60) -> str:
    """``value`` for ``steps`` + 1 samples."""
    return f"{number(value)}x{steps}"


class Book:
    """Collects examples for one config and one target."""

    def __init__(self, config: Config, options: MixinOptions) -> None:
        self.config = config
        self.options = options
        self.target = {"instance": INSTANCE, **options.target_labels}
        self.examples: list[Example] = []

    def setting(self, name: str) -> float:
        value = self.config.setting(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"setting {name} is not a number: {value!r}")
        return float(value)

    def series(self, selector: str, **labels: str) -> str:
        """``metric{a="b"}`` with the target's labels added (``labels`` override them)."""
        name, _, rest = selector.partition("{")
        name = re.sub(r"^pgrb_", f"{self.config.namespace}_", name)  # as the rules are renamed
        inner = rest.rstrip("}")
        extra = ",".join(f'{k}="{_escaped(v)}"' for k, v in {**self.target, **labels}.items())
        return f"{name}{{{inner + ',' if inner else ''}{extra}}}"

    def fired(self, severity: str, value: float, **labels: str) -> Fired:
        return Fired(severity, value, {**self.target, **labels})

    def fired_bare(self, severity: str, value: float) -> Fired:
        """An alert of ``absent()``: only the equality matchers' labels, no instance."""
        return Fired(severity, value, dict(self.options.target_labels))

    def add(
        self,
        alert: str,
        name: str,
        series: Mapping[str, str],
        at: str,
        *fires: Fired,
        interval: str = "1m",
        others: Mapping[str, str] | None = None,
    ) -> None:
        """``series`` are of the target; ``others`` are full selectors (``Book.series(…, x=)``)."""
        full = {self.series(selector): values for selector, values in series.items()}
        full.update(others or {})
        self.examples.append(Example(alert, name, full, at, fires, interval))

    def ages(self, metric: str, age: float, at_s: float) -> dict[str, str]:
        """A timestamp metric that is ``age`` seconds old at ``at_s``."""
        return {metric: const(at_s - age, 80)}


def seconds(duration: str) -> float:
    """A promtool duration (``10m``, ``1200s``, ``2h``) in seconds."""
    total = 0.0
    for amount, unit in re.findall(r"(\d+)([smhd])", duration):
        total += int(amount) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    return total


def _expanded(values: str) -> list[float | None]:
    """promtool's expanding notation (``1x3``, ``0+5x4``, ``_x2``, ``stale``) as samples."""
    samples: list[float | None] = []
    for token in values.split():
        match = re.fullmatch(r"(_|[-+\deE.]+?)(?:([-+][\deE.]+))?(?:x(\d+))?", token)
        if match is None:
            raise ValueError(f"series values {values!r}: {token!r} is not rendered here")
        start, step, times = match.group(1), match.group(2), match.group(3)
        count = int(times) + 1 if times is not None else 1
        if start == "_":
            samples += [None] * (count - 1 if times is not None else 1)
            continue
        delta = float(step) if step else 0.0
        samples += [float(start) + delta * i for i in range(count)]
    return samples


def samples_at(example: Example) -> list[tuple[str, dict[str, str], float]]:
    """Every input series of ``example`` with its value at the evaluation time (5 min lookback)."""
    at, step = seconds(example.at), seconds(example.interval)
    found = []
    for selector, values in example.series.items():
        name, _, rest = selector.partition("{")
        pairs = re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest)
        labels = {k: re.sub(r"\\(.)", r"\1", v) for k, v in pairs}
        samples = _expanded(values)
        index = min(int(at // step), len(samples) - 1)
        while index >= 0 and samples[index] is None:
            index -= 1
        if index >= 0 and at - index * step <= 300:
            value = samples[index]
            assert value is not None
            found.append((name, labels, value))
    return found
