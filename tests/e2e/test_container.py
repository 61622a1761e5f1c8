"""The Containerfile's image, built with Podman and run read-only as a non-root user.

It serves the seeded orphaned mappings of the test database from ``/metrics``, reads the password
from a mounted file, and its HEALTHCHECK passes. The image size is printed (``pytest -s``).
"""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import psycopg.conninfo
import pytest

from tests.conftest import PortalDb
from tests.support.collect import Scrape
from tests.support.container import ULIMITS, ImageInfo, Podman, build_image
from tests.support.stack import free_port, http_get, wait_until

USER = "10001:10001"  # the Containerfile's USER
ORPHANS = 6
SECRET_DIR = "/run/secrets/pg-runbook-exporter"


@pytest.fixture(scope="module")
def podman() -> Podman:
    return Podman.require()


@pytest.fixture(scope="module")
def image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> ImageInfo:
    built = build_image(podman, tmp_path_factory.mktemp("image"))
    print(
        f"\nimage {built.ref}: {built.size / 1e6:.1f} MB, of which the exporter's layer "
        f"{built.layer / 1e6:.1f} MB on the mmdebstrap Debian base"
    )
    return built


def seed_orphans(db: PortalDb) -> None:
    db.server.execute(
        "INSERT INTO users (id, email, updated_at) "
        "SELECT 'u' || g, 'u' || g || '@example.com', now() FROM generate_series(1, 3) g",
        dbname=db.name,
    )
    db.server.execute(
        "INSERT INTO id_mappings (id, user_id, whmcs_client_id, updated_at) "
        "SELECT 'm' || g, CASE WHEN g <= 3 THEN 'u' || g ELSE 'gone-' || g END, 100 + g, now() "
        "FROM generate_series(1, %s) g",
        (3 + ORPHANS,),
        dbname=db.name,
    )


def url_without_password(dsn: str) -> tuple[str, str]:
    """(a URL without the password, the password), as an operator would split them."""
    parts = psycopg.conninfo.conninfo_to_dict(dsn)
    password = str(parts.pop("password"))
    url = f"postgresql://{parts['user']}@{parts['host']}:{parts['port']}/{parts['dbname']}"
    return url, password


@pytest.fixture
def container(
    podman: Podman, image: ImageInfo, portal_db: PortalDb, tmp_path: Path
) -> Iterator[str]:
    """The image running against ``portal_db`` on the host network; yields its /metrics URL."""
    seed_orphans(portal_db)
    url, password = url_without_password(portal_db.monitor_dsn)
    secrets = tmp_path / "secret"
    secrets.mkdir()
    (secrets / "password").write_text(password + "\n", encoding="utf-8")
    # As Kubernetes mounts a Secret with defaultMode 0440 and fsGroup: root's, the group's to read.
    os.chown(secrets / "password", 0, 10001)
    os.chmod(secrets / "password", 0o440)
    os.chmod(secrets, 0o755)
    port = free_port()
    name = f"pgrb-test-{os.getpid()}"
    podman.run("rm", "--force", name, check=False)
    podman.run(
        "run", "--detach", "--name", name,
        "--read-only", "--network=host", "--user", USER, *ULIMITS,
        "--volume", f"{secrets}:{SECRET_DIR}:ro",
        "--env", f"PGRB_DATABASE_URL={url}",
        "--env", f"PGRB_DATABASE_PASSWORD_FILE={SECRET_DIR}/password",
        "--env", f"PGRB_WEB_LISTEN_ADDRESS=127.0.0.1:{port}",
        image.ref,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        logs = podman.run("logs", name, check=False)
        print(f"--- container log ---\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        podman.run("rm", "--force", "--time", "5", name, check=False)


def test_the_image_is_non_root_exposes_the_port_and_checks_its_health(image: ImageInfo) -> None:
    assert image.config["User"] == USER
    assert "9819/tcp" in image.config["ExposedPorts"]
    assert image.healthcheck is not None, "built without --format=docker?"
    assert image.healthcheck["Test"] == [
        "CMD", "python", "-m", "pg_runbook_exporter.healthcheck"
    ]  # fmt: skip
    assert image.config["Entrypoint"] == ["pg-runbook-exporter"]


def test_the_read_only_image_serves_the_seeded_orphans_as_a_non_root_user(
    podman: Podman, container: str
) -> None:
    name = f"pgrb-test-{os.getpid()}"

    def orphans() -> Scrape | None:
        running = podman.run("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
        if running != "true":
            pytest.fail(f"the container stopped: {podman.run('logs', name).stderr[-3000:]}")
        try:
            scrape = Scrape.parse(http_get(container, timeout=1.0).decode())
        except (OSError, urllib.error.URLError):
            return None
        return scrape if scrape.get("pgrb_id_mappings_orphaned") is not None else None

    scrape = wait_until(orphans, what=f"pgrb_id_mappings_orphaned at {container}")
    assert scrape.value("pgrb_id_mappings_orphaned") == ORPHANS
    assert scrape.value("pgrb_up") == 1

    inspect = "{{.HostConfig.ReadonlyRootfs}} {{.State.Pid}}"
    read_only, pid = podman.run("inspect", "--format", inspect, name).stdout.split()
    assert read_only == "true"
    status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == ["10001"] * 4, status  # the exporter itself, not a wrapper, runs as 10001

    health = podman.run("healthcheck", "run", name, check=False)
    assert health.returncode == 0, health.stdout + health.stderr
