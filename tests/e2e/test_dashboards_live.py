"""Every panel of every board against a real Prometheus scraping the exporter on real PostgreSQL.

One stack for the module: PostgreSQL 18 with WAL archiving and the logging collector on (18's
initdb enables data checksums, so the checksum panels have something to count), the exporter with
every check each second, node_exporter for the data volume, Prometheus scraping both each second
(the boards generated for node_exporter's job and the mountpoint of the server's data). The
database first looks like a healthy portal (app sessions in their pool, vacuumed tables, archived
WAL): every panel not documented as empty-when-healthy must return data. Then the runbook's faults
are seeded (orphaned and duplicate mappings, a failed and an unfinished migration, a bloated
table, a lock wait behind a session idle in its transaction, a replication slot, a failing
archive_command, a table a check needs dropped, a failed concurrent unique build and one parked
behind an old snapshot) and every panel, the documented-empty ones included, must return data;
the front tiles must show the seeded counts.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from pg_runbook_exporter.config import load_config
from pg_runbook_exporter.mixin import dashgen
from pg_runbook_exporter.mixin.dashdetail import STORAGE
from pg_runbook_exporter.mixin.dashpanels import Panel
from pg_runbook_exporter.mixin.options import MixinOptions
from pg_runbook_exporter.pgserver.throwaway import ThrowawayServer
from tests.conftest import PortalDb, Servers, start_throwaway
from tests.support.sessions import Sessions, fail_unique_build, park_a_build
from tests.support.stack import (
    JOB,
    NODE_JOB,
    PrometheusStack,
    fast_config,
    module_portal_db,
    prometheus_stack,
    wait_until,
)
from tests.unit.test_mixin_dashgen import data_panels, metric_names, substitute, variable_selector

E2E_MAJOR = 18
# Grafana's $__rate_interval for a 1 s scrape interval: four scrapes.
RATE_INTERVAL = "4s"
RANGE_SECONDS = 30.0
APP = "portal-bff"
APP_SESSIONS = 2
# Empty while healthy for a reason the test controls. The activity panels are left out: the
# exporter's second session is itself an active client query, now and then, at any scrape.
QUIET_WHEN_HEALTHY = {
    "Dead-row ratio (tables of 10000+ rows)",
    "Longest lock wait",
    "Oldest WAL segment not archived",
    "Time since last archive failure",
    "WAL retained by replication slots",
    "Unfinished migration running for",
    "Skipped checks (now)",
}
# A check of the test's own config that needs a table the faults drop: then it is skipped with
# reason "relation", as a runbook check is when the exporter watches the wrong database.
PROBE_CHECK, PROBE_TABLE = "needs_a_dropped_table", "dropped_by_the_faults"
USERS = 40
BLOATED_ROWS, BLOATED_DELETED = 12000, 4000  # dead ratio 1/3, above the 10000-row floor
SMALL_ROWS, SMALL_DELETED = 100, 90  # dead ratio 0.9, below the floor: never the worst


def mountpoint_of(path: Path) -> str:
    """The mountpoint of the filesystem holding ``path``, as /proc/self/mounts lists it."""
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        points = [line.split()[1] for line in mounts]
    resolved = os.path.realpath(path)
    return max((p for p in points if resolved == p or resolved.startswith(p.rstrip("/") + "/")),
               key=len)  # fmt: skip


@functools.cache
def _options() -> MixinOptions:
    """The boards for this stack: its node job and the volume of the servers' data (temp dirs)."""
    return MixinOptions(
        node_job=NODE_JOB, node_mountpoint=mountpoint_of(Path(tempfile.gettempdir()))
    )


def _boards() -> list[dict[str, Any]]:
    files = dashgen.generate(load_config(), _options())
    return [json.loads(text) for path, text in files.items() if path.endswith(".json")]


def _models() -> dict[tuple[str, str], Panel]:
    return {
        (b.uid, p.title): p for b in dashgen.boards(load_config(), _options()) for p in b.panels
    }


def _sql(db: PortalDb, statement: str, params: tuple[Any, ...] | None = None) -> list[Any]:
    return db.server.execute(statement, params, dbname=db.name)


