"""The image built from the Containerfile with Podman, on a Debian base image made by mmdebstrap.

No image registry is reachable, so the base (standing in for the official slim Python image) is
built from Debian's packages; the build stage installs from wheels downloaded on the host for the
base's Python, with ``--network=none``. Both are cached under ``$PGRB_CONTAINER_CACHE`` (default
``/var/cache/pg-runbook-exporter/container``) keyed by their inputs, so a rerun only rebuilds the
layers whose source changed::

    podman = Podman.require()
    image = build_image(podman, tmp)          # ImageInfo(ref, size, layer, config, healthcheck)

Podman runs with ``--runtime runc`` (Debian's crun refuses hybrid cgroups) and explicit ulimits.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import IN_CI, REPO, require_tool

CACHE = Path(os.environ.get("PGRB_CONTAINER_CACHE", "/var/cache/pg-runbook-exporter/container"))
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")
# The build stage's image has binutils too, as the official full Python image does (for `strip`).
BUILD_PACKAGES = (*BASE_PACKAGES, "binutils")
# Like an official slim Python image: pip may install into it; no documentation, no apt lists.
BASE_DPKG_OPTIONS = tuple(
    f"path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "info", "locale", "lintian")
)
BASE_HOOKS = (
    'rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
    'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
)
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
IMAGE = "localhost/pg-runbook-exporter:test"
# What .containerignore lets into the build context.
CONTEXT = ("pyproject.toml", "README.md", "pg_runbook_exporter", "docs/alerts")
DEBIAN_PACKAGES = "podman, runc, mmdebstrap"


@dataclass(frozen=True)
class Podman:
    argv: tuple[str, ...]

    @classmethod
    def require(cls) -> Podman:
        if os.geteuid() != 0:
            message = "building and running images here needs root (podman with runc)"
            if IN_CI:
                pytest.fail(f"{message}; CI=true: a missing tool is a failure", pytrace=False)
            pytest.skip(message)
        podman = require_tool("podman", packages=DEBIAN_PACKAGES)
        runc = require_tool("runc", packages=DEBIAN_PACKAGES)
        return cls((podman, "--runtime", runc))

    def run(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.argv, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            pytest.fail(
                f"podman {' '.join(args[:2])} … exited {done.returncode}\n"
                f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}",
                pytrace=False,
            )
        return done

    def exists(self, ref: str) -> bool:
        return self.run("image", "exists", ref, check=False).returncode == 0

    def inspect(self, ref: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.run("image", "inspect", ref).stdout)
        return data[0]


@dataclass(frozen=True)
class ImageInfo:
    ref: str
    size: int  # bytes, uncompressed, as `podman images` shows it
    layer: int  # bytes the image adds to its base (the exporter's virtualenv)
    config: dict[str, Any]
    healthcheck: dict[str, Any] | None


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One builder at a time per machine (two test runs share the cache)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def base_image(podman: Podman, name: str, packages: Sequence[str]) -> str:
    """``localhost/pgrb-test-<name>:<key>``: Debian with ``packages``, made once per input set."""
    mmdebstrap = require_tool("mmdebstrap", packages=DEBIAN_PACKAGES)
    key = _key(BASE_SUITE, packages, BASE_DPKG_OPTIONS, BASE_HOOKS, platform.machine())
    ref = f"localhost/pgrb-test-{name}:{key}"
    with _locked():
        if podman.exists(ref):
            return ref
        tarball = CACHE / f"{name}-{key}.tar"
        if not tarball.is_file():
            for old in CACHE.glob(f"{name}-*.tar"):
                old.unlink()
            partial = tarball.with_suffix(".partial")
            args = [mmdebstrap, "--quiet", "--variant=minbase", f"--include={','.join(packages)}"]
            args += [f"--dpkgopt={option}" for option in BASE_DPKG_OPTIONS]
            args += [f"--customize-hook={hook}" for hook in BASE_HOOKS]
            args += ["--format=tar", BASE_SUITE, str(partial)]
            done = subprocess.run(args, capture_output=True, text=True, timeout=900, check=False)
            if done.returncode != 0:
                pytest.fail(f"mmdebstrap failed:\n{done.stderr[-4000:]}", pytrace=False)
            partial.rename(tarball)
        podman.run("import", str(tarball), ref)
    return ref


def _requirements() -> list[str]:
    """The project's dependencies and its build backend: everything the offline build installs."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return [*pyproject["build-system"]["requires"], *pyproject["project"]["dependencies"]]


def wheels_for(podman: Podman, base: str) -> Path:
    """Wheels of every requirement for the base image's Python and C library, downloaded here."""
    probe = "import platform, sys; print(f'{sys.version_info[0]}{sys.version_info[1]}'); "
    probe += "print(platform.libc_ver()[1]); print(platform.machine())"
    done = podman.run("run", "--rm", "--network=none", *ULIMITS, base, "python", "-c", probe)
    version, libc, machine = done.stdout.split()
    major, minor = (int(x) for x in libc.split("."))
    platforms = [f"manylinux_{major}_{m}_{machine}" for m in range(minor, 4, -1)]
    platforms += [f"manylinux2014_{machine}", f"manylinux2010_{machine}", f"manylinux1_{machine}"]
    requirements = _requirements()
    folder = CACHE / f"wheels-{_key(requirements, version, platforms)}"
    with _locked():
        if not folder.is_dir():
            for old in CACHE.glob("wheels-*"):
                shutil.rmtree(old)
            partial = folder.with_name(folder.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            args = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:"]
            args += ["--python-version", version, "--implementation", "cp"]
            args += ["--abi", f"cp{version}", "--abi", "abi3", "--abi", "none"]
            args += [f"--platform={p}" for p in platforms]
            args += ["--dest", str(partial), *requirements]
            done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
            if done.returncode != 0:
                pytest.fail(f"pip download failed:\n{done.stderr[-4000:]}", pytrace=False)
            partial.rename(folder)
    return folder


def build_image(podman: Podman, workdir: Path) -> ImageInfo:
    """The Containerfile built from this checkout on the Debian bases, offline, tagged ``IMAGE``."""
    base = base_image(podman, "base", BASE_PACKAGES)
    build = base_image(podman, "build", BUILD_PACKAGES)
    wheels = wheels_for(podman, base)
    context = workdir / "context"
    context.mkdir()
    for name in CONTEXT:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, context / name)
    shutil.copytree(wheels, context / "wheels")
    args: Sequence[str] = [
        "build",
        "--format=docker",  # the OCI format drops HEALTHCHECK
        "--network=none",
        "--layers=false",  # nothing to reuse once the source changed; no images pile up
        *ULIMITS,
        "--build-arg", f"BUILD_IMAGE={build}",
        "--build-arg", f"BASE_IMAGE={base}",
        "--build-arg", "PIP_NO_INDEX=1",
        "--build-arg", "PIP_FIND_LINKS=/src/wheels",
        "--file", str(REPO / "Containerfile"),
        "--tag", IMAGE,
        str(context),
    ]  # fmt: skip
    with _locked():  # another run may be building the same tag
        old = podman.inspect(IMAGE)["Id"] if podman.exists(IMAGE) else None
        podman.run(*args)
        info = podman.inspect(IMAGE)
        if old is not None and old != info["Id"]:
            podman.run("rmi", old, check=False)  # the previous test image, untagged now
    return ImageInfo(
        ref=IMAGE,
        size=int(info["Size"]),
        layer=int(info["Size"]) - int(podman.inspect(base)["Size"]),
        config=info["Config"],
        healthcheck=info.get("Healthcheck"),
    )
