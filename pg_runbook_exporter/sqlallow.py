"""The allowlist of SQL vetting: every function, relation, operator and type a check may name.

Anything not listed here is refused when queries.yaml loads (``sqlvet.py``). Every entry only
reads: statistics, sizes, WAL positions, settings, catalogs and the portal's own tables, plus the
pure functions needed to shape a result. Names are compared exactly as PostgreSQL's parser
folds them (unquoted names lower-cased), so ``"Now"()`` is not ``now()``.

How the names resolve on the server: the session pins ``search_path`` to ``pg_catalog``, the
portal's schema (the ``schema`` parameter of DATABASE_URL, else ``public``) and ``pg_temp``, in
that order. A catalog name therefore always means the catalog object; a function may be written
unqualified or ``pg_catalog.``-qualified, a catalog relation too; a portal table only
unqualified (it resolves in the portal's schema). ``pg_stat_statements`` is the one extension
name: it resolves in the portal's schema, where ``CREATE EXTENSION`` puts it by default.

Not listed, on purpose (among others): anything that runs SQL given as text (``ts_stat``,
``ts_rewrite``, ``query_to_xml``, ``dblink``…), writes (``lo_*``, ``nextval``…), changes the
session (``set_config``, ``pg_advisory_*``), signals (``pg_terminate_backend``,
``pg_reload_conf``), waits (``pg_sleep``), assigns transaction IDs (``txid_current``), reads
files (``pg_read_file``) or customer data through statistics (``pg_stats``: most common values),
and functions that can build huge values from nothing (``repeat``, ``lpad``, ``rpad``).
"""

from __future__ import annotations

# Server state, identity and settings.
_SERVER = {
    "current_database", "current_schema", "current_schemas", "current_setting", "version",
    "pg_backend_pid", "pg_postmaster_start_time", "pg_conf_load_time", "pg_is_in_recovery",
    "pg_is_wal_replay_paused", "pg_get_wal_replay_pause_state", "pg_last_xact_replay_timestamp",
    "pg_jit_available", "inet_server_addr", "inet_server_port",
    "pg_control_checkpoint", "pg_control_system", "pg_control_recovery", "pg_control_init",
    "pg_has_role", "has_database_privilege", "has_schema_privilege", "has_table_privilege",
    "has_column_privilege", "has_any_column_privilege", "has_function_privilege",
    "has_sequence_privilege",
    "to_regclass", "to_regnamespace", "to_regrole", "to_regtype", "format_type",
    "pg_get_userbyid", "pg_encoding_to_char", "pg_tablespace_location",
    "pg_is_other_temp_schema",
    # a sequence's position: 14-17 lock it RowExclusive (as nextval does), 18 AccessShare
    "pg_sequence_last_value", "pg_get_sequence_data",
}  # fmt: skip
# Statistics: who blocks whom, the statistics collector's own functions, pg_stat_statements.
_STATISTICS = {
    "pg_blocking_pids", "pg_safe_snapshot_blocking_pids",
    "pg_stat_get_activity", "pg_stat_get_progress_info", "pg_stat_get_wal_senders",
    "pg_stat_get_wal_receiver", "pg_stat_get_snapshot_timestamp",
    "pg_stat_statements", "pg_stat_statements_info",
}  # fmt: skip
# Sizes (they take AccessShareLock on what they measure: lock_timeout bounds the wait).
_SIZES = {
    "pg_database_size", "pg_total_relation_size", "pg_relation_size", "pg_table_size",
    "pg_indexes_size", "pg_tablespace_size", "pg_column_size", "pg_size_bytes", "pg_size_pretty",
}  # fmt: skip
# WAL, replication and the server's directories (pg_ls_* need pg_monitor).
_WAL = {
    "pg_current_wal_lsn", "pg_current_wal_insert_lsn", "pg_current_wal_flush_lsn",
    "pg_last_wal_receive_lsn", "pg_last_wal_replay_lsn", "pg_wal_lsn_diff", "pg_walfile_name",
    "pg_walfile_name_offset", "pg_split_walfile_name",
    "pg_ls_waldir", "pg_ls_archive_statusdir", "pg_ls_tmpdir", "pg_ls_logdir",
    "pg_ls_logicalsnapdir", "pg_ls_logicalmapdir", "pg_ls_replslotdir",
}  # fmt: skip
# Transaction-ID and multixact ages (read only: none of them assigns an ID).
_AGES = {"age", "mxid_age"}
# Time.
_TIME = {
    "now", "clock_timestamp", "statement_timestamp", "transaction_timestamp", "date_trunc",
    "date_part", "extract", "to_timestamp", "make_interval", "justify_interval", "justify_hours",
    "justify_days", "isfinite", "timezone",
}  # fmt: skip
# Numbers.
_NUMBERS = {
    "abs", "ceil", "ceiling", "floor", "round", "trunc", "power", "sqrt", "ln", "log", "log10",
    "exp", "mod", "div", "sign", "width_bucket",
}  # fmt: skip
# Text, for labels: quoting, capping, matching (the result is bounded by its input).
_TEXT = {
    "left", "right", "substr", "substring", "length", "char_length", "character_length",
    "octet_length", "lower", "upper", "initcap", "btrim", "ltrim", "rtrim", "replace",
    "split_part", "strpos", "position", "starts_with", "concat", "concat_ws", "format",
    "quote_ident", "quote_literal", "quote_nullable", "chr", "regexp_replace", "regexp_match",
    "regexp_like", "translate", "to_char", "to_number", "host", "abbrev", "family", "masklen",
}  # fmt: skip
# Arrays and set-returning helpers.
_ARRAYS = {
    "array_length", "array_upper", "array_lower", "cardinality", "unnest", "array_to_string",
    "string_to_array", "array_position", "array_positions", "array_remove", "array_append",
    "array_cat", "generate_series",
}  # fmt: skip
# Aggregates and window functions.
_AGGREGATES = {
    "count", "sum", "min", "max", "avg", "array_agg", "string_agg", "bool_and", "bool_or",
    "every", "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp",
    "percentile_cont", "percentile_disc", "mode",
    "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
    "first_value", "last_value", "nth_value",
}  # fmt: skip

