"""A PostgreSQL server reached as its superuser: SQL, psql scripts, new databases and URLs.

``PostgresServer`` holds these operations once; a subclass says how the superuser reaches the
server (``ThrowawayServer``: its private socket; a test server given by URL: that URL).
"""

from __future__ import annotations

import abc
import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import psycopg.conninfo
from psycopg import sql

from pg_runbook_exporter.errors import ExporterError

SUPERUSER = "postgres"


class ServerError(ExporterError):
    """A PostgreSQL program or a server failed: ``what`` in one line, then the tail of the
    program's ``output`` and of the server's ``log`` (either may be empty)."""

    def __init__(self, what: str, *, output: str = "", log: str = "") -> None:
        parts = [what, output, f"server log:\n{log}" if log else ""]
        super().__init__("\n".join(part for part in parts if part))
        self.what = what
        self.output = output
        self.log = log

    def lines(self) -> list[str]:
        return str(self).splitlines()


@dataclass(frozen=True)
class ServerUser:
    """The unprivileged account a root caller runs PostgreSQL programs as."""

    name: str
    uid: int
    gid: int


def run_program(
    args: list[str],
    *,
    cwd: Path,
    user: ServerUser | None = None,
    env: Mapping[str, str] | None = None,
    clean_env: bool = True,
    timeout: float = 300,
) -> str:
    """Run a program (as ``user`` when given) in a session of its own; return its output.

    With ``clean_env`` the caller's ``PG…`` variables are left out and HOME is ``cwd`` (``env``
    adds what the program needs). A new session keeps a terminal's Ctrl-C away from a server,
    so cleanup decides its end.
    """
    environment = dict(os.environ)
    if clean_env:
        environment = {k: v for k, v in environment.items() if not k.startswith("PG")}
        environment["HOME"] = str(cwd)
    environment.update(env or {})
    as_user: dict[str, Any] = {}
    if user is not None:
        as_user = {"user": user.uid, "group": user.gid, "extra_groups": []}
    with tempfile.TemporaryFile("w+") as out:
        # A file, not a pipe: a server forked by pg_ctl must not hold our pipe open.
        done = subprocess.run(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
            env=environment, timeout=timeout, start_new_session=True, check=False, text=True,
            **as_user,
        )  # fmt: skip
        out.seek(0)
        output = out.read()
    if done.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise ServerError(f"{Path(args[0]).name} exited {done.returncode}", output=tail)
    return output


class PostgresServer(abc.ABC):
    """The superuser's operations on a server; subclasses give the way in."""

    major: int
    superuser: str = SUPERUSER
    # Whether client programs see the caller's libpq environment, as its own connections do.
    libpq_env: bool = False

    @abc.abstractmethod
    def superuser_params(self) -> dict[str, Any]:
        """libpq keywords of the superuser's own connection (no ``dbname``)."""

    @abc.abstractmethod
    def tcp_address(self) -> tuple[str, int]:
        """(host, port) clients reach the server at over TCP."""

    @abc.abstractmethod
    def superuser_password(self) -> str | None: ...

    @abc.abstractmethod
    def psql_program(self) -> Path: ...

    @abc.abstractmethod
    def work_dir(self) -> Path:
        """Where client programs run (and whose HOME they get)."""

    def connect(self, *, dbname: str = "postgres") -> psycopg.Connection[tuple[Any, ...]]:
        """A superuser autocommit connection."""
        return psycopg.connect(autocommit=True, **{**self.superuser_params(), "dbname": dbname})

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
        with self.connect(dbname=dbname) as conn, conn.cursor() as cur:
            cur.execute(statement, params)
            while cur.nextset():
                pass
            return cur.fetchall() if cur.description else []

    def psql(
        self,
        script: str | None = None,
        *,
        file: Path | None = None,
        dbname: str = "postgres",
        variables: Mapping[str, str] | None = None,
    ) -> str:
        """Run a script with psql (for meta-commands like ``\\set``); stop on the first error."""
        params = {k: v for k, v in self.superuser_params().items() if k != "password"}
        args = [str(self.psql_program()), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        for name, value in (variables or {}).items():
            args += ["-v", f"{name}={value}"]
        if file is not None:
            args += ["-f", str(file)]
        if script is not None:
            args += ["-c", script]
        args += ["-d", psycopg.conninfo.make_conninfo("", **{**params, "dbname": dbname})]
        # The password goes by environment, never on a command line others can read.
        password = self.superuser_params().get("password")
        env = {"PGPASSWORD": str(password)} if password else {}
        return run_program(args, cwd=self.work_dir(), env=env, clean_env=not self.libpq_env)

    def dsn(
        self, *, user: str | None = None, password: str | None = None, dbname: str = "postgres"
    ) -> str:
        """A ``postgresql://`` URL over TCP; the superuser's password is filled in for it."""
        if user is None or user == self.superuser:
            user, password = self.superuser, password or self.superuser_password()
        auth = quote(user, safe="")
        if password:
            auth += ":" + quote(password, safe="")
        host, port = self.tcp_address()
        return f"postgresql://{auth}@{host}:{port}/{quote(dbname, safe='')}"

    def create_database(self, name: str, *, template: str = "template1") -> str:
        self.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
        return name
