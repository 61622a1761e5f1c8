"""Building blocks of config validation: every problem collected with its file and dotted key."""

from __future__ import annotations

import re
from typing import Any

import yaml

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


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


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys instead of keeping the last one."""


def _construct_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return dict(loader.construct_pairs(node))


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class Problems:
    """Problems found so far; each helper reports into it and returns a usable default."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(
            f"{self.source}: {path}: {message}" if path else f"{self.source}: {message}"
        )

    def mapping(
        self,
        raw: object,
        path: str,
        allowed: set[str],
        required: frozenset[str] | set[str] = frozenset(),
    ) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.add(path, f"expected a mapping, got {type(raw).__name__}")
            return {}
        for key in raw:
            if key not in allowed:
                hint = ", ".join(sorted(allowed))
                self.add(
                    f"{path}.{key}" if path else str(key), f"unknown key (expected one of: {hint})"
                )
        for key in sorted(required - raw.keys()):
            self.add(f"{path}.{key}" if path else key, "missing required key")
        return {k: v for k, v in raw.items() if k in allowed}

    def text(self, raw: object, path: str) -> str:
        if not isinstance(raw, str) or not raw.strip():
            self.add(path, "expected a non-empty string")
            return ""
        return raw.strip()

    def duration(self, raw: object, path: str, default: float) -> float:
        if raw is None:
            return default
        try:
            return parse_duration(raw)
        except ValueError as exc:
            self.add(path, str(exc))
            return default

    def positive_int(self, raw: object, path: str, default: int) -> int:
        if raw is None:
            return default
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            self.add(path, f"expected a positive whole number, got {raw!r}")
            return default
        return raw

    def version(self, raw: object, path: str) -> int | None:
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int) or not 9 <= raw <= 99:
            self.add(path, f"expected a PostgreSQL major version such as 14, got {raw!r}")
            return None
        return raw
