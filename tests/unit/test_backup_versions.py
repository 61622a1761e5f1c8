"""Which server restores a dump: the pg_dump's own major where installed, else the clients'."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pg_runbook_exporter.backup.dumpfile import DumpFormat, DumpHeader
from pg_runbook_exporter.backup.record import Outcome
from pg_runbook_exporter.backup.restore import RestoreFailure
from pg_runbook_exporter.backup.versions import choose_tools
from pg_runbook_exporter.pgserver.binaries import BinariesUnavailable, PgBinaries, find_client_tool
from tests.conftest import required


def servers(*majors: int) -> Callable[[int], PgBinaries]:
    def find(major: int) -> PgBinaries:
        if major not in majors:
            raise BinariesUnavailable(f"no PostgreSQL {major}")
        return PgBinaries(major=major, version=f"{major}.1", bindir=Path("/x"), source="test")

    return find


@pytest.fixture(autouse=True)
def clients_of_18() -> None:
    required(lambda: find_client_tool("pg_restore", min_major=18))


def header(dumped_by: str | None) -> DumpHeader:
    return DumpHeader(DumpFormat.PLAIN, dumped_from="15.4", dumped_by=dumped_by)


def test_the_pg_dumps_own_major_is_used_where_its_server_exists() -> None:
    tools = choose_tools(header("17.2"), None, find_server=servers(15, 17, 18))
    assert (tools.server.major, tools.choice) == (17, "the major of the pg_dump that wrote it")
    assert tools.client_version.startswith("18.")


def test_without_that_server_the_client_tools_major_is_used() -> None:
    tools = choose_tools(header("16.3"), None, find_server=servers(15, 18))
    assert (tools.server.major, tools.choice) == (
        18,
        "no PostgreSQL 16 server here: the client tools' major",
    )


def test_a_dump_newer_than_every_client_is_refused() -> None:
    with pytest.raises(RestoreFailure) as raised:
        choose_tools(header("99.0"), None, find_server=servers(18))
    assert raised.value.outcome is Outcome.UNSUPPORTED_VERSION
    assert "pg_dump 99.0" in raised.value.message
