"""The ``check`` command run against a real PostgreSQL: its table, its failures by reason, the grant
a permission error needs, never the password.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import PortalDb
from tests.support.shapes import WRONG_SHAPE_ERRORS, WRONG_SHAPES


def test_check_command_prints_the_shape_error(portal_db: PortalDb, tmp_path: Path) -> None:
    path = tmp_path / "shapes.yaml"
    path.write_text(WRONG_SHAPES)
    result = subprocess.run(
        [sys.executable, "-m", "pg_runbook_exporter", "check", "--config", str(path),
         "--database.url", portal_db.monitor_dsn],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    for name, message in WRONG_SHAPE_ERRORS.items():
        line = next(x for x in lines if x.startswith(name + " "))
        assert line.endswith(f"FAILED (invalid_result): {message}"), line
    assert "1 ok, 4 failed, 0 skipped" in result.stdout


def test_check_command_accepts_the_apps_prisma_url_and_never_prints_the_password(
    portal_db: PortalDb,
) -> None:
    url = portal_db.monitor_dsn + "?connection_limit=10&pool_timeout=10&schema=public"
    result = subprocess.run(
        [sys.executable, "-m", "pg_runbook_exporter", "check"],
        env={"DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "id_mappings_orphans" in output
    assert " failed" in output and "0 failed" in output
    assert "monitor-test-password" not in output


def test_check_command_names_the_grant_a_permission_error_needs(portal_db: PortalDb) -> None:
    portal_db.server.execute(
        "REVOKE SELECT ON id_mappings FROM pgrb_exporter;"
        "REVOKE SELECT (user_id, whmcs_client_id, sf_account_id) "
        "ON id_mappings FROM pgrb_exporter",
        dbname=portal_db.name,
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pg_runbook_exporter",
            "check",
            "--database.url",
            portal_db.monitor_dsn,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "FAILED (permission)" in result.stdout
    assert (
        "psql -d <portal database> -v role=pgrb_exporter"
        " -f pg_runbook_exporter/sql/monitoring-role.sql"
        "  # SELECT on the columns of id_mappings the checks read" in result.stdout
    )
    assert "GRANT SELECT ON" not in result.stdout
    assert "monitor-test-password" not in result.stdout + result.stderr
