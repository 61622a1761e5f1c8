"""Files derived from queries.yaml are committed exactly as the generators produce them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from pg_runbook_exporter.config import load_config
from pg_runbook_exporter.mixin.generate import drift

REPO = Path(__file__).resolve().parents[2]


def test_generated_files_match_queries_yaml() -> None:
    stale = drift(load_config(), root=REPO)
    assert stale == [], "run `pg-runbook-exporter generate` and commit the result"


def test_generate_check_fails_on_a_hand_edited_file(tmp_path: Path) -> None:
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    shutil.copy(REPO / "pg_runbook_exporter" / "queries.yaml", tmp_path / "queries.yaml")
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copytree(REPO / "alerts", tmp_path / "alerts", dirs_exist_ok=True)
    shutil.copytree(REPO / "dashboards", tmp_path / "dashboards", dirs_exist_ok=True)
    metrics = tmp_path / "docs" / "metrics.md"
    metrics.write_text(metrics.read_text() + "\nA line someone added by hand.\n")
    command = [
        sys.executable,
        "-m",
        "pg_runbook_exporter",
        "generate",
        "--root",
        str(tmp_path),
        "--config",
        str(tmp_path / "queries.yaml"),
    ]
    result = subprocess.run([*command, "--check"], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "docs/metrics.md: differs from the generator's output" in result.stderr
    subprocess.run(command, check=True, capture_output=True)
    again = subprocess.run([*command, "--check"], capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr


def test_alert_links_point_where_the_deployment_says(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pg_runbook_exporter", "generate", "--root", str(tmp_path),
         "--alerts.runbook-base-url", "https://wiki.portal.internal/db/",
         "--alerts.dashboard-base-url", "https://grafana.portal.internal/d/"],
        check=True, capture_output=True,
    )  # fmt: skip
    rules = (tmp_path / "alerts" / "pg-runbook-exporter.rules.yml").read_text()
    assert "runbook_url: https://wiki.portal.internal/db/PostgresDown.md" in rules
    assert "dashboard_url: https://grafana.portal.internal/d/pgrb-health" in rules
    assert "example.com" not in rules
    assert not (tmp_path / "README.md").exists()  # no checkout here: only the generated files
