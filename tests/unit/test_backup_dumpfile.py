"""Dump headers: the format and pg_dump's versions read from a file's first kilobytes."""

from __future__ import annotations

import gzip
from pathlib import Path

from pg_runbook_exporter.backup.dumpfile import DumpFormat, DumpHeader, custom_header, read_header

PLAIN = (
    b"--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\n"
    b"-- Dumped from database version 17.10 (Debian 17.10-1.pgdg120+1)\n"
    b"-- Dumped by pg_dump version 18.6\n\nSET statement_timeout = 0;\n"
)


def _int(value: int) -> bytes:
    return bytes([1 if value < 0 else 0]) + abs(value).to_bytes(4, "little")


def _str(text: str) -> bytes:
    return _int(len(text)) + text.encode()


def archive(version: tuple[int, int, int] = (1, 16, 0), fmt: int = 1) -> bytes:
    """The header pg_dump -Fc writes (pg_backup_archiver.c WriteHead)."""
    head = b"PGDMP" + bytes([*version, 4, 8, fmt, 1])
    head += b"".join(_int(n) for n in (7, 2, 2, 1, 11, 126, 0))
    return head + _str("portal") + _str("17.10") + _str("18.6") + b"rest of the archive"


def test_plain_sql_names_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "backup_20261201_020000.sql"
    path.write_bytes(PLAIN)
    assert read_header(path) == DumpHeader(DumpFormat.PLAIN, "17.10", "18.6")
    assert read_header(path).dumped_by_major == 18  # type: ignore[union-attr]


def test_gzip_is_sniffed_through_its_first_block(tmp_path: Path) -> None:
    path = tmp_path / "backup_20261201_020000.sql.gz"
    path.write_bytes(gzip.compress(PLAIN + b"x" * 100_000)[:200])  # truncated: still sniffed
    assert read_header(path) == DumpHeader(DumpFormat.GZIP, "17.10", "18.6")


def test_custom_archive_header_is_parsed() -> None:
    assert custom_header(archive()) == DumpHeader(DumpFormat.CUSTOM, "17.10", "18.6", "gzip")


def test_tar_archives_and_cut_headers_are_not_custom_dumps() -> None:
    assert custom_header(archive(fmt=3)) is None
    assert custom_header(archive()[:30]) is None


def test_garbage_text_and_gzip_of_garbage_are_not_dumps(tmp_path: Path) -> None:
    text = tmp_path / "notes.sql"
    text.write_text("SELECT 1;\n")
    gz = tmp_path / "x.sql.gz"
    gz.write_bytes(gzip.compress(b"\x00\x01 not sql"))
    broken = tmp_path / "y.sql.gz"
    broken.write_bytes(b"\x1f\x8b" + b"\xff" * 50)
    assert [read_header(p) for p in (text, gz, broken)] == [None, None, None]
