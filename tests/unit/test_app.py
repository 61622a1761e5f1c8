"""The composition root's loading: where the database target comes from, and what it warns about."""

from __future__ import annotations

from pathlib import Path

import bcrypt
import psycopg.conninfo
import pytest

from pg_runbook_exporter.app import (
    STATUS_WITHOUT_AUTH,
    CollectionOptions,
    WebOptions,
    database_target,
    status_warning,
)
from pg_runbook_exporter.errors import OptionError
from pg_runbook_exporter.web.webconfig import load_web_config

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


@pytest.mark.parametrize(
    ("content", "password"),
    [
        ("s3cret\n", "s3cret"),
        ("s3cret", "s3cret"),
        (" two words \n", " two words "),  # fails when the file is stripped of all whitespace
        ("s3cret\n\n", "s3cret\n"),
        ("tab\t\n", "tab\t"),
    ],
)
def test_a_password_file_loses_exactly_one_trailing_newline(
    tmp_path: Path, content: str, password: str
) -> None:
    path = tmp_path / "password"
    path.write_text(content)
    path.chmod(0o600)
    assert password_of(CollectionOptions(url="postgresql://m@h/db", password_file=path)) == password


@pytest.mark.parametrize(
    ("mode", "warned"), [(0o600, False), (0o640, False), (0o644, True), (0o604, True)]
)
def test_a_world_readable_secret_file_is_warned_about_and_a_group_readable_one_is_not(
    tmp_path: Path, mode: int, warned: bool
) -> None:
    password_file, url_file = tmp_path / "password", tmp_path / "url"
    password_file.write_text("s3cret\n")
    url_file.write_text("postgresql://m@h/db\n")
    for path in (password_file, url_file):
        path.chmod(mode)
    _, warnings = database_target(CollectionOptions(url_file=url_file, password_file=password_file))
    expected = [
        f"{url_file}: the database URL file is readable by every local user (mode {mode:04o});"
        f" chmod o-r {url_file}",
        f"{password_file}: the password file is readable by every local user (mode {mode:04o});"
        f" chmod o-r {password_file}",
    ]
    assert list(warnings) == (expected if warned else [])


def test_the_status_page_without_basic_auth_is_warned_about(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()
    web_config = tmp_path / "web.yml"
    web_config.write_text(f"basic_auth_users:\n  ops: '{hashed}'\n", encoding="utf-8")
    assert status_warning(WebOptions(status=True), None) == STATUS_WITHOUT_AUTH
    assert status_warning(WebOptions(status=True), load_web_config(web_config)) is None
    assert status_warning(WebOptions(status=False), None) is None
