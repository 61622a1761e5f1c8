"""Disposable PostgreSQL servers for the demo, the tests and the benchmark.

A ``ThrowawayServer`` lives in a private temp dir: data dir, unix socket dir, WAL archive and log.
It listens on a free 127.0.0.1 port; the superuser ``postgres`` gets a random password for TCP
(scram-sha-256) and trust on the private socket, which only the server user can enter.
PostgreSQL refuses to run as root, so a root caller runs it as ``postgres`` or, where that user
does not exist, as a system user ``pgrb-server`` created on first use.

    with ThrowawayServer(major=17) as pg:
        pg.execute("CREATE TABLE t (id int)", dbname="postgres")
        url = pg.dsn(dbname="postgres")

``cleanup()`` (also run by ``with``, on KeyboardInterrupt and at interpreter exit) kills the
server and deletes its dir. Nothing here prints or logs a password.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import hmac
import logging
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from psycopg import sql

from pg_runbook_exporter.pgserver.binaries import PgBinaries, find_binaries, find_client_tool
from pg_runbook_exporter.pgserver.server import (
    SUPERUSER,
    PostgresServer,
    ServerError,
    ServerUser,
    run_program,
)

logger = logging.getLogger(__name__)

FALLBACK_SERVER_USER = "pgrb-server"
HOST = "127.0.0.1"
ShutdownMode = Literal["smart", "fast", "immediate"]
Setting = str | int | float | bool
_CTL_TIMEOUT_S = 60
_PORT_ATTEMPTS = 5


_user_lock = threading.Lock()


def server_user() -> ServerUser | None:
    """The account to run servers as, or None when not root (servers then run as the caller)."""
    if os.geteuid() != 0:
        return None
    with _user_lock:
        for name in (SUPERUSER, FALLBACK_SERVER_USER):
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(name)
                return ServerUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid)
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
             "/nonexistent", "--shell", "/usr/sbin/nologin", FALLBACK_SERVER_USER],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        entry = pwd.getpwnam(FALLBACK_SERVER_USER)
        return ServerUser(name=FALLBACK_SERVER_USER, uid=entry.pw_uid, gid=entry.pw_gid)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def scram_verifier(password: str, *, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores, so SQL never carries the password itself."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _conf_value(value: Setting) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


_templates: dict[Path, Path] = {}
_template_lock = threading.Lock()


def _template_data_dir(binaries: PgBinaries, user: ServerUser | None) -> Path:
    """An initdb'd data dir per installation, copied for each server: initdb costs ~1 s."""
    with _template_lock:
        if binaries.bindir in _templates:
            return _templates[binaries.bindir]
        holder = _private_dir(f"pgrb-template-{binaries.major}-", user)
        atexit.register(shutil.rmtree, holder, ignore_errors=True)
        data = holder / "data"
        run_program(
            [str(binaries.bindir / "initdb"), "-D", str(data), "-U", SUPERUSER,
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
             "--locale=C", "--no-sync"],
            cwd=holder, user=user,
        )  # fmt: skip
        _templates[binaries.bindir] = data
        return data


def _private_dir(prefix: str, user: ServerUser | None, parent: Path | None = None) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    if user is not None:
        os.chown(path, user.uid, user.gid)
    return path


