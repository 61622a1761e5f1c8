"""psql's errors during a restore: which are tolerated, and how they are told without data."""

from __future__ import annotations

from pg_runbook_exporter.backup.restore import SqlError, parse_psql_errors

STDERR = """\
psql:<stdin>:26: ERROR:  0A000: extension "nosuchext" is not available
HINT:  The extension must first be installed on the system where PostgreSQL is running.
LOCATION:  parse_extension_control_file, extension.c:670
psql:<stdin>:26: STATEMENT:  CREATE EXTENSION IF NOT EXISTS nosuchext WITH SCHEMA public;
psql:<stdin>:33: ERROR:  42704: extension "nosuchext" does not exist
psql:<stdin>:33: STATEMENT:  COMMENT ON EXTENSION nosuchext IS 'statistics';
psql:<stdin>:104: ERROR:  42704: role "app" does not exist
psql:<stdin>:104: STATEMENT:  ALTER TABLE public.users
    OWNER TO app;
psql:<stdin>:120: ERROR:  42704: role "pgrb_exporter" does not exist
psql:<stdin>:120: STATEMENT:  GRANT SELECT(id) ON TABLE public.users TO pgrb_exporter;
psql:<stdin>:130: ERROR:  42P01: relation "public.users" does not exist
psql:<stdin>:130: STATEMENT:  ALTER TABLE public.users OWNER TO app;
psql:<stdin>:140: ERROR:  23505: duplicate key value violates unique constraint "users_email_key"
DETAIL:  Key (email)=(someone@example.com) already exists.
psql:<stdin>:140: STATEMENT:  ALTER TABLE ONLY public.users ADD CONSTRAINT k UNIQUE (email);
psql:<stdin>:150: ERROR:  42601: syntax error at or near "someone"
psql:<stdin>:150: STATEMENT:  someone@example.com	Some	One
"""


def test_errors_are_parsed_with_their_statements() -> None:
    errors = parse_psql_errors(STDERR)
    assert [(e.line, e.sqlstate) for e in errors] == [
        (26, "0A000"), (33, "42704"), (104, "42704"), (120, "42704"),
        (130, "42P01"), (140, "23505"), (150, "42601"),
    ]  # fmt: skip
    assert errors[2].statement == "ALTER TABLE public.users\n    OWNER TO app;"


def test_only_owners_grants_and_extensions_of_a_bare_server_are_tolerated() -> None:
    kinds = [e.tolerated_as for e in parse_psql_errors(STDERR)]
    # An owner change that fails because its table is missing is no role problem.
    assert kinds == ["extension", "extension", "owner", "grant", None, None, None]


def test_an_error_without_the_psql_prefix_still_counts() -> None:
    errors = parse_psql_errors('ERROR:  42P01: relation "x" does not exist\nSTATEMENT:  COPY x;\n')
    assert [(e.line, e.sqlstate, e.statement) for e in errors] == [(0, "42P01", "COPY x;")]


def test_descriptions_never_repeat_data() -> None:
    described = [e.describe() for e in parse_psql_errors(STDERR)[4:]]
    assert described == [
        'line 130: ALTER TABLE public.users: 42P01: relation "public.users" does not exist',
        "line 140: ALTER TABLE ONLY: SQLSTATE 23505 (its text may quote data: not repeated here)",
        "line 150: a statement: SQLSTATE 42601 (its text may quote data: not repeated here)",
    ]
    psql_error = SqlError(line=7, sqlstate=None, message="invalid command \\N", statement="")
    assert psql_error.describe() == "line 7: a statement: psql could not read the input as SQL"