def _seed_healthy(db: PortalDb) -> None:
    _sql(db, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    _sql(
        db,
        "INSERT INTO users (id, email, updated_at) "
        "SELECT 'u' || g, 'u' || g || '@example.com', now() FROM generate_series(1, %s) g;",
        (USERS,),
    )
    _sql(
        db,
        "INSERT INTO id_mappings (id, user_id, whmcs_client_id, sf_account_id, updated_at) "
        "SELECT 'm' || g, 'u' || g, 1000 + g, 'sf' || g, now() FROM generate_series(1, %s) g",
        (USERS,),
    )
    _sql(
        db,
        "INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, finished_at, "
        "applied_steps_count) VALUES ('m1', repeat('a', 64), '20250101_init', now(), now(), 1)",
    )
    _sql(
        db,
        "CREATE TABLE lock_target (id int PRIMARY KEY, n int); "
        "INSERT INTO lock_target VALUES (1, 0)",
    )
    _sql(db, f"CREATE TABLE {PROBE_TABLE} (id int)")
    # Prisma's Int @default(autoincrement()) in use, and a table a build will wait on
    _sql(db, "CREATE TABLE invoices (id serial PRIMARY KEY); INSERT INTO invoices DEFAULT VALUES")
    _sql(db, "CREATE TABLE reindexed (n int); INSERT INTO reindexed VALUES (1)")
    _sql(db, "SELECT count(*) FROM users u JOIN id_mappings m ON m.user_id = u.id")
    _sql(db, "VACUUM ANALYZE")
    # one archived segment, so "time since last archived WAL" has a timestamp
    _sql(db, "SELECT pg_switch_wal()")
    wait_until(
        lambda: _sql(db, "SELECT archived_count > 0 FROM pg_stat_archiver")[0][0],
        what="the first WAL segment to be archived",
    )


@pytest.fixture(scope="module")
def server() -> Iterator[ThrowawayServer]:
    started = start_throwaway(E2E_MAJOR, archive_mode="on", settings={"logging_collector": True})
    try:
        yield started
    finally:
        started.cleanup()


@pytest.fixture(scope="module")
def sessions() -> Iterator[list[psycopg.Connection[Any]]]:
    """Client sessions the module opens; closed (waiters after their blockers) at the end."""
    opened: list[psycopg.Connection[Any]] = []
    yield opened
    for conn in opened:
        with contextlib.suppress(psycopg.Error):
            conn.cancel_safe(timeout=2)
        conn.close()


@pytest.fixture(scope="module")
def db(
    pg_servers: Servers, server: ThrowawayServer, sessions: list[psycopg.Connection[Any]]
) -> Iterator[PortalDb]:
    with module_portal_db(pg_servers, server) as portal:
        _seed_healthy(portal)
        for _ in range(APP_SESSIONS):  # the app's pool, idle between requests
            sessions.append(psycopg.connect(portal.dsn, autocommit=True, application_name=APP))
        yield portal


def _config_with_probe(path: Path) -> Path:
    """queries.yaml, every check each second, plus PROBE_CHECK."""
    data = yaml.safe_load(fast_config(path).read_text(encoding="utf-8"))
    data["checks"][PROBE_CHECK] = {
        "help": "Test only: runs while its table exists.",
        "interval": "1s",
        "timeout": "1s",
        "requires": {"relations": [PROBE_TABLE]},
        "sql": "SELECT 1 AS probe_runs",
        "metrics": {"probe_runs": {"name": "probe_runs", "type": "gauge", "help": "Test only."}},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def stack(db: PortalDb, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusStack]:
    workdir: Path = tmp_path_factory.mktemp("dashboards-stack")
    config = _config_with_probe(workdir / "queries.yaml")
    with prometheus_stack(
        workdir, database_url=db.monitor_dsn, config=config, node_exporter=True
    ) as running:
        checks = len(load_config(config).checks)
        # every check runs: nothing is skipped on the healthy database
        running.wait_for(f"count(pgrb_check_success == 1) == {checks}", what="every check to run")
        # every rate over $__rate_interval (4 s) and every deriv needs two samples of each series:
        # three scrapes of every check's results leave one to spare
        running.wait_for(
            "min(count_over_time(pgrb_check_success[10s])) >= 3",
            what="three scrapes of every check's results",
        )
        yield running


def _regex_escape(value: str) -> str:
    # what Grafana does to each value of a multi-value variable in a Prometheus query
    return re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", value)


def resolve_variables(stack: PrometheusStack, board: Mapping[str, Any]) -> dict[str, str]:
    """The variables' values as Grafana would pick them: each query narrowed by the ones before."""
    values = {"__rate_interval": RATE_INTERVAL}
    for variable in board["templating"]["list"][1:]:
        selector = substitute(variable_selector(variable), values)
        label = variable["query"]["query"].rsplit(", ", 1)[1].rstrip(")")
        found = sorted(stack.prometheus.api(f"label/{label}/values", **{"match[]": selector}))
        assert found, f"{board['uid']}: variable {variable['name']} has no values"
        if variable["multi"]:
            values[variable["name"]] = "(" + "|".join(_regex_escape(v) for v in found) + ")"
        else:
            values[variable["name"]] = found[0]
    return values


def run_panel(stack: PrometheusStack, panel: Mapping[str, Any], values: Mapping[str, str]
              ) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """refId → result of the panel's query, instant or over the last RANGE_SECONDS."""
    now = time.time()
    results = {}
    for target in panel["targets"]:
        expr = substitute(target["expr"], values)
        if target["instant"]:
            results[target["refId"]] = stack.prometheus.query(expr, at=now)
        else:
            results[target["refId"]] = stack.prometheus.query_range(
                expr, start=now - RANGE_SECONDS, end=now
            )
    return results


def every_panel(
    stack: PrometheusStack,
) -> Iterator[tuple[str, dict[str, Any], dict[str, list[Any]]]]:
    for board in _boards():
        values = resolve_variables(stack, board)
        for panel in data_panels(board):
            yield board["uid"], panel, run_panel(stack, panel, values)


def test_variables_resolve_through_job_instance_and_datname(
    stack: PrometheusStack, db: PortalDb
) -> None:
    for board in _boards():
        values = resolve_variables(stack, board)
        assert values["job"] == JOB
        assert values["instance"] == stack.exporter.address
        assert db.name in values["datname"]


def test_on_a_healthy_database_every_panel_has_data_but_the_documented_empty_ones(
    stack: PrometheusStack,
) -> None:
    models = _models()
    problems = []
    for uid, panel, results in every_panel(stack):
        model = models[uid, panel["title"]]
        empty = [ref for ref, result in results.items() if not result]
        if model.empty_when is None and empty:
            problems.append(f"{uid}: {panel['title']}: {empty} returned no data")
        quiet = model.empty_when is not None and panel["title"] in QUIET_WHEN_HEALTHY
        if quiet and len(empty) < len(results):
            problems.append(f"{uid}: {panel['title']}: data although '{model.empty_when}'")
    assert {p.title for p in models.values() if p.empty_when} >= QUIET_WHEN_HEALTHY
    assert not problems, "\n".join(problems)


def _seed_faults(db: PortalDb, sessions: list[psycopg.Connection[Any]]) -> None:
    _sql(db, f"DROP TABLE {PROBE_TABLE}")
    # The exporter re-reads which tables exist every 15 s, and at once when it reconnects: end its
    # sessions (as the runbook's "Kill Stuck Connections" would) rather than wait.
    _sql(
        db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
        (db.monitor_role,),
    )
    _sql(
        db,
        "INSERT INTO id_mappings (id, user_id, whmcs_client_id, sf_account_id, updated_at) VALUES "
        "('orphan', 'deleted-user', 9001, NULL, now()), "  # 1 orphan
        "('dup-w', 'u2', 1001, NULL, now()), "  # WHMCS id 1001 now on 2 rows
        "('dup-s1', 'u3', NULL, 'sf4', now()), ('dup-s2', 'u5', NULL, 'sf4', now())",  # 3 rows
    )
    _sql(
        db,
        "INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, finished_at, "
        "logs) VALUES ('m2', repeat('b', 64), '20250201_failed', now(), NULL, 'error: boom'), "
        "('m3', repeat('c', 64), '20250301_running', now(), NULL, NULL)",
    )
    for name, rows, deleted in (("bloated", BLOATED_ROWS, BLOATED_DELETED),
                                ("small_bloated", SMALL_ROWS, SMALL_DELETED)):  # fmt: skip
        _sql(db, f"CREATE TABLE {name} (id int) WITH (autovacuum_enabled = false)")
        _sql(db, f"INSERT INTO {name} SELECT generate_series(1, {rows})")
        _sql(db, f"DELETE FROM {name} WHERE id <= {deleted}")
    _sql(db, "SELECT pg_create_physical_replication_slot('dashboards_test', true)")
    # archiving starts failing: a finished segment stays .ready
    _sql(db, "CREATE TABLE wal_writes (n int)")
    _sql(db, "ALTER SYSTEM SET archive_command = 'false'")
    _sql(db, "SELECT pg_reload_conf()")

    def segment_waits() -> bool:
        _sql(db, "INSERT INTO wal_writes VALUES (1)")
        _sql(db, "SELECT pg_switch_wal()")
        ready = "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name ~ '[.]ready$'"
        failed = _sql(db, "SELECT failed_count FROM pg_stat_archiver")[0][0]
        return bool(_sql(db, ready)[0][0] > 0 and failed > 0)

    wait_until(segment_waits, what="a WAL segment to wait for the failing archive_command", every=1)
    # a session idle in its transaction holds a lock another session waits for
    holder = psycopg.connect(db.dsn, application_name=APP)
    holder.execute("LOCK TABLE lock_target IN SHARE MODE")
    waiter = psycopg.connect(db.dsn, autocommit=True, application_name=APP)
    sessions[:0] = [holder, waiter]  # closed first: the waiter's UPDATE then finishes

    def update() -> None:
        with contextlib.suppress(psycopg.Error):
            waiter.execute("UPDATE lock_target SET n = n + 1")

    threading.Thread(target=update, daemon=True).start()


@pytest.fixture(scope="module")
def builds(db: PortalDb) -> Iterator[Sessions]:
    """The sessions of the concurrent index builds the faults leave; ended at the end."""
    opened = Sessions(db.dsn)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def faults(
    stack: PrometheusStack,
    db: PortalDb,
    sessions: list[psycopg.Connection[Any]],
    builds: Sessions,
) -> PrometheusStack:
    _seed_faults(db, sessions)
    # a failed migration's unique index over the duplicate WHMCS id, and a build in progress
    fail_unique_build(db.dsn, "id_mappings_whmcs_client_id_key", "id_mappings", "whmcs_client_id")
    park_a_build(builds, "reindexed_n_idx", "reindexed", "n")
    for expr in (
        "pgrb_id_mappings_orphaned > 0",
        "pgrb_id_mappings_duplicate_sf_rows > 0",
        "pgrb_prisma_migration_oldest_unfinished_start_timestamp_seconds",
        # the exact ratio, not only a first one: the statistics of the INSERT and the DELETE may
        # reach the exporter in different runs (a run between them reads 4000 / 16000)
        f'abs(pgrb_table_dead_ratio{{relname="bloated"}} - {BLOATED_DELETED / BLOATED_ROWS})'
        " < 1e-9",
        'pgrb_table_dead_ratio{relname="small_bloated"} > 0',
        "pgrb_oldest_lock_wait_start_timestamp_seconds",
        "pgrb_oldest_idle_in_transaction_timestamp_seconds",
        "pgrb_wal_archive_oldest_ready_timestamp_seconds",
        "pgrb_wal_archive_last_failed_timestamp_seconds",
        "pgrb_replication_slot_retained_wal_bytes",
        f'pgrb_check_skipped{{check="{PROBE_CHECK}", reason="relation"}} == 1',
        'pgrb_invalid_indexes{indexrelname="id_mappings_whmcs_client_id_key"}',
        'pgrb_maintenance_running{relname="reindexed"}',
    ):
        stack.wait_for(expr)
    # both sessions back: every other check succeeds again after its connection error
    others = len(load_config().checks)
    stack.wait_for(f"count(pgrb_check_success == 1) == {others} and on() pgrb_up == 1")
    return stack


def test_with_the_runbook_faults_seeded_every_panel_has_data(faults: PrometheusStack) -> None:
    models = _models()
    filled: set[tuple[str, str]] = set()
    problems = []
    for uid, panel, results in every_panel(faults):
        empty = [ref for ref, result in results.items() if not result]
        if empty:
            problems.append(f"{uid}: {panel['title']}: {empty} returned no data")
        elif models[uid, panel["title"]].empty_when is not None:
            filled.add((uid, panel["title"]))
    assert not problems, "\n".join(problems)
    assert filled == {key for key, p in models.items() if p.empty_when is not None}


def test_skipped_checks_table_names_the_check_and_why(faults: PrometheusStack) -> None:
    board = next(b for b in _boards() if b["uid"] == dashgen.EXPORTER)
    (panel,) = [p for p in data_panels(board) if p["title"] == "Skipped checks (now)"]
    (rows,) = run_panel(faults, panel, resolve_variables(faults, board)).values()
    assert [(r["metric"]["check"], r["metric"]["reason"], r["value"][1]) for r in rows] == [
        (PROBE_CHECK, "relation", "1")
    ]


def _colour(panel: Panel, value: float) -> str:
    """The colour Grafana gives ``value``: the last step whose value it reaches."""
    colour = panel.steps[0].colour
    for step in panel.steps[1:]:
        if step.value is not None and value >= step.value:
            colour = step.colour
    return colour


def test_front_tiles_show_the_seeded_faults_in_their_alert_colours(
    faults: PrometheusStack, db: PortalDb
) -> None:
    health = next(b for b in _boards() if b["uid"] == dashgen.HEALTH)
    values = resolve_variables(faults, health)
    models = _models()
    shown: dict[tuple[str, str], float] = {}
    for panel in data_panels(health):
        for target in panel["targets"]:
            (sample,) = faults.query(substitute(target["expr"], values))
            shown[panel["title"], target["legendFormat"]] = float(sample["value"][1])

    def tile(title: str, legend: str = "__auto") -> tuple[float, str]:
        value = shown[title, legend]
        return value, _colour(models[dashgen.HEALTH, title], value)

    assert tile("Database up") == (1, "green")
    assert tile("Orphaned mappings") == (1, "orange")
    assert tile("Duplicate mappings", "WHMCS") == (2, "orange")
    assert tile("Duplicate mappings", "Salesforce") == (3, "orange")
    assert tile("Failed migrations") == (1, "red")
    assert tile("Busiest app pool") == (APP_SESSIONS + 2, "green")
    # the 10000-row floor keeps the small table's 0.9 out, as in the bloat alert
    ratio, colour = tile("Worst dead-row ratio")
    assert ratio == pytest.approx(BLOATED_DELETED / BLOATED_ROWS) and colour == "orange"
    for title in ("Longest lock wait", "Idle in transaction", "Oldest WAL not archived",
                  "Unfinished migration"):  # fmt: skip
        value, colour = tile(title)
        assert value > 0 and colour == "green", title  # seconds old, far below the thresholds
    assert tile("Checksum failures") == (0, "green")


def test_the_storage_board_shows_the_data_volume_node_exporter_sees(
    faults: PrometheusStack, server: ThrowawayServer
) -> None:
    board = next(b for b in _boards() if b["uid"] == STORAGE)
    (panel,) = [p for p in data_panels(board) if p["title"] == "Data volume size and free bytes"]
    results = run_panel(faults, panel, resolve_variables(faults, board))
    (size,) = results["B"]  # one volume: the one holding the server's data directory
    assert size["metric"]["mountpoint"] == mountpoint_of(server.data_dir)
    volume = os.statvfs(server.data_dir)
    assert float(size["values"][-1][1]) == volume.f_blocks * volume.f_frsize


def test_every_metric_a_board_names_is_in_a_live_scrape(faults: PrometheusStack) -> None:
    assert faults.node is not None
    text = faults.exporter.scrape() + faults.node.scrape()  # the data volume is node_exporter's
    exported = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}
    exported |= {
        match.group() for line in text.splitlines()
        if not line.startswith("#") and (match := re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line))
    }  # fmt: skip
    for board in _boards():
        values = resolve_variables(faults, board)
        queries = [t["expr"] for p in data_panels(board) for t in p["targets"]]
        queries += [variable_selector(v) for v in board["templating"]["list"][1:]]
        for query in queries:
            missing = metric_names(substitute(query, values)) - exported
            assert not missing, f"{board['uid']}: {query} names {missing}"
