"""A real exporter, Prometheus and Alertmanager on loopback, for tests that need the whole chain.

Everything runs from a temp dir on free 127.0.0.1 ports and is stopped when the context exits::

    with prometheus_stack(tmp, database_url=db.monitor_dsn, rule_files=[rules]) as stack:
        stack.wait_for_series("pgrb_up")
        stack.query("pgrb_connections")      # -> list of {"metric": {...}, "value": [t, "v"]}

Pieces
------
``prometheus_stack(workdir, *, database_url, ...)``  the whole chain; Alertmanager and the webhook
    receiver are started only when ``alertmanager_config`` is given (a function of the webhook URL
    returning the Alertmanager YAML).
``ExporterProcess``    ``python -m pg_runbook_exporter run`` with ``DATABASE_URL`` set.
``PrometheusServer``   ``/usr/bin/prometheus`` scraping the exporter as job ``JOB``.
``AlertmanagerServer`` ``/usr/bin/prometheus-alertmanager``, clustering off.
``NodeExporterProcess`` ``/usr/bin/prometheus-node-exporter``, its filesystem collector only,
    scraped as job ``NODE_JOB`` when ``prometheus_stack(node_exporter=True)``.
``WebhookReceiver``    an ``http.server`` recording every Alertmanager notification.
``fast_config(...)``   a copy of queries.yaml whose checks all run every ``interval`` seconds.
``require_tool(name)`` the binary's path; a missing one skips the test, or fails it when CI=true.
``module_portal_db(pg_servers, pg)``  a fresh portal database for a module-scoped stack (the
    ``portal_db`` fixture is function-scoped); dropped on exit.

A module-scoped fixture, so one stack serves a whole test module::

    @pytest.fixture(scope="module")
    def stack(pg_servers, pg, tmp_path_factory):
        with module_portal_db(pg_servers, pg) as db, prometheus_stack(
            tmp_path_factory.mktemp("stack"), database_url=db.monitor_dsn
        ) as running:
            yield running

Every wait polls with a deadline (``WAIT_SECONDS``) and fails with the process logs attached.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from psycopg import sql

from pg_runbook_exporter.mixin.options import DEFAULT_JOB
from pg_runbook_exporter.validation import parse_duration
from tests.support.dumps import sample_backups

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
JOB = DEFAULT_JOB  # the job the generated rules select by default
WAIT_SECONDS = 30.0
PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
NODE_JOB = "node"
IN_CI = os.environ.get("CI") == "true"

T = TypeVar("T")


def require_tool(name: str, *, packages: str = "prometheus, prometheus-alertmanager") -> str:
    """Path of a binary the test needs: skipped when missing locally, a failure in CI."""
    path = name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian packages {packages})"
        if IN_CI:
            pytest.fail(f"{message}; CI=true: a missing tool is a failure", pytrace=False)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout: float = WAIT_SECONDS,
    every: float = 0.25,
    logs: Callable[[], str] | None = None,
) -> T:
    """Poll ``probe`` until it returns something other than None/False; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
        except (OSError, ValueError, KeyError) as exc:  # not up yet, or half-written output
            last_error, result = exc, None
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            extra = f"\n{logs()}" if logs else ""
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}{detail}{extra}")
        time.sleep(every)


def http_get(url: str, *, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def fast_config(path: Path, *, interval: float = 1.0, source: Path | None = None) -> Path:
    """Write a copy of queries.yaml (or ``source``) whose every check runs each ``interval`` s."""
    data = yaml.safe_load(
        (source or REPO / "pg_runbook_exporter" / "queries.yaml").read_text(encoding="utf-8")
    )
    default_timeout = parse_duration(data.get("defaults", {}).get("timeout", "5s"))
    for check in data["checks"].values():
        check["interval"] = f"{interval:g}s"
        # the loader refuses a timeout longer than the interval
        timeout = min(parse_duration(check.get("timeout", default_timeout)), interval)
        check["timeout"] = f"{timeout:g}s"
        check.pop("lock_timeout", None)
    data.setdefault("defaults", {})["lock_timeout"] = "100ms"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


class _Process:
    """A child process with its output in a log file, stopped with SIGTERM then SIGKILL."""

    def __init__(self, name: str, args: Sequence[str], *, workdir: Path, env: dict[str, str]):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            list(args),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=workdir,
        )

    def log(self, tail: int = 40) -> str:
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return f"--- {self.name} log (last {tail} lines) ---\n" + "\n".join(lines[-tail:])

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._log.close()


