"""/status, /status.json and /playbooks/ served by the real pipeline from a seeded portal."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pg_runbook_exporter.config import load_config
from pg_runbook_exporter.pgserver.throwaway import ThrowawayServer
from tests.conftest import PortalDb, Servers
from tests.support.collect import Scrape, Serving, configured, serving, wait_for
from tests.support.sessions import Sessions

HOSTILE = "<img src=x onerror=alert(1)>"
ORPHANS = 3


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def seed(db: PortalDb) -> None:
    db.server.execute(
        f"""
        INSERT INTO users (id, email, updated_at)
        SELECT 'user-' || g, 'user' || g || '@example.com', now() FROM generate_series(1, 20) g;
        INSERT INTO id_mappings (id, user_id, whmcs_client_id, updated_at)
        SELECT 'orphan-' || g, 'gone-' || g, 9000 + g, now() FROM generate_series(1, {ORPHANS}) g;
        CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
        """,
        dbname=db.name,
    )


@pytest.fixture
def sessions(portal_db: PortalDb) -> Iterator[Sessions]:
    opened = Sessions(portal_db.dsn)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def status_exporter(portal_db: PortalDb, sessions: Sessions) -> Iterator[Serving]:
    seed(portal_db)
    idle = sessions.open(application_name=HOSTILE)
    idle.execute("SELECT count(*) FROM users")  # a transaction left idle
    sessions.open(application_name=HOSTILE)  # two: the busiest application, whatever else runs
    with serving(portal_db.monitor_dsn, load_config(), status=True) as exporter:
        wait_for(lambda: exporter.cache.ready()[0], timeout=60, what="every check to run once")
        yield exporter


def test_status_json_and_metrics_of_one_generation_agree_value_for_value(
    status_exporter: Serving,
) -> None:
    def pair() -> tuple[dict[str, Any], Scrape] | None:
        _, head, body = get(f"{status_exporter.url}/status.json")
        _, mhead, metrics = get(f"{status_exporter.url}/metrics")
        same = head["x-snapshot-generation"] == mhead["x-snapshot-generation"]
        return (json.loads(body), Scrape.parse(metrics.decode())) if same else None

    found: list[tuple[dict[str, Any], Scrape]] = []

    def read() -> bool:
        found.extend(p for p in [pair()] if p is not None)
        return bool(found)

    wait_for(read, what="one generation read on both")  # a check may finish between the two
    doc, scrape = found[0]
    compared = 0
    for chapter in doc["chapters"]:
        for row in chapter["rows"]:
            if row["value"] is None:
                continue
            assert scrape.get(row["metric"], **row["labels"]) == row["value"], row["check"]
            compared += 1
            for threshold in row["thresholds"]:
                setting = threshold["setting"]
                exported = f"pgrb_threshold_{setting}"
                if setting and exported in scrape.samples:
                    assert scrape.value(exported) == threshold["threshold"]
    assert compared >= 20
    orphans = next(
        r for c in doc["chapters"] for r in c["rows"] if r["check"] == "id_mappings_orphans"
    )
    assert (orphans["state"], orphans["value"]) == ("warning", ORPHANS)
    assert orphans["playbook"] == "PortalIdMappingsOrphaned"


def test_two_visits_without_a_completed_check_get_the_same_bytes_and_headers(
    status_exporter: Serving,
) -> None:
    status_exporter.scheduler.stop()
    first = get(f"{status_exporter.url}/status")
    second = get(f"{status_exporter.url}/status")
    assert first[0] == 200 and first[2] == second[2]
    headers = first[1]
    assert headers["content-security-policy"].startswith("default-src 'none'; style-src 'sha256-")
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert HOSTILE.encode() not in first[2]
    # The hostile application name is a label of the connection rows: each place status.json
    # carries it, the page shows it escaped, never raw (fails if one is dropped or unescaped).
    doc = json.loads(get(f"{status_exporter.url}/status.json")[2])
    carried = sum(
        1 for c in doc["chapters"] for r in c["rows"] for v in r["labels"].values() if v == HOSTILE
    )
    assert carried >= 1
    assert first[2].count(b"&lt;img src=x onerror=alert(1)&gt;") == carried


def statement_counts(db: PortalDb) -> tuple[Any, ...]:
    """The portal database's transactions and the statements the exporter's role ran there,
    read from the ``postgres`` database, whose sessions they do not count."""
    db.server.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", dbname="postgres")
    ((transactions, calls),) = db.server.execute(
        "SELECT xact_commit + xact_rollback, (SELECT sum(calls) FROM pg_stat_statements s"
        " WHERE s.dbid = d.datid AND s.userid = %s::regrole)"
        " FROM pg_stat_database d WHERE datname = %s",
        (db.monitor_role, db.name),
        dbname="postgres",
    )
    return transactions, calls


def test_a_hundred_visits_to_status_run_no_statement(
    status_exporter: Serving, portal_db: PortalDb, sessions: Sessions
) -> None:
    status_exporter.scheduler.stop()  # its session ends, and with it every pending statistic
    sessions.close()
    wait_for(
        lambda: not portal_db.server.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = %s", (portal_db.name,),
            dbname="postgres",
        ),
        what="the database's sessions to end",
    )  # fmt: skip
    before = statement_counts(portal_db)
    for _ in range(100):
        assert get(f"{status_exporter.url}/status")[0] == 200
    assert statement_counts(portal_db) == before
    assert before[1] > 0  # the counts are real: the checks' statements were counted


@pytest.mark.parametrize(
    "path",
    [
        "/playbooks/..",
        "/playbooks/../metrics",
        "/playbooks/%2e%2e/metrics",
        "/playbooks/..%2fmetrics",
        "/playbooks/%252e%252e%252fmetrics",
        "/playbooks/..%5cmetrics",
        "/playbooks/%00",
        "/playbooks/PostgresDown%00",
        "/playbooks/PostgresDown.md",
        "/playbooks/NoSuchAlert",
        "/playbooks/README",
        "/playbooks",
        "/status/",
    ],
)
def test_hostile_and_unknown_playbook_paths_are_404(status_exporter: Serving, path: str) -> None:
    assert get(status_exporter.url + path)[0] == 404


def test_a_playbook_is_served_rendered_with_its_links_rewritten(status_exporter: Serving) -> None:
    status, headers, body = get(f"{status_exporter.url}/playbooks/PostgresIdleInTransaction")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"<h1>PostgresIdleInTransaction</h1>" in body
    status, _, index = get(f"{status_exporter.url}/playbooks/")
    assert status == 200 and b'href="/playbooks/PostgresDown"' in index
    assert b'href="PostgresDown.md"' not in index


def test_landing_page_links_every_page(status_exporter: Serving) -> None:
    body = get(status_exporter.url + "/")[2]
    for path in (b"/metrics", b"/status", b"/status.json", b"/playbooks/", b"/healthz"):
        assert b'href="' + path + b'"' in body


def test_without_web_status_the_pages_are_404(portal_db: PortalDb) -> None:
    config = load_config()
    with serving(portal_db.monitor_dsn, config) as exporter:
        for path in ("/status", "/status.json", "/playbooks/", "/playbooks/PostgresDown"):
            assert get(exporter.url + path)[0] == 404
        assert b"/status" not in get(exporter.url + "/")[2]


def test_with_the_database_stopped_status_answers_and_says_so_on_top(
    own_server: Callable[..., ThrowawayServer],
) -> None:
    server = own_server()
    db = Servers().portal_db(server)
    config = configured(only=["server", "connections", "id_mappings_orphans"])
    with serving(db.monitor_dsn, config, status=True) as exporter:
        wait_for(lambda: exporter.cache.ready()[0], what="a first collection")
        server.stop("fast")
        wait_for(
            lambda: (
                json.loads(get(f"{exporter.url}/status.json")[2])["health"]["database"] == "down"
            ),
            what="the status document to say the database is down",
        )
        status, _, body = get(f"{exporter.url}/status")
        assert status == 200
        text = body.decode()
        banner = text.index('id="health"')
        assert text.index("Database not reachable") > banner
        assert text.index("Database not reachable") < text.index("<h2>")  # on top
        assert 'href="/playbooks/PostgresDown"' in text
