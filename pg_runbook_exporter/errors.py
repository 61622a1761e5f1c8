"""The exporter's one error hierarchy, and the closed vocabularies of failure and skip reasons.

Every error the exporter raises on purpose is an ``ExporterError``; the command line catches that
root once and maps the class to an exit status. Facts travel as attributes (a check's ``reason``
and ``sqlstate``, a config's ``problems``), never inside a message that is parsed back.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class FailureReason(StrEnum):
    """Why a check run failed, as exported in ``check_errors_total{reason}``."""

    TIMEOUT = "timeout"
    LOCK_TIMEOUT = "lock_timeout"
    PERMISSION = "permission"
    CONNECTION = "connection"
    INVALID_RESULT = "invalid_result"
    OTHER = "other"


class SkipReason(StrEnum):
    """Why a check does not run on this server, as exported in ``check_skipped{reason}``."""

    VERSION = "version"
    STANDBY = "standby"
    EXTENSION = "extension"
    RELATION = "relation"
    SETTING = "setting"
    UNCONFIGURED = "unconfigured"  # a check that reads backup files, without --backup.dir


class ExporterError(Exception):
    """The root: a problem the exporter reports in words and an exit status, not a traceback."""

    def lines(self) -> list[str]:
        """What the command line prints, one ``error:`` line each."""
        return [str(self)]


class ProblemsError(ExporterError):
    """A file that cannot be used; ``problems`` holds one line per problem, each naming the file
    and the dotted key."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def lines(self) -> list[str]:
        return list(self.problems)


class ConfigError(ProblemsError):
    """queries.yaml cannot be used."""


class WebConfigError(ProblemsError):
    """The ``--web.config.file`` cannot be used."""


class DatabaseUrlError(ExporterError):
    """A database URL that cannot be used; the message never contains the password."""

    def lines(self) -> list[str]:
        return [f"database URL: {self}"]


class OptionError(ExporterError):
    """A command-line option (or the file it names) that cannot be used."""


class DiagnoseError(ExporterError):
    """``diagnose`` cannot run: no such alert, one without a database diagnosis, or a label
    missing or unknown."""


class ListenError(ExporterError):
    """The web server could not bind its address."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot listen on {address}: {reason}")
        self.address = address
        self.reason = reason


class CheckError(ExporterError):
    """A failed check run: its reason, the server's SQLSTATE if any, and a message safe to log."""

    def __init__(self, reason: FailureReason, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.sqlstate = sqlstate

    def __repr__(self) -> str:
        return f"CheckError({self.reason!s}, {self.message!r}, sqlstate={self.sqlstate!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CheckError):
            return NotImplemented
        return (self.reason, self.message, self.sqlstate) == (
            other.reason,
            other.message,
            other.sqlstate,
        )

    def __hash__(self) -> int:
        return hash((self.reason, self.message, self.sqlstate))

    def detached(self) -> CheckError:
        """The same facts without traceback or context, so keeping it holds no frames alive."""
        return CheckError(self.reason, self.message, sqlstate=self.sqlstate)


class UnavailableError(ExporterError):
    """Something the command needs is not installed here (e.g. the demo's PostgreSQL)."""