def _started(process: _Process, url: str, what: str) -> None:
    def probe() -> bool:
        if not process.alive():
            pytest.fail(f"{what} exited with {process.process.returncode}\n{process.log()}")
        http_get(url, timeout=1.0)
        return True

    wait_until(probe, what=f"{what} at {url}", logs=process.log)


class ExporterProcess:
    """``python -m pg_runbook_exporter run`` against ``database_url`` on a free loopback port."""

    def __init__(self, workdir: Path, *, database_url: str, config: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}/metrics"
        env = {**os.environ, "DATABASE_URL": database_url}
        env.pop("PGRB_DATABASE_URL", None)
        args = [sys.executable, "-m", "pg_runbook_exporter", "run", "--config", str(config)]
        args += ["--web.listen-address", self.address, "--database.connections", "2"]
        args += ["--backup.dir", str(sample_backups(workdir / "backups"))]
        self._process = _Process("exporter", args, workdir=workdir, env=env)
        _started(self._process, self.url, "the exporter")

    @property
    def pid(self) -> int:
        return self._process.process.pid

    def scrape(self) -> str:
        return http_get(self.url).decode()

    def wait_ready(self, timeout: float = WAIT_SECONDS) -> None:
        """Wait for ``/readyz``: connected, and every check has run once."""
        ready = self.url.removesuffix("/metrics") + "/readyz"
        wait_until(
            lambda: http_get(ready, timeout=1.0) is not None,
            what=ready,
            timeout=timeout,
            logs=self.log,
        )

    def log(self) -> str:
        return self._process.log()

    def stop(self) -> None:
        self._process.stop()


