"""What a backup file is (plain SQL, gzip'd SQL, a custom-format archive), read from its header.

Only the first few kilobytes are read, so the directory check can sniff every file cheaply; the
versions in the header tell ``verify-backup`` which tools and server can restore it.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

PLAIN_MARK = b"-- PostgreSQL database dump"
PLAIN_END = b"-- PostgreSQL database dump complete"
CUSTOM_MAGIC = b"PGDMP"
GZIP_MAGIC = b"\x1f\x8b"
HEAD_BYTES = 8192

_DUMPED_FROM = re.compile(rb"^-- Dumped from database version (\S+)", re.MULTILINE)
_DUMPED_BY = re.compile(rb"^-- Dumped by pg_dump version (\S+)", re.MULTILINE)
_MAJOR = re.compile(r"^(\d+)")
# pg_backup_archiver.h: K_VERS_1_10 added the versions, K_VERS_1_15 a one-byte compression code.
_K_VERS_1_4 = (1, 4)
_K_VERS_1_10 = (1, 10)
_K_VERS_1_15 = (1, 15)
_CUSTOM_FORMAT = 1
_COMPRESSION = {0: "none", 1: "gzip", 2: "lz4", 3: "zstd"}


class DumpFormat(StrEnum):
    """The formats ``verify-backup`` restores."""

    PLAIN = "plain"
    GZIP = "gzip"
    CUSTOM = "custom"


@dataclass(frozen=True)
class DumpHeader:
    """A dump's format and the versions its header names (None when it names none)."""

    format: DumpFormat
    dumped_from: str | None = None
    dumped_by: str | None = None
    compression: str | None = None

    @property
    def dumped_by_major(self) -> int | None:
        """The major of the pg_dump that wrote the file: restoring needs tools this new."""
        return major_of(self.dumped_by)

    @property
    def dumped_from_major(self) -> int | None:
        return major_of(self.dumped_from)


def major_of(version: str | None) -> int | None:
    """``17`` of ``17.10``; ``9`` of ``9.6.24`` is not a supported major and is returned as is."""
    match = _MAJOR.match(version or "")
    return int(match.group(1)) if match else None


def read_header(path: Path) -> DumpHeader | None:
    """The dump header of ``path``, or None when the file is not a dump. Raises OSError."""
    with path.open("rb") as file:
        head = file.read(HEAD_BYTES)
    if head.startswith(CUSTOM_MAGIC):
        return custom_header(head)
    if head.startswith(GZIP_MAGIC):
        text = _gunzip_head(head)
        plain = plain_header(text) if text is not None else None
        return DumpHeader(DumpFormat.GZIP, plain.dumped_from, plain.dumped_by) if plain else None
    return plain_header(head)


def plain_header(head: bytes) -> DumpHeader | None:
    """The header of pg_dump's plain output: its banner comment in the first lines."""
    if PLAIN_MARK not in head[:256]:
        return None
    dumped_from = _DUMPED_FROM.search(head)
    dumped_by = _DUMPED_BY.search(head)
    return DumpHeader(
        DumpFormat.PLAIN,
        dumped_from=dumped_from.group(1).decode("ascii", "replace") if dumped_from else None,
        dumped_by=dumped_by.group(1).decode("ascii", "replace") if dumped_by else None,
    )


def _gunzip_head(head: bytes) -> bytes | None:
    try:
        return zlib.decompressobj(wbits=31).decompress(head, HEAD_BYTES)
    except zlib.error:
        return None


class _Reader:
    """Reads the integers and strings of pg_dump's archive header (pg_backup_archiver.c)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.int_size = 4

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def integer(self) -> int:
        negative = self.byte()
        raw = self.data[self.pos : self.pos + self.int_size]
        if len(raw) != self.int_size:
            raise IndexError("header ends inside an integer")
        self.pos += self.int_size
        value = int.from_bytes(raw, "little")
        return -value if negative else value

    def string(self) -> str | None:
        length = self.integer()
        if length < 0:
            return None
        raw = self.data[self.pos : self.pos + length]
        if len(raw) != length:
            raise IndexError("header ends inside a string")
        self.pos += length
        return raw.decode("utf-8", "replace")


def custom_header(head: bytes) -> DumpHeader | None:
    """The header of a custom-format archive; None when it is damaged or another format."""
    reader = _Reader(head)
    reader.pos = len(CUSTOM_MAGIC)
    try:
        version = (reader.byte(), reader.byte())
        if version > (1, 0):
            reader.byte()  # revision
        reader.int_size = reader.byte()
        reader.byte()  # offset size
        if reader.byte() != _CUSTOM_FORMAT or not 1 <= reader.int_size <= 8:
            return None  # tar and directory archives are not restored from one file
        compression = "none"
        if version >= _K_VERS_1_15:
            compression = _COMPRESSION.get(reader.byte(), "unknown")
        else:
            compression = "gzip" if reader.integer() != 0 else "none"
        if version >= _K_VERS_1_4:
            for _field in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
                reader.integer()
            reader.string()  # database name
        dumped_from = dumped_by = None
        if version >= _K_VERS_1_10:
            dumped_from = reader.string()
            dumped_by = reader.string()
    except IndexError:
        return None
    return DumpHeader(DumpFormat.CUSTOM, dumped_from, dumped_by, compression)
