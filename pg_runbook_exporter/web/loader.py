"""Reading one web config file: typed getters that collect a `file: dotted.key: message` each."""

from __future__ import annotations

import logging
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_DURATION = re.compile(
    r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?"
)
_DURATION_UNITS = (365 * 86400.0, 7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)


class Loader:
    """Validates one parsed file, collecting a message per problem."""

    def __init__(self, source: str, path: Path) -> None:
        self.source = source
        self.path = path
        self.base = path.parent  # relative file names are resolved against the file's directory
        self.problems: list[str] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{self.source}: {key}: {message}")

    def mapping(self, value: object, key: str, allowed: frozenset[str] | None) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(key or "(top level)", f"must be a mapping, not {type(value).__name__}")
            return {}
        for name in value:
            if not isinstance(name, str) or (allowed is not None and name not in allowed):
                expected = f" (expected one of: {', '.join(sorted(allowed))})" if allowed else ""
                self.problem(f"{key}.{name}" if key else str(name), f"unknown key{expected}")
        return {k: v for k, v in value.items() if isinstance(k, str)}

    def string(self, section: dict[str, Any], name: str, key: str) -> str | None:
        value = section.get(name)
        if value is None or isinstance(value, str):
            return value or None
        self.problem(f"{key}.{name}", f"must be a string, not {type(value).__name__}")
        return None

    def strings(self, section: dict[str, Any], name: str, key: str) -> tuple[str, ...]:
        value = section.get(name)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(f"{key}.{name}", "must be a list of strings")
            return ()
        return tuple(value)

    def file(self, section: dict[str, Any], name: str, key: str) -> Path | None:
        value = self.string(section, name, key)
        if value is None:
            return None
        path = self.base / value
        if not path.is_file():
            self.problem(f"{key}.{name}", f"file {str(path)!r} does not exist or is not a file")
            return None
        return path

    def choice(self, value: str | None, choices: Mapping[str, Any], key: str, default: str) -> str:
        if value is None:
            return default
        if value not in choices:
            self.problem(key, f"{value!r} is not one of: {', '.join(choices)}")
            return default
        return value

    def duration(self, value: object, key: str) -> float | None:
        """`1s`, `100ms`, `1m30s` (Prometheus' duration form) in seconds; None when invalid."""
        match = _DURATION.fullmatch(value) if isinstance(value, str) else None
        if match is None or not value:
            self.problem(key, "must be a duration such as 1s or 100ms")
            return None
        return sum(
            float(n) * unit for n, unit in zip(match.groups(), _DURATION_UNITS, strict=True) if n
        )

    def integer(self, value: object, key: str, minimum: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.problem(key, f"must be an integer of at least {minimum}")
            return None
        return value

    def warn_if_world_readable(self, path: Path, key: str, what: str) -> None:
        """A private key readable by every local user is a leak waiting to happen.

        Group-readable is fine: Kubernetes mounts secrets 0440 or 0640 for the pod's fsGroup.
        """
        try:
            mode = path.stat().st_mode
        except OSError:
            return
        if mode & stat.S_IROTH:
            logger.warning(
                "%s: %s: %s %s is readable by every local user (mode %s); chmod o-r it",
                self.source,
                key,
                what,
                path,
                oct(stat.S_IMODE(mode)),
            )
