"""The systemd units: they verify, score at most 2.0 in ``systemd-analyze security``, and run.

Both tools work on unit files offline, without systemd running. ``verify`` gets a scratch root
with the distribution's units, ours, and a stand-in at the ExecStart path (it checks that the
binary exists). The run test starts the instance's ExecStart as systemd would: the environment
file, ``${CREDENTIALS_DIRECTORY}`` holding the password, no capabilities, no new privileges and
memory that is never writable and executable at once (MemoryDenyWriteExecute).
"""

from __future__ import annotations

import ctypes
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PortalDb
from tests.support.collect import Scrape
from tests.support.stack import IN_CI, REPO, free_port, http_get, require_tool, wait_until

UNITS = REPO / "deploy" / "systemd"
PACKAGE = REPO / "pg_runbook_exporter"
PLAIN = "pg-runbook-exporter.service"
TEMPLATE = "pg-runbook-exporter@.service"
INSTANCE = "pg-runbook-exporter@portal.service"
MAX_EXPOSURE = 2.0
# What may differ between the plain unit and the template: everything else is one hardening.
PER_INSTANCE = ("Description=", "EnvironmentFile=", "LoadCredential=", "SyslogIdentifier=")
PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1


def systemd_analyze() -> str:
    return require_tool("systemd-analyze", packages="systemd")


def directives(unit: str) -> list[tuple[str, str]]:
    """(key, value) of every directive, in order; comments and section headers left out."""
    found = []
    for line in (UNITS / unit).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.append((key, value))
    return found


def value_of(unit: str, key: str) -> str:
    values = [v for k, v in directives(unit) if k == key]
    assert len(values) == 1, f"{unit}: {key}= appears {len(values)} times"
    return values[0]


@pytest.fixture(scope="module")
def scratch_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    shutil.copytree(UNITS, root / "etc/systemd/system", ignore=shutil.ignore_patterns("*.env"))
    binary = root / shlex.split(value_of(PLAIN, "ExecStart"))[0].lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n", encoding="utf-8")
    binary.chmod(0o755)
    return root


def test_the_units_verify_without_a_warning(scratch_root: Path) -> None:
    done = subprocess.run(
        [systemd_analyze(), "verify", f"--root={scratch_root}", PLAIN, INSTANCE],
        capture_output=True,
        text=True,
        check=False,
    )
    # Unknown keys and bad values are only warnings: any output at all fails the test.
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


@pytest.mark.parametrize("unit", [PLAIN, INSTANCE])
def test_the_exposure_level_is_at_most_2(scratch_root: Path, unit: str) -> None:
    done = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", f"--root={scratch_root}", unit],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", done.stdout)
    assert found, done.stdout + done.stderr
    print(f"\n{unit}: exposure {found.group(1)}")
    assert float(found.group(1)) <= MAX_EXPOSURE, done.stdout


def test_the_template_hardens_exactly_like_the_plain_unit() -> None:
    def shared(unit: str) -> list[tuple[str, str]]:
        return [(k, v) for k, v in directives(unit) if not (k + "=").startswith(PER_INSTANCE)]

    assert shared(TEMPLATE) == shared(PLAIN)
    assert value_of(TEMPLATE, "EnvironmentFile") == "/etc/pg-runbook-exporter/%i.env"
    assert value_of(TEMPLATE, "LoadCredential").endswith("/etc/pg-runbook-exporter/%i.password")


def test_the_example_environment_sets_only_flags_of_run() -> None:
    # The variables the command line reads, from its source (tests never import cli.py).
    known = set(re.findall(r'"(PGRB_\w+)"', (PACKAGE / "cli.py").read_text(encoding="utf-8")))
    example = (UNITS / "example.env").read_text(encoding="utf-8")
    keys = {m.group(1) for m in re.finditer(r"^#? ?(PGRB_\w+)=", example, re.MULTILINE)}
    assert keys, example
    assert keys <= known, keys - known


def environment_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as systemd reads them (no quotes are used in ours)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return dict(line.partition("=")[::2] for line in lines if line and not line.startswith("#"))


def hardened() -> None:
    """In the child before exec: what NoNewPrivileges and MemoryDenyWriteExecute impose."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


@pytest.fixture
def instance(portal_db: PortalDb, tmp_path: Path) -> Iterator[str]:
    """The template's ExecStart for instance ``portal``, started as systemd would; its URL."""
    setpriv = require_tool("setpriv", packages="util-linux")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) < 0:
        message = "the kernel has no PR_SET_MDWE (Linux 6.3+)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    url = portal_db.monitor_dsn
    password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o500)
    # systemd's LoadCredential= copy: name from the directive, owned by the service, 0400.
    name = value_of(TEMPLATE, "LoadCredential").split(":", 1)[0]
    (credentials / name).write_text(password + "\n", encoding="utf-8")
    (credentials / name).chmod(0o400)
    port = free_port()
    env_file = tmp_path / "portal.env"
    example = environment_file(UNITS / "example.env")
    example["PGRB_DATABASE_URL"] = url.replace(f":{password}@", "@")
    example["PGRB_WEB_LISTEN_ADDRESS"] = f"127.0.0.1:{port}"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in example.items()), encoding="utf-8")

    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}
    for key, value in directives(TEMPLATE):
        if key == "Environment":
            env.update(item.partition("=")[::2] for item in shlex.split(value))
    env.update(environment_file(env_file))
    env["CREDENTIALS_DIRECTORY"] = str(credentials)
    argv = shlex.split(value_of(TEMPLATE, "ExecStart"))
    argv = [a.replace("${CREDENTIALS_DIRECTORY}", env["CREDENTIALS_DIRECTORY"]) for a in argv]
    assert "$" not in " ".join(argv), argv
    # The installed entry point is this checkout's module; every argument stays as written.
    argv = [sys.executable, "-m", "pg_runbook_exporter", *argv[1:]]
    caps = ["--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs"]
    log = (tmp_path / "exporter.log").open("wb")
    process = subprocess.Popen(
        [setpriv, *caps, *argv],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=hardened,  # noqa: PLW1509 - no threads of ours run in the test process
    )
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        process.terminate()
        process.wait(10)
        log.close()
        print((tmp_path / "exporter.log").read_text(encoding="utf-8")[-3000:])


def test_the_instance_runs_with_the_password_from_its_credential(instance: str) -> None:
    def up() -> Scrape | None:
        try:
            scrape = Scrape.parse(http_get(instance, timeout=1.0).decode())
        except OSError:
            return None
        ran = scrape.get("pgrb_check_success", check="connections") is not None
        return scrape if ran else None

    scrape = wait_until(up, what=f"the connections check at {instance}")
    assert scrape.value("pgrb_up") == 1
    assert scrape.value("pgrb_check_success", check="connections") == 1
