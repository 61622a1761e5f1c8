"""The composition root's loading: where the database target comes from, and what it warns about."""

from __future__ import annotations

from pathlib import Path

import psycopg.conninfo
import pytest

from pg_runbook_exporter.app import CollectionOptions, database_target
from pg_runbook_exporter.errors import OptionError

URL = "postgresql://m:Cmdl1ne-secret@h/db"


def password_of(options: CollectionOptions) -> str | None:
    target, _ = database_target(options)
    password = psycopg.conninfo.conninfo_to_dict(target.conninfo).get("password")
    return None if password is None else str(password)


def test_a_password_on_the_command_line_is_warned_about_with_the_ways_out() -> None:
    # Fails without the warning: /proc/<pid>/cmdline shows the URL to every local user.
    _, warnings = database_target(CollectionOptions(url=URL, url_on_command_line=True))
    assert len(warnings) == 1
    warning = warnings[0]
    assert "--database.url" in warning and "/proc/<pid>/cmdline" in warning
    for way_out in ("--database.password-file", "--database.url-file", "PGRB_DATABASE_URL"):
        assert way_out in warning
    assert "Cmdl1ne-secret" not in warning


@pytest.mark.parametrize(
    "options",
    [
        CollectionOptions(url=URL),  # from the environment
        CollectionOptions(url="postgresql://m@h/db", url_on_command_line=True),
    ],
    ids=["environment", "no password"],
)
def test_no_warning_without_a_password_on_the_command_line(options: CollectionOptions) -> None:
    assert database_target(options)[1] == ()


def test_a_file_that_cannot_be_read_is_an_option_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(OptionError) as caught:
        database_target(CollectionOptions(password_file=missing))
    assert caught.value.lines() == [
        f"{missing}: cannot read the password file: No such file or directory"
    ]
