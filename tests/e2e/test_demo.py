"""The README's first command: the demo serves the seeded faults, on /metrics and /status, and
cleans up on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from pg_runbook_exporter import demo
from pg_runbook_exporter.pgserver.throwaway import free_port
from tests.support.collect import Scrape, wait_for


def scrape(port: int) -> Scrape | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return Scrape.parse(reply.read().decode())
    except OSError:
        return None


def test_demo_serves_the_seeded_faults_and_removes_everything_on_ctrl_c(tmp_path: Path) -> None:
    """Fails when a seeded count, the blocked lock or the status page (on in the demo) is missing,
    or when Ctrl-C leaves the data directory behind."""
    port = free_port()
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pg_runbook_exporter",
                "demo",
                "--web.listen-address",
                f"127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:

        def integrity_counted() -> bool:
            found = scrape(port)
            # one session runs the checks in file order: prisma_migrations after the integrity ones
            return found is not None and all(
                found.get(name) is not None
                for name in ("pgrb_id_mappings_duplicate_sf_ids", "pgrb_prisma_migrations_failed")
            )

        wait_for(integrity_counted, timeout=90, what="the demo to serve its integrity counts")
        metrics = scrape(port)
        assert metrics is not None
        assert metrics.value("pgrb_id_mappings_orphaned") == demo.ORPHANED_MAPPINGS
        assert metrics.value("pgrb_id_mappings_duplicate_whmcs_ids") == demo.DUPLICATE_WHMCS_IDS
        assert metrics.value("pgrb_id_mappings_duplicate_sf_ids") == demo.DUPLICATE_SF_IDS
        assert metrics.value("pgrb_prisma_migrations_failed") == 1
        wait_for(
            lambda: (s := scrape(port)) is not None and s.get("pgrb_blocked_sessions") == 1,
            what="the demo's blocked lock",
        )
        # its blocker is named from the first run on: the demo lets the wait age first
        blocker = {"application_name": "portal-migrations", "relation": "public.portal_orders"}
        metrics = scrape(port)
        assert metrics is not None
        assert metrics.value("pgrb_lock_blocker_waiting_sessions", **blocker) == 1
        assert metrics.value("pgrb_lock_blocker_waiting_sessions_all", **blocker) == 1
        # the demo turns the status page on: its offenders name the same blocker
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=5) as reply:
            document = json.load(reply)
        sections = {section["kind"]: section for section in document["offenders"]}
        blockers = sections["blockers"]["offenders"]
        assert [(b["application_name"], b["relation"]) for b in blockers] == [
            ("portal-migrations", "public.portal_orders")
        ]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as reply:
            assert reply.status == 200
            assert "portal-migrations" in reply.read().decode()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    output = log.read_text()
    assert f"http://127.0.0.1:{port}/metrics" in output
    assert f"http://127.0.0.1:{port}/status" in output
    data_dir = re.search(r"removed (\S+)", output)
    assert data_dir is not None, output
    assert not Path(data_dir.group(1)).exists()
