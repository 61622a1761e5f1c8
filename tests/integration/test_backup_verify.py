"""verify-backup: real dumps of a seeded portal database restored into throwaway servers."""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pg_runbook_exporter import demo
from pg_runbook_exporter.backup.record import Outcome, VerificationRecord, read_record, record_path
from pg_runbook_exporter.backup.verify import VerifyOptions, verify
from pg_runbook_exporter.config import load_config
from pg_runbook_exporter.database_url import DatabaseTarget, parse_database_url
from pg_runbook_exporter.pgserver.binaries import find_binaries
from tests.conftest import PortalDb, Server, Servers, required
from tests.support.collect import wait_for
from tests.support.dumps import (
    SEEDED_CHECKS,
    SEEDED_TABLES,
    Dumps,
    pg_dump,
    private_work_dir,
    seeded_portal,
    write_dumps,
)

CONFIG = load_config()
FORMATS = ("plain", "gzip", "custom")


@pytest.fixture(scope="module")
def seeded(pg_servers: Servers, pg: Server) -> Iterator[PortalDb]:
    """One seeded portal database for the module (the demo's data)."""
    with seeded_portal(pg_servers, pg) as db:
        yield db


@pytest.fixture(scope="module")
def dumps(seeded: PortalDb, tmp_path_factory: pytest.TempPathFactory) -> Dumps:
    return write_dumps(seeded.dsn, tmp_path_factory.mktemp("backups"))


@pytest.fixture
def work_dir() -> Iterator[Path]:
    with private_work_dir() as path:
        yield path