class NodeExporterProcess:
    """node_exporter with only its filesystem collector (every mounted filesystem type but the
    kernel's pseudo ones), on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        binary = require_tool(NODE_EXPORTER)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}/metrics"
        pseudo = "^(proc|sysfs|cgroup2?|devpts|devtmpfs|mqueue|tracefs|debugfs|securityfs|bpf)$"
        args = [
            binary,
            f"--web.listen-address={self.address}",
            "--collector.disable-defaults",
            "--collector.filesystem",
            f"--collector.filesystem.fs-types-exclude={pseudo}",
        ]
        self._process = _Process("node_exporter", args, workdir=workdir, env=dict(os.environ))
        _started(self._process, self.url, "node_exporter")

    def scrape(self) -> str:
        return http_get(self.url).decode()

    def stop(self) -> None:
        self._process.stop()


class PrometheusServer:
    """Prometheus scraping ``targets`` as job ``JOB`` (and ``jobs``) and evaluating
    ``rule_files``."""

    def __init__(
        self,
        workdir: Path,
        *,
        targets: Sequence[str],
        rule_files: Sequence[Path] = (),
        alertmanager: str | None = None,
        interval: str = "1s",
        jobs: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        binary = require_tool(PROMETHEUS)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config: dict[str, Any] = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": JOB, "static_configs": [{"targets": list(targets)}]},
                *(
                    {"job_name": job, "static_configs": [{"targets": list(addresses)}]}
                    for job, addresses in (jobs or {}).items()
                ),
            ],
        }
        if alertmanager is not None:
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]
            }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        args = [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self._process = _Process("prometheus", args, workdir=workdir, env=dict(os.environ))
        _started(self._process, f"{self.url}/-/ready", "Prometheus")

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; returns ``data`` and fails the test on an API error."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            body = http_get(f"{self.url}/api/v1/{path}{query}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            pytest.fail(f"Prometheus API {path} {params}: HTTP {exc.code}: {detail}")
        reply = json.loads(body)
        if reply.get("status") != "success":
            pytest.fail(f"Prometheus API {path} {params}: {reply}")
        return reply["data"]

    def query(self, expr: str, *, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query: the result vector (``[{"metric": {...}, "value": [t, "v"]}, …]``)."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self.api("query", **params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(
        self, expr: str, *, start: float, end: float, step: float = 1.0
    ) -> list[dict[str, Any]]:
        data = self.api(
            "query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}"
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts pending or firing now (``/api/v1/alerts``)."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def rule_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self.api("rules")["groups"]
        return groups

    def log(self) -> str:
        return self._process.log()

    def stop(self) -> None:
        self._process.stop()


class AlertmanagerServer:
    """A lone Alertmanager (no cluster) with ``config`` as its configuration file."""

    def __init__(self, workdir: Path, *, config: str) -> None:
        binary = require_tool(ALERTMANAGER)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        config_path = workdir / "alertmanager.yml"
        config_path.write_text(config, encoding="utf-8")
        args = [
            binary,
            f"--config.file={config_path}",
            f"--storage.path={workdir / 'alertmanager-data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        self._process = _Process("alertmanager", args, workdir=workdir, env=dict(os.environ))
        _started(self._process, f"{self.url}/-/ready", "Alertmanager")

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """``/api/v2/alerts`` (e.g. ``inhibited="true"``); each has ``labels`` and ``status``."""
        query = f"?{urllib.parse.urlencode(filters)}" if filters else ""
        alerts: list[dict[str, Any]] = json.loads(http_get(f"{self.url}/api/v2/alerts{query}"))
        return alerts

    def log(self) -> str:
        return self._process.log()

    def stop(self) -> None:
        self._process.stop()


@dataclass
class WebhookReceiver:
    """Records every notification Alertmanager POSTs; ``url`` is the webhook endpoint."""

    notifications: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                payload = json.loads(self.rfile.read(length) or b"{}")
                with receiver._lock:
                    receiver.notifications.append({"path": self.path, **payload})
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("webhook: " + format, *args)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def alerts(self, *, status: str | None = None) -> list[dict[str, Any]]:
        """Every alert received so far (flattened from the notifications), optionally by status."""
        with self._lock:
            received = [
                {**alert, "receiver": n.get("receiver"), "path": n.get("path")}
                for n in self.notifications
                for alert in n.get("alerts", [])
            ]
        return [a for a in received if status is None or a.get("status") == status]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@dataclass
class PrometheusStack:
    """The running chain; ``alertmanager`` and ``webhook`` are None when not requested."""

    exporter: ExporterProcess
    prometheus: PrometheusServer
    alertmanager: AlertmanagerServer | None = None
    webhook: WebhookReceiver | None = None
    node: NodeExporterProcess | None = None

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query on the stack's Prometheus (see ``PrometheusServer.query``)."""
        return self.prometheus.query(expr)

    def logs(self) -> str:
        parts = [self.exporter.log(), self.prometheus.log()]
        if self.alertmanager is not None:
            parts.append(self.alertmanager.log())
        return "\n".join(parts)

    def wait_for(
        self, expr: str, *, what: str | None = None, timeout: float = WAIT_SECONDS
    ) -> list[dict[str, Any]]:
        """Poll until the instant query ``expr`` returns at least one series; returns them."""
        return wait_until(
            lambda: self.query(expr) or None,
            what=what or f"PromQL {expr!r} to return data",
            timeout=timeout,
            logs=self.logs,
        )

    def wait_for_series(self, metric: str, timeout: float = WAIT_SECONDS) -> list[dict[str, Any]]:
        """Wait until Prometheus has scraped ``metric`` from the exporter."""
        return self.wait_for(f'{metric}{{job="{JOB}"}}', timeout=timeout)

    def wait_for_alert(
        self, alertname: str, *, state: str = "firing", timeout: float = WAIT_SECONDS
    ) -> dict[str, Any]:
        """Wait until Prometheus reports ``alertname`` in ``state`` (pending or firing)."""

        def probe() -> dict[str, Any] | None:
            for alert in self.prometheus.alerts():
                if alert["labels"].get("alertname") == alertname and alert["state"] == state:
                    return alert
            return None

        return wait_until(probe, what=f"alert {alertname} {state}", timeout=timeout, logs=self.logs)

    def wait_for_notification(
        self,
        alertname: str,
        *,
        status: str = "firing",
        labels: Mapping[str, str] | None = None,
        timeout: float = WAIT_SECONDS,
    ) -> dict[str, Any]:
        """Wait until the webhook receiver got ``alertname`` with ``status`` (and ``labels``);
        returns the first such alert."""
        webhook = self.webhook
        if webhook is None:
            raise RuntimeError("the stack runs without Alertmanager")
        wanted = {"alertname": alertname, **(labels or {})}

        def probe() -> dict[str, Any] | None:
            for alert in webhook.alerts(status=status):
                if all(alert["labels"].get(k) == v for k, v in wanted.items()):
                    return alert
            return None

        return wait_until(
            probe, what=f"notification {alertname} {status}", timeout=timeout, logs=self.logs
        )