class ThrowawayServer(PostgresServer):
    """One disposable PostgreSQL server; see the module docstring."""

    role = "primary"

    def __init__(
        self,
        *,
        major: int = 17,
        settings: Mapping[str, Setting] | None = None,
        max_connections: int = 100,
        archive_mode: Literal["off", "on", "always"] = "off",
        archive_command: str = "test ! -f {archive_dir}/%f && cp %p {archive_dir}/%f",
        fetch: bool = True,
        binaries: PgBinaries | None = None,
        parent: Path | None = None,
    ) -> None:
        # ``binaries`` overrides ``major``; ``parent`` holds the server's dir instead of $TMPDIR.
        self.binaries = binaries or find_binaries(major, fetch=fetch)
        self.major = self.binaries.major
        self._parent = parent
        self._user = server_user()
        self._dir: Path | None = None
        self._running = False
        self.port = free_port()
        self.password = secrets.token_urlsafe(18)
        self._settings: dict[str, Setting] = {
            "shared_preload_libraries": "pg_stat_statements",
            "track_io_timing": True,
            "max_connections": max_connections,
            # Nothing here outlives the process: skip the flushes that only protect from a crash.
            "fsync": False,
            "archive_mode": archive_mode,
            "archive_command": archive_command,
            **(settings or {}),
        }

    def __repr__(self) -> str:
        where = f"{HOST}:{self.port} {self._dir}"
        return f"<ThrowawayServer {self.binaries.version} {self.role} {where}>"

    @property
    def settings(self) -> Mapping[str, Setting]:
        """The configuration this server writes (``throwaway.conf``), before its own places."""
        return dict(self._settings)

    @property
    def base_dir(self) -> Path:
        if self._dir is None:
            raise ServerError("the server was never started")
        return self._dir

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "socket"

    @property
    def archive_dir(self) -> Path:
        return self.base_dir / "archive"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "server.log"

    @property
    def is_running(self) -> bool:
        return self._running

    def __enter__(self) -> ThrowawayServer:
        if not self._running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def start(self) -> None:
        """Create the server on first call (its data dir, see `_init_data_dir`); start it."""
        if self._running:
            return
        first = self._dir is None
        try:
            if first:
                atexit.register(self.cleanup)
                self._create()
            self._start_postmaster(retry_port=first)
            self._running = True
            if first:
                self._created()
        except BaseException:
            # Also on Ctrl-C: `with` never calls __exit__ when __enter__ fails.
            if first:
                self.cleanup()
            raise
        logger.info("started %r", self)

    def _start_postmaster(self, *, retry_port: bool) -> None:
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self._write_conf()
            try:
                self._ctl("start", "-l", str(self.log_file))
                return
            except ServerError as exc:
                log = self.log_tail()
                # The port was free when picked; someone may have taken it since.
                if not (retry_port and "could not bind" in log and attempt < _PORT_ATTEMPTS):
                    raise ServerError(exc.what, output=exc.output, log=log) from exc
                self.port = free_port()

    def _create(self) -> None:
        self._dir = _private_dir(f"pgrb-{self.major}-", self._user, parent=self._parent)
        for sub in (self.socket_dir, self.archive_dir):
            sub.mkdir(mode=0o700)
            if self._user is not None:
                os.chown(sub, self._user.uid, self._user.gid)
        self._init_data_dir()

    def _init_data_dir(self) -> None:
        """Fill ``data_dir``: a copy of the installation's initdb'd template."""
        template = _template_data_dir(self.binaries, self._user)
        self._as_server(["cp", "-a", str(template), str(self.data_dir)])
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude_if_exists = 'throwaway.conf'\n")

    def _created(self) -> None:
        """After the first start: the superuser's TCP password."""
        # Over the socket (trust) and as a verifier: the password never reaches SQL text.
        verifier = scram_verifier(self.password)
        self.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(SUPERUSER), sql.Literal(verifier)
            )
        )

    def _write_conf(self) -> None:
        values = {
            **self._settings,
            "listen_addresses": HOST,
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
            "archive_command": str(self._settings["archive_command"]).replace(
                "{archive_dir}", str(self.archive_dir)
            ),
        }
        text = "".join(f"{name} = {_conf_value(value)}\n" for name, value in values.items())
        conf = self.data_dir / "throwaway.conf"
        conf.write_text(text)
        if self._user is not None:
            os.chown(conf, self._user.uid, self._user.gid)

    def _as_server(self, args: list[str], *, timeout: float = 300) -> str:
        return run_program(args, cwd=self.base_dir, user=self._user, timeout=timeout)

    def _ctl(self, *args: str) -> str:
        return self._as_server(
            [str(self.binaries.bindir / "pg_ctl"), "-D", str(self.data_dir), "-w",
             "-t", str(_CTL_TIMEOUT_S), *args],
            timeout=_CTL_TIMEOUT_S + 30,
        )  # fmt: skip

    def stop(self, mode: ShutdownMode = "fast") -> None:
        """Stop the server (``pg_ctl stop -m mode``); data and port stay for ``start()``."""
        if self._running:
            self._ctl("stop", "-m", mode)
            self._running = False

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except (OSError, ServerError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- how the superuser gets in: the private socket (trust); TCP with the password ---------

    def superuser_params(self) -> dict[str, Any]:
        return {
            "host": str(self.socket_dir),
            "port": self.port,
            "user": SUPERUSER,
            "connect_timeout": 10,
        }

    def tcp_address(self) -> tuple[str, int]:
        return HOST, self.port

    def superuser_password(self) -> str | None:
        return self.password

    def psql_program(self) -> Path:
        return self.binaries.tool("psql") or find_client_tool("psql", min_major=self.major)

    def work_dir(self) -> Path:
        # psql runs as the caller, who can read the script; the socket dir admits root and owner.
        return self.base_dir

    def cleanup(self) -> None:
        """Kill the server and delete its dir. Safe to call more than once."""
        atexit.unregister(self.cleanup)
        try:
            # The pid file, not _running: a start that timed out may have left a server.
            if self._dir is not None and (self.data_dir / "postmaster.pid").exists():
                try:
                    self._ctl("stop", "-m", "immediate")
                except BaseException:
                    self._kill_postmaster()
                    raise
        except Exception:
            logger.warning("pg_ctl stop failed for %r; killed the postmaster", self)
        finally:
            self._running = False
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                logger.info("removed %s", self._dir)
                self._dir = None

    def _kill_postmaster(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            # Only our own postmaster: after a crash the pid may belong to someone else by now.
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if str(self.data_dir).encode() in cmdline:
                os.kill(pid, 9)