def processes_mentioning(path: Path) -> list[int]:
    """Live processes whose command line names ``path`` (a postmaster names its data dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(path).encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def run_verify(
    backup: Path, work_dir: Path, *, live: DatabaseTarget | None = None, timeout: float = 300
) -> VerificationRecord:
    """verify() in-process; afterwards nothing of it remains: no directory, no server."""
    options = VerifyOptions(
        backup=backup, config=CONFIG, work_dir=work_dir, timeout=timeout, live=live
    )
    record = verify(options)
    assert list(work_dir.iterdir()) == []
    assert processes_mentioning(work_dir) == []
    return record


def cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "pg_runbook_exporter", "verify-backup", *map(str, args)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_restores_exactly_the_seeded_counts(
    fmt: str, dumps: Dumps, work_dir: Path
) -> None:
    record = run_verify(dumps.by_format(fmt), work_dir)
    assert record.outcome is Outcome.PASSED, record.message
    assert record.format == fmt
    assert record.tables == SEEDED_TABLES
    assert record.checks == SEEDED_CHECKS
    assert record.dumped_by is not None and record.dumped_by.startswith("18.")
    assert record.server_version is not None and record.server_version.startswith("18.")
    assert record.server_choice == "the major of the pg_dump that wrote it"
    # Plain SQL carries the monitoring role's column grants; that role is not on the scratch
    # server. Archives are restored with --no-privileges.
    privileges = r"^(GRANT|REVOKE|ALTER DEFAULT PRIVILEGES) .* TO pgrb_exporter;$"
    grants = len(re.findall(privileges, dumps.plain.read_text(), re.M))
    assert grants > 0
    assert record.tolerated == ({"grant": grants} if fmt != "custom" else {})


def test_a_dump_of_an_older_pg_dump_restores_into_its_own_major(
    pg_servers: Servers, work_dir: Path, tmp_path: Path
) -> None:
    old = required(lambda: find_binaries(15, fetch=False))
    pg_dump_15 = old.tool("pg_dump")
    assert pg_dump_15 is not None
    server = pg_servers.get(15)
    db = pg_servers.portal_db(server)
    try:
        server.execute(demo.SEED_SQL, dbname=db.name)
        backup = pg_dump(db.dsn, tmp_path / "backup_20261201_020000.sql", program=pg_dump_15)
    finally:
        server.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')
    record = run_verify(backup, work_dir)
    assert record.outcome is Outcome.PASSED, record.message
    assert (record.dumped_by or "").startswith("15.")
    assert record.server_version == old.version
    assert record.client_version is not None and record.client_version.startswith("18.")
    assert record.tables == SEEDED_TABLES


def test_a_truncated_gzip_writes_a_failed_record_and_exits_1(
    dumps: Dumps, work_dir: Path, tmp_path: Path
) -> None:
    truncated = tmp_path / "backup_20261202_020000.sql.gz"
    truncated.write_bytes(dumps.gzip.read_bytes()[: dumps.gzip.stat().st_size // 2])
    done = subprocess.run(
        cli(truncated, "--work-dir", work_dir),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    record = read_record(record_path(truncated))
    assert record.outcome is Outcome.TRUNCATED
    assert record.message == "the gzip stream ends before its end marker"
    assert record.tables == {}
    assert "FAILED (truncated)" in done.stdout
    assert list(work_dir.iterdir()) == []


def test_a_file_that_is_not_a_dump_fails(work_dir: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "backup_20261203_020000.dump"
    garbage.write_bytes(os.urandom(4096))
    record = run_verify(garbage, work_dir)
    assert record.outcome is Outcome.NOT_A_DUMP
    assert record.server_version is None


def test_a_dump_without_the_portal_tables_fails(pg: Server, work_dir: Path, tmp_path: Path) -> None:
    name = pg.create_database(f"pgrb_not_portal_{os.getpid()}")
    try:
        pg.execute("CREATE TABLE orders (id int PRIMARY KEY)", dbname=name)
        backup = pg_dump(pg.dsn(dbname=name), tmp_path / "backup_20261204_020000.dump", "-Fc")
    finally:
        pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    record = run_verify(backup, work_dir)
    assert record.outcome is Outcome.NO_PORTAL_TABLES
    assert record.message == "the restored copy has no table users, id_mappings"


def test_a_statement_that_fails_fails_the_verification_without_quoting_data(
    dumps: Dumps, work_dir: Path, tmp_path: Path
) -> None:
    text = dumps.plain.read_text()
    broken = tmp_path / "backup_20261205_020000.sql"
    # The users table loses its email column: every row of its COPY becomes a data error.
    broken.write_text(text.replace("    email text NOT NULL,\n", "", 1))
    assert broken.read_text() != text
    record = run_verify(broken, work_dir)
    assert record.outcome is Outcome.RESTORE_ERRORS
    assert "COPY public.users" in record.message
    assert "@example.com" not in record.message
    assert "user-" not in record.message


def test_counts_are_compared_with_the_live_database(
    seeded: PortalDb, dumps: Dumps, work_dir: Path
) -> None:
    live = parse_database_url(seeded.monitor_dsn)
    record = run_verify(dumps.custom, work_dir, live=live)
    assert record.outcome is Outcome.PASSED, record.message
    assert record.live_tables == SEEDED_TABLES
    grown = SEEDED_TABLES["users"] // 2
    seeded.server.execute(
        "INSERT INTO users (id, email, updated_at)"
        " SELECT 'new-' || g, 'new' || g || '@example.com', now()"
        f" FROM generate_series(1, {grown}) g",
        dbname=seeded.name,
    )
    try:
        record = run_verify(dumps.custom, work_dir, live=live)
    finally:
        seeded.server.execute("DELETE FROM users WHERE id LIKE 'new-%%'", dbname=seeded.name)
    assert record.outcome is Outcome.COUNTS_DIFFER
    restored, now = SEEDED_TABLES["users"], SEEDED_TABLES["users"] + grown
    assert (
        record.message
        == f"users: {restored} restored, {now} live (tolerance 10% of the live count)"
    )


def _slow_dump(dumps: Dumps, directory: Path) -> Path:
    """The plain dump with a long sleep after its data: a restore that is surely under way."""
    slow = directory / "backup_20261206_020000.sql"
    text = dumps.plain.read_text()
    marker = "\\.\n"
    slow.write_text(text.replace(marker, marker + "\nSELECT pg_sleep(600);\n", 1))
    return slow


def _postmaster_pids(work_dir: Path) -> list[int]:
    pids = []
    for pidfile in work_dir.glob("pgrb-verify-*/pgrb-*/data/postmaster.pid"):
        try:
            pids.append(int(pidfile.read_text().splitlines()[0]))
        except (OSError, IndexError, ValueError):
            continue
    return pids


def test_ctrl_c_mid_restore_leaves_no_server_no_directory_and_no_record(
    dumps: Dumps, work_dir: Path, tmp_path: Path
) -> None:
    slow = _slow_dump(dumps, tmp_path)
    process = subprocess.Popen(
        cli(slow, "--work-dir", work_dir),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        postmasters: list[int] = []

        def restoring() -> bool:
            postmasters[:] = _postmaster_pids(work_dir)
            psql = [pid for pid in processes_mentioning(work_dir) if _is_psql(pid)]
            return bool(postmasters and psql)

        wait_for(restoring, timeout=60, what="psql to be restoring the slow dump")
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, output
    assert "interrupted" in output
    assert list(work_dir.iterdir()) == []
    assert processes_mentioning(work_dir) == []
    assert all(not Path(f"/proc/{pid}").exists() or _is_zombie(pid) for pid in postmasters)
    assert not record_path(slow).exists()


def test_a_restore_past_the_timeout_fails_and_cleans_up(
    dumps: Dumps, work_dir: Path, tmp_path: Path
) -> None:
    slow = _slow_dump(dumps, tmp_path)
    record = run_verify(slow, work_dir, timeout=5)
    assert record.outcome is Outcome.TIMEOUT
    assert record.message == "restore not done within 5s"


def _is_psql(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"psql")
    except OSError:
        return False


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_the_serving_path_never_loads_the_verification() -> None:
    probe = (
        "import sys\n"
        "import pg_runbook_exporter.cli\n"
        "from pg_runbook_exporter import app\n"
        "from pg_runbook_exporter.backup.sources import BackupOptions\n"
        "setup = app.prepare(app.CollectionOptions(url='postgresql://u@127.0.0.1/db',\n"
        "                                          backups=BackupOptions(directory=None)))\n"
        "app.build_pipeline(setup.config, setup.target, backups=setup.backups)\n"
        "print(sorted(m for m in sys.modules if m.startswith('pg_runbook_exporter.backup')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = ast.literal_eval(done.stdout)
    assert "pg_runbook_exporter.backup.sources" in loaded
    assert not {
        f"pg_runbook_exporter.backup.{m}" for m in ("verify", "restore", "versions", "command")
    } & set(loaded)
