"""DATABASE_URL in the app's Prisma form: Prisma-only parameters dropped, TLS translated."""

from __future__ import annotations

import psycopg.conninfo
import pytest

from pg_runbook_exporter.app import CollectionOptions, database_target
from pg_runbook_exporter.database_url import parse_database_url, redact
from pg_runbook_exporter.errors import DatabaseUrlError

PRISMA_URL = (
    "postgresql://monitor:s3cr%40t@db.internal:5432/portal"
    "?connection_limit=10&pool_timeout=10&schema=portal&socket_timeout=5"
    "&statement_cache_size=0&sslmode=require&connect_timeout=3"
)


def test_prisma_only_parameters_are_dropped_and_libpq_ones_kept() -> None:
    target = parse_database_url(PRISMA_URL)
    params = psycopg.conninfo.conninfo_to_dict(target.conninfo)
    assert params == {
        "host": "db.internal",
        "port": "5432",
        "dbname": "portal",
        "user": "monitor",
        "password": "s3cr@t",
        "sslmode": "require",
        "connect_timeout": "3",
    }
    assert target.search_path == "portal"
    assert target.display == "postgresql://monitor@db.internal:5432/portal"


def test_prisma_sslcert_is_the_server_ca() -> None:
    target = parse_database_url(
        "postgresql://m@h/db?sslmode=require&sslcert=/etc/ca.pem&sslaccept=strict"
    )
    params = psycopg.conninfo.conninfo_to_dict(target.conninfo)
    assert params["sslrootcert"] == "/etc/ca.pem"
    assert "sslcert" not in params
    assert params["sslmode"] == "verify-full"


def test_accept_invalid_certs_encrypts_without_verifying_and_says_so() -> None:
    target = parse_database_url("postgresql://m@h/db?sslaccept=accept_invalid_certs")
    assert psycopg.conninfo.conninfo_to_dict(target.conninfo)["sslmode"] == "require"
    assert "not verified" in target.warnings[0]


def test_sslidentity_is_refused_with_the_way_out() -> None:
    with pytest.raises(DatabaseUrlError, match="openssl pkcs12"):
        parse_database_url("postgresql://m:pw@h/db?sslidentity=id.p12&sslpassword=pw")


def test_pgbouncer_flag_is_remembered_and_dropped() -> None:
    target = parse_database_url("postgresql://m@h/db?pgbouncer=true")
    assert target.pgbouncer
    assert "pgbouncer" not in target.conninfo


def test_an_unknown_parameter_fails_without_showing_the_password() -> None:
    with pytest.raises(DatabaseUrlError) as caught:
        parse_database_url("postgresql://m:topsecret@h/db?bogus_param=1")
    assert "bogus_param" in str(caught.value)
    assert "topsecret" not in str(caught.value)


def test_password_from_a_file_wins_and_is_a_known_secret() -> None:
    target = parse_database_url("postgresql://m@h/db", password="filepass")
    assert psycopg.conninfo.conninfo_to_dict(target.conninfo)["password"] == "filepass"
    assert "filepass" in target.secrets
    assert "filepass" not in repr(target)


def test_redact_hides_url_and_keyword_passwords_and_known_secrets() -> None:
    text = "postgresql://u:pa55@h/db password=abc host=h password='x y' token=zz"
    assert (
        redact(text, ("zz",))
        == "postgresql://u:***@h/db password=*** host=h password=*** token=***"
    )


def test_a_libpq_keyword_string_is_accepted() -> None:
    target = parse_database_url("host=127.0.0.1 port=5433 dbname=portal user=m password=pw")
    assert target.display == "host=127.0.0.1 port=5433 dbname=portal user=m"
    assert target.secrets == ("pw",)


def test_the_urls_password_wins_over_pgpassword_which_is_still_redacted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGPASSWORD", "from-env")
    target, _ = database_target(CollectionOptions(url="postgresql://m:from-url@h/db"))
    assert psycopg.conninfo.conninfo_to_dict(target.conninfo)["password"] == "from-url"
    assert {"from-url", "from-env"} <= set(target.secrets)
    bare, _ = database_target(CollectionOptions(url="postgresql://m@h/db"))
    assert "password" not in psycopg.conninfo.conninfo_to_dict(bare.conninfo)  # libpq reads it


def test_query_parameters_reach_libpq_as_written_spaces_and_pluses_included() -> None:
    # Fails when the query is re-encoded with "+" for a space: libpq reads that "+" literally.
    target = parse_database_url(
        "postgresql://m@h/db?password=two%20words%2B1&options=-c%20statement_timeout%3D5s"
        "&application_name=a+b&schema=portal"
    )
    params = psycopg.conninfo.conninfo_to_dict(target.conninfo)
    assert params["password"] == "two words+1"
    assert params["options"] == "-c statement_timeout=5s"
    assert params["application_name"] == "a+b"  # libpq decodes %XX only, as here
    assert "schema" not in params


def test_a_password_in_the_query_is_a_known_secret() -> None:
    target = parse_database_url("postgresql://m@h/db?password=Qu3ry-secret")
    assert "Qu3ry-secret" in target.secrets
    assert target.password_in_url


@pytest.mark.parametrize(
    ("url", "embedded"),
    [
        ("postgresql://m:pw-in-url@h/db", True),
        ("postgresql://m@h/db?password=pw-in-query", True),
        ("host=h user=m password=pw-in-keywords", True),
        ("postgresql://m@h/db", False),
        ("host=h user=m", False),
    ],
)
def test_a_password_carried_by_the_url_itself_is_noticed(url: str, embedded: bool) -> None:
    assert parse_database_url(url).password_in_url is embedded
    assert parse_database_url(url, password="from-a-file").password_in_url is embedded


@pytest.mark.parametrize(
    ("text", "secret_parts"),
    [
        ("host=h password=Secret part99 user=m", ("Secret", "part99")),
        ("host=h password=Secret99 user", ("Secret99",)),
        ("host=h password='Secret99", ("Secret99",)),
        ("postgresql://m@h/db?password=Amp3rsand&Rest99=1", ("Amp3rsand", "Rest99")),
    ],
)
def test_parameters_that_do_not_parse_show_no_part_of_the_password(
    text: str, secret_parts: tuple[str, ...]
) -> None:
    # Fails when libpq's message is passed on: it quotes the text after the password.
    with pytest.raises(DatabaseUrlError) as caught:
        parse_database_url(text)
    message = str(caught.value)
    assert [part for part in secret_parts if part in message] == []
    assert "password parameter is one value" in message


def test_a_bad_keyword_without_a_password_is_named() -> None:
    with pytest.raises(DatabaseUrlError, match='invalid connection option "sslmod"'):
        parse_database_url("host=h sslmod=require")
