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
        extra = ",".join(f'{k}="{v}"' for k, v in {**self.target, **labels}.items())
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
