"""A dump as a stream of SQL text, fed to psql on a throwaway server; psql's errors judged.

Every format becomes plain SQL on the way in (gzip decompressed here, a custom archive through
``pg_restore --no-owner --no-privileges -f -``), so one psql run and one error judge serve all
three. Only the errors a production dump meets on a bare server are tolerated: owners and grants
naming roles that server lacks, and extensions it does not ship.
"""

from __future__ import annotations

import contextlib
import gzip
import re
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pg_runbook_exporter.backup.dumpfile import PLAIN_END, DumpFormat
from pg_runbook_exporter.backup.record import Outcome

CHUNK_BYTES = 1 << 20
_TAIL_BYTES = 4096

# psql -f - prefixes "psql:<stdin>:LINE: "; without the prefix an error still counts (line 0).
_PSQL_LINE = re.compile(r"^(?:psql:<stdin>:(\d+): )?(ERROR|FATAL|error|STATEMENT): +(.*)$")
_SQLSTATE = re.compile(r"^([0-9A-Z]{5}): (.*)$")
# Data and constraint errors (classes 22, 23) and syntax errors quote their input: customer data.
_QUOTES_DATA = ("22", "23", "42601")
_DUMP_KEYWORDS = frozenset(
    ["ALTER", "COMMENT", "COPY", "CREATE", "GRANT", "INSERT", "REVOKE", "SECURITY", "SELECT", "SET"]
)
_TOLERATED = (
    ("owner", re.compile(r"ALTER\s.*\sOWNER\s+TO\s", re.IGNORECASE | re.DOTALL), {"42704"}),
    ("grant", re.compile(r"(GRANT|REVOKE|ALTER\s+DEFAULT\s+PRIVILEGES)\s", re.I), {"42704"}),
    (
        "extension",
        re.compile(r"(CREATE|COMMENT\s+ON)\s+EXTENSION\s", re.IGNORECASE),
        {"0A000", "58P01", "42704", "42710"},
    ),
)


class RestoreFailure(Exception):
    """The verification cannot pass: its outcome and a message without customer data."""

    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message


class Deadline:
    """The verification's time budget; ``remaining()`` raises once it is spent."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self._end - time.monotonic()
        if left <= 0:
            raise RestoreFailure(Outcome.TIMEOUT, f"not done within {self.seconds:g}s")
        return left


class SqlStream:
    """The dump as SQL text, chunk by chunk; checks on the way that it is whole."""

    def __init__(self, path: Path, fmt: DumpFormat, pg_restore: Path | None, log: Path) -> None:
        self.path = path
        self.format = fmt
        self._pg_restore = pg_restore
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self.bytes = 0

    def __iter__(self) -> Iterator[bytes]:
        tail = b""
        for chunk in self._chunks():
            self.bytes += len(chunk)
            tail = (tail + chunk)[-_TAIL_BYTES:]
            yield chunk
        if PLAIN_END not in tail:
            raise RestoreFailure(
                Outcome.TRUNCATED, "the SQL ends before pg_dump's 'dump complete' line"
            )

    def _chunks(self) -> Iterator[bytes]:
        if self.format is DumpFormat.CUSTOM:
            yield from self._from_pg_restore()
            return
        opener = gzip.open if self.format is DumpFormat.GZIP else open
        try:
            with opener(self.path, "rb") as file:
                yield from iter(lambda: _read(file), b"")
        except EOFError:
            raise RestoreFailure(
                Outcome.TRUNCATED, "the gzip stream ends before its end marker"
            ) from None
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise RestoreFailure(Outcome.TRUNCATED, f"damaged gzip data: {exc}") from None
        except OSError as exc:
            raise RestoreFailure(Outcome.UNREADABLE, f"cannot read: {exc.strerror}") from None

    def _from_pg_restore(self) -> Iterator[bytes]:
        assert self._pg_restore is not None
        args = [str(self._pg_restore), "--no-owner", "--no-privileges", "-f", "-", str(self.path)]
        with self._log.open("wb") as err:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True,
            )  # fmt: skip
        proc = self._proc
        assert proc.stdout is not None
        try:
            yield from iter(lambda: _read(proc.stdout), b"")
            code = proc.wait()
        finally:
            self.close()
            proc.stdout.close()
        if code != 0:
            raise _pg_restore_failure(self._log.read_text(errors="replace"))

    def measure(self, deadline: Deadline) -> int:
        """Read the whole stream once (it must be whole); the size of its SQL text."""
        if self.format is DumpFormat.PLAIN:
            size = self.path.stat().st_size
            with self.path.open("rb") as file:
                file.seek(max(0, size - _TAIL_BYTES))
                if PLAIN_END not in file.read():
                    raise RestoreFailure(
                        Outcome.TRUNCATED, "the file ends before pg_dump's 'dump complete' line"
                    )
            return size
        try:
            for _chunk in self:
                deadline.remaining()
        finally:
            self.close()
        return self.bytes

    def close(self) -> None:
        """Stop pg_restore (from any thread: the reader closes its pipe)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _read(file: IO[bytes] | gzip.GzipFile | None) -> bytes:
    assert file is not None
    return file.read(CHUNK_BYTES)