def example_alertmanager_config(webhook_url: str) -> str:
    """The example config, receivers pointed at the webhook (path = receiver), waits shortened."""
    config = yaml.safe_load((REPO / "alerts" / "alertmanager.yml").read_text(encoding="utf-8"))
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{webhook_url}/{receiver['name']}"

    def shorten(route: dict[str, Any]) -> None:
        # 1 s leaves the inhibitor time to see a page that arrived in the same batch as its ticket
        route.update(group_wait="1s", group_interval="1s")
        route.pop("mute_time_intervals", None)  # the test may run inside the maintenance window
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])
    return yaml.safe_dump(config, sort_keys=False)


@contextlib.contextmanager
def prometheus_stack(
    workdir: Path,
    *,
    database_url: str,
    rule_files: Sequence[Path] = (),
    alertmanager_config: Callable[[str], str] | None = None,
    check_interval: float = 1.0,
    interval: str = "1s",
    config: Path | None = None,
    node_exporter: bool = False,
) -> Iterator[PrometheusStack]:
    """Start exporter → Prometheus (→ Alertmanager → webhook) and stop them all afterwards.

    ``config`` is the queries.yaml to run (default: the repo's, with every check every
    ``check_interval`` s); ``interval`` is Prometheus's scrape and rule evaluation interval;
    ``alertmanager_config(webhook_url)`` returns the Alertmanager YAML; ``node_exporter`` adds
    node_exporter, scraped as job ``NODE_JOB``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    queries = config or fast_config(workdir / "queries.yaml", interval=check_interval)
    with contextlib.ExitStack() as stack:
        exporter = ExporterProcess(workdir, database_url=database_url, config=queries)
        stack.callback(exporter.stop)
        webhook = alertmanager = None
        if alertmanager_config is not None:
            webhook = WebhookReceiver()
            webhook.start()
            stack.callback(webhook.stop)
            alertmanager = AlertmanagerServer(workdir, config=alertmanager_config(webhook.url))
            stack.callback(alertmanager.stop)
        node = None
        if node_exporter:
            node = NodeExporterProcess(workdir)
            stack.callback(node.stop)
        prometheus = PrometheusServer(
            workdir,
            targets=[exporter.address],
            rule_files=rule_files,
            alertmanager=alertmanager.address if alertmanager else None,
            interval=interval,
            jobs={NODE_JOB: [node.address]} if node else None,
        )
        stack.callback(prometheus.stop)
        yield PrometheusStack(
            exporter=exporter,
            prometheus=prometheus,
            alertmanager=alertmanager,
            webhook=webhook,
            node=node,
        )


@contextlib.contextmanager
def module_portal_db(pg_servers: Any, pg: Any) -> Iterator[Any]:
    """A fresh portal database (conftest's ``PortalDb``) on ``pg``, dropped on exit."""
    db = pg_servers.portal_db(pg)
    try:
        yield db
    finally:
        pg.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.name))
        )
