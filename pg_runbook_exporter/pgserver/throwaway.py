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
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import psycopg
from psycopg import sql

from pg_runbook_exporter.pgserver.binaries import PgBinaries, find_binaries, find_client_tool

logger = logging.getLogger(__name__)

SUPERUSER = "postgres"
FALLBACK_SERVER_USER = "pgrb-server"
HOST = "127.0.0.1"
ShutdownMode = Literal["smart", "fast", "immediate"]
Setting = str | int | float | bool
_CTL_TIMEOUT_S = 60
_PORT_ATTEMPTS = 5


class ServerError(RuntimeError):
    """A PostgreSQL program failed; the message carries the tail of its output or log."""


@dataclass(frozen=True)
class ServerUser:
    """The unprivileged account a root caller runs PostgreSQL programs as."""

    name: str
    uid: int
    gid: int


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


def _run(args: list[str], *, cwd: Path, user: ServerUser | None, timeout: float = 300) -> str:
    """Run a program (as ``user`` when given) in a session of its own; return its output.

    A new session keeps a terminal's Ctrl-C away from the server, so cleanup decides its end.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["HOME"] = str(cwd)
    as_user: dict[str, Any] = {}
    if user is not None:
        as_user = {"user": user.uid, "group": user.gid, "extra_groups": []}
    with tempfile.TemporaryFile("w+") as out:
        # A file, not a pipe: a server forked by pg_ctl must not hold our pipe open.
        done = subprocess.run(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
            env=env, timeout=timeout, start_new_session=True, check=False, text=True, **as_user,
        )  # fmt: skip
        out.seek(0)
        output = out.read()
    if done.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise ServerError(f"{Path(args[0]).name} exited {done.returncode}:\n{tail}")
    return output


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
        _run(
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


def run_sql(
    conn: psycopg.Connection[Any],
    statement: str | sql.SQL | sql.Composed,
    params: Mapping[str, Any] | tuple[Any, ...] | None = None,
) -> list[tuple[Any, ...]]:
    """Run SQL (several statements when there are no params); the last statement's rows."""
    with conn.cursor() as cur:
        cur.execute(statement, params)
        while cur.nextset():
            pass
        return cur.fetchall() if cur.description else []