def _pg_restore_failure(log: str) -> RestoreFailure:
    line = next((x for x in log.splitlines() if "error:" in x), log.strip()[:200])
    text = line.split("error:", 1)[-1].strip()
    if "unsupported version" in text:
        return RestoreFailure(Outcome.UNSUPPORTED_VERSION, f"pg_restore: {text}")
    if "end of file" in text or "could not read" in text or "unexpected" in text:
        return RestoreFailure(Outcome.TRUNCATED, f"pg_restore: {text}")
    return RestoreFailure(Outcome.UNREADABLE, f"pg_restore: {text}")


@dataclass(frozen=True)
class SqlError:
    """One failed statement of the restore: where, SQLSTATE, and which kind of statement."""

    line: int
    sqlstate: str | None
    message: str
    statement: str

    @property
    def tolerated_as(self) -> str | None:
        """``owner``, ``grant`` or ``extension`` when a bare server is expected to refuse it."""
        for kind, pattern, sqlstates in _TOLERATED:
            if pattern.match(self.statement) and self.sqlstate in sqlstates:
                return kind
        return None

    def describe(self) -> str:
        """The error without customer data.

        Data and constraint errors quote values, and after a failed COPY psql reads the rows as
        SQL, so a statement that does not open with a keyword of pg_dump's, or a syntax error,
        is named by its SQLSTATE only.
        """
        words = self.statement.split()[:3]
        known = bool(words) and words[0].upper() in _DUMP_KEYWORDS
        state = self.sqlstate or ""
        if known and state and not state.startswith(_QUOTES_DATA):
            message = f"{state}: {self.message}"
        elif state:
            message = f"SQLSTATE {state} (its text may quote data: not repeated here)"
        else:
            message = "psql could not read the input as SQL"
        return f"line {self.line}: {' '.join(words) if known else 'a statement'}: {message}"


def parse_psql_errors(stderr: str) -> list[SqlError]:
    """The errors of a ``psql -b -v VERBOSITY=verbose`` run reading stdin, with their statement."""
    errors: list[SqlError] = []
    current: dict[str, object] | None = None
    statement: list[str] | None = None

    def flush() -> None:
        if current is not None:
            text = "\n".join(statement or []).strip()
            errors.append(SqlError(statement=text, **current))  # type: ignore[arg-type]

    for raw in stderr.splitlines():
        match = _PSQL_LINE.match(raw)
        if match is None:
            if statement is not None:
                statement.append(raw)
            continue
        line, kind, text = int(match.group(1) or 0), match.group(2), match.group(3)
        if kind == "STATEMENT":
            statement = [text] if current is not None else None
            continue
        flush()
        coded = _SQLSTATE.match(text)
        current = {
            "line": line,
            "sqlstate": coded.group(1) if coded else None,
            "message": coded.group(2) if coded else text,
        }
        statement = None
    flush()
    return errors


def feed_psql(
    stream: SqlStream, psql_args: Sequence[str], *, deadline: Deadline, log: Path
) -> list[SqlError]:
    """Run psql on the stream; returns its statement errors. Kills psql on any way out."""
    failures: list[BaseException] = []
    with log.open("w+b") as err:
        proc = subprocess.Popen(
            list(psql_args), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True,
        )  # fmt: skip
        stdin = proc.stdin
        assert stdin is not None

        def feed() -> None:
            try:
                for chunk in stream:
                    stdin.write(chunk)
            except BrokenPipeError:
                pass
            except BaseException as exc:  # handed to the main thread below
                failures.append(exc)
            finally:
                with contextlib.suppress(OSError):
                    stdin.close()

        feeder = threading.Thread(target=feed, name="restore-feed", daemon=True)
        feeder.start()
        try:
            code = proc.wait(timeout=deadline.remaining())
        except subprocess.TimeoutExpired:
            raise RestoreFailure(
                Outcome.TIMEOUT, f"restore not done within {deadline.seconds:g}s"
            ) from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            stream.close()
            feeder.join()
        if failures:
            raise failures[0]
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    errors = parse_psql_errors(stderr)
    if code != 0 and not errors:
        last = stderr.strip().splitlines()[-1:] or [f"exit status {code}"]
        raise RestoreFailure(Outcome.SERVER_ERROR, f"psql: {last[0][:200]}")
    return errors