FUNCTIONS: frozenset[str] = frozenset().union(
    _SERVER, _STATISTICS, _SIZES, _WAL, _AGES, _TIME, _NUMBERS, _TEXT, _ARRAYS, _AGGREGATES
)

# Catalog tables and statistics views (pg_catalog), and pg_stat_statements' views.
CATALOG_RELATIONS: frozenset[str] = frozenset({
    # sessions, locks, prepared transactions
    "pg_stat_activity", "pg_locks", "pg_prepared_xacts", "pg_stat_ssl", "pg_stat_gssapi",
    "pg_wait_events",
    # databases, tables, indexes, functions
    "pg_stat_database", "pg_stat_database_conflicts", "pg_stat_all_tables", "pg_stat_sys_tables",
    "pg_stat_user_tables", "pg_stat_all_indexes", "pg_stat_sys_indexes", "pg_stat_user_indexes",
    "pg_statio_all_tables", "pg_statio_sys_tables", "pg_statio_user_tables",
    "pg_statio_all_indexes", "pg_statio_sys_indexes", "pg_statio_user_indexes",
    "pg_statio_all_sequences", "pg_statio_user_sequences", "pg_stat_user_functions",
    # background processes, WAL, I/O
    "pg_stat_archiver", "pg_stat_bgwriter", "pg_stat_checkpointer", "pg_stat_wal", "pg_stat_io",
    "pg_stat_slru", "pg_stat_recovery_prefetch",
    # replication
    "pg_stat_replication", "pg_stat_replication_slots", "pg_replication_slots",
    "pg_stat_wal_receiver", "pg_stat_subscription", "pg_stat_subscription_stats",
    # progress of maintenance
    "pg_stat_progress_vacuum", "pg_stat_progress_analyze", "pg_stat_progress_cluster",
    "pg_stat_progress_create_index", "pg_stat_progress_basebackup", "pg_stat_progress_copy",
    # settings and catalogs
    "pg_settings", "pg_database", "pg_class", "pg_namespace", "pg_attribute", "pg_type",
    "pg_depend", "pg_index", "pg_constraint", "pg_inherits", "pg_partitioned_table",
    "pg_tablespace", "pg_extension", "pg_roles", "pg_am", "pg_sequences", "pg_tables",
    "pg_indexes", "pg_sequence", "pg_attrdef",
    # the pg_stat_statements extension
    "pg_stat_statements", "pg_stat_statements_info",
})  # fmt: skip

# The portal's tables, as pg_runbook_exporter/sql/portal-schema.sql creates them (a test keeps the
# two equal). Written unqualified in a check; they resolve in the portal's schema.
PORTAL_TABLES: frozenset[str] = frozenset({"users", "id_mappings", "_prisma_migrations"})

# Operators of built-in types (comparison, arithmetic, text matching, arrays, network).
OPERATORS: frozenset[str] = frozenset({
    "=", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "^", "|/", "@",
    "||", "~~", "!~~", "~~*", "!~~*", "~", "!~", "~*", "!~*",
    "@>", "<@", "&&", "<<", ">>", "<<=", ">>=", "&", "|", "#",
})  # fmt: skip

# Types a value may be cast to (their input functions and casts are the catalog's own).
TYPES: frozenset[str] = frozenset({
    "bool", "int2", "int4", "int8", "float4", "float8", "numeric", "text", "varchar", "bpchar",
    "char", "name", "oid", "xid", "xid8", "regclass", "regnamespace", "regrole", "regtype",
    "pg_lsn", "interval", "timestamp", "timestamptz", "date", "time", "timetz", "inet", "cidr",
    "json", "jsonb", "uuid", "bytea",
})  # fmt: skip