class ThrowawayServer:
    """One disposable PostgreSQL server; see the module docstring."""

    def __init__(
        self,
        *,
        major: int = 17,
        settings: Mapping[str, Setting] | None = None,
        max_connections: int = 100,
        archive_mode: Literal["off", "on", "always"] = "off",
        archive_command: str = "test ! -f {archive_dir}/%f && cp %p {archive_dir}/%f",
        fetch: bool = True,
        primary: ThrowawayServer | None = None,
        binaries: PgBinaries | None = None,
        parent: Path | None = None,
    ) -> None:
        # ``binaries`` overrides ``major``; ``parent`` holds the server's dir instead of $TMPDIR.
        self.binaries = binaries or find_binaries(major, fetch=fetch)
        self.major = self.binaries.major
        self._parent = parent
        self._user = server_user()
        self._primary = primary
        self._replicas: list[ThrowawayServer] = []
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
        role = "standby" if self._primary else "primary"
        return f"<ThrowawayServer {self.binaries.version} {role} {HOST}:{self.port} {self._dir}>"

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
        """Create the server on first call (initdb, or a base backup for a standby); start it."""
        if self._running:
            return
        first = self._dir is None
        try:
            if first:
                atexit.register(self.cleanup)
                self._create()
            self._start_postmaster(retry_port=first)
            self._running = True
            if first and self._primary is None:
                # Over the socket (trust) and as a verifier: the password never reaches SQL text.
                verifier = scram_verifier(self.password)
                self.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(SUPERUSER), sql.Literal(verifier)
                    )
                )
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
                    raise ServerError(f"{exc}\nserver log:\n{log}") from exc
                self.port = free_port()

    def _create(self) -> None:
        self._dir = _private_dir(f"pgrb-{self.major}-", self._user, parent=self._parent)
        for sub in (self.socket_dir, self.archive_dir):
            sub.mkdir(mode=0o700)
            if self._user is not None:
                os.chown(sub, self._user.uid, self._user.gid)
        if self._primary is None:
            template = _template_data_dir(self.binaries, self._user)
            self._as_server(["cp", "-a", str(template), str(self.data_dir)])
            with (self.data_dir / "postgresql.conf").open("a") as conf:
                conf.write("\ninclude_if_exists = 'throwaway.conf'\n")
            return
        primary = self._primary
        self.password = primary.password
        basebackup = self.binaries.tool("pg_basebackup") or find_client_tool(
            "pg_basebackup", min_major=self.major
        )
        self._as_server(
            [str(basebackup), "-h", str(primary.socket_dir), "-p", str(primary.port),
             "-U", SUPERUSER, "-D", str(self.data_dir), "-R", "-X", "stream",
             "-c", "fast", "--no-sync"],
        )  # fmt: skip

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
        return _run(args, cwd=self.base_dir, user=self._user, timeout=timeout)

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

    def restart(self, mode: ShutdownMode = "fast") -> None:
        self.stop(mode)
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except (OSError, ServerError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def connect(self, *, dbname: str = "postgres") -> psycopg.Connection[tuple[Any, ...]]:
        """A superuser autocommit connection over the private socket."""
        return psycopg.connect(
            host=str(self.socket_dir), port=self.port, user=SUPERUSER, dbname=dbname,
            autocommit=True, connect_timeout=10,
        )  # fmt: skip

    def execute(
        self,
        statement: str | sql.SQL | sql.Composed,
        params: Mapping[str, Any] | tuple[Any, ...] | None = None,
        *,
        dbname: str = "postgres",
    ) -> list[tuple[Any, ...]]:
        """Run SQL as the superuser; return the rows of the last statement (none: ``[]``).

        Without params, a string may hold several statements (a schema file).
        """
        with self.connect(dbname=dbname) as conn:
            return run_sql(conn, statement, params)

    def psql(
        self,
        script: str | None = None,
        *,
        file: Path | None = None,
        dbname: str = "postgres",
        variables: Mapping[str, str] | None = None,
    ) -> str:
        """Run a script with psql (for meta-commands like ``\\set``); stop on the first error."""
        psql = self.binaries.tool("psql") or find_client_tool("psql", min_major=self.major)
        args = [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
                "-p", str(self.port), "-U", SUPERUSER, "-d", dbname]  # fmt: skip
        for name, value in (variables or {}).items():
            args += ["-v", f"{name}={value}"]
        if file is not None:
            args += ["-f", str(file)]
        if script is not None:
            args += ["-c", script]
        # As the caller, who can read the script; the socket dir admits root and the owner.
        return _run(args, cwd=self.base_dir, user=None)

    def dsn(
        self, *, user: str = SUPERUSER, password: str | None = None, dbname: str = "postgres"
    ) -> str:
        """A ``postgresql://`` URL over TCP; the superuser's password is filled in for it."""
        if password is None and user == SUPERUSER:
            password = self.password
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        return f"postgresql://{auth}@{HOST}:{self.port}/{quote(dbname, safe='')}"

    def create_database(self, name: str, *, template: str = "template1") -> str:
        self.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
        return name

    def start_replica(self, *, settings: Mapping[str, Setting] | None = None) -> ThrowawayServer:
        """A started hot standby of this server (pg_basebackup -R); cleaned up with it."""
        replica = ThrowawayServer(
            major=self.major,
            settings={**self._settings, **(settings or {})},
            primary=self,
        )
        self._replicas.append(replica)
        replica.start()
        return replica

    def cleanup(self) -> None:
        """Kill the server (and its standbys) and delete its dir. Safe to call more than once."""
        atexit.unregister(self.cleanup)
        try:
            for replica in self._replicas:
                replica.cleanup()
        finally:
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
