"""The status document drawn as one HTML page: no script, no external asset, one hashed style block.

Every string is escaped, whatever its source: application names, table names and error messages
come from the database and are chosen by whoever connects to it. The page is rendered once per
snapshot; the Content-Security-Policy allows only its own style block, by hash.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape
from typing import Any

from pg_runbook_exporter.status.units import Unit, duration, shown

STYLE = """
:root{color-scheme:light dark;--ok:#2e7d32;--warning:#b26a00;--critical:#c62828;--info:#1565c0;
--muted:#6b6b6b;--line:#8884}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;padding:12px;max-width:1100px;
overflow-wrap:anywhere}
h1{font-size:1.35em;margin:.2em 0}h2{font-size:1.15em;margin:1.2em 0 .4em}
a{color:inherit}
.banner{padding:10px 12px;border-radius:6px;border-left:6px solid var(--ok);background:#8881}
.banner.down,.banner.critical{border-color:var(--critical)}
.banner.warning,.banner.failing,.banner.stale{border-color:var(--warning)}
.note,.muted{color:var(--muted);font-size:.9em}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;padding:6px 8px;border-bottom:1px solid var(--line)}
th{font-size:.85em;color:var(--muted);font-weight:600;white-space:nowrap}
td.value{min-width:7em}td.check{min-width:10em}
.state{font-weight:700;text-transform:uppercase;font-size:.8em;padding:2px 6px;border-radius:4px;
color:#fff;background:var(--muted);white-space:nowrap}
.state.ok{background:var(--ok)}.state.warning,.state.failing,.state.stale{background:var(--warning)}
.state.critical{background:var(--critical)}.state.info{background:var(--info)}
code,pre{font:13px/1.4 ui-monospace,monospace}
pre{white-space:pre-wrap;word-break:break-all;background:#8882;padding:6px 8px;border-radius:4px;
margin:.3em 0}
ul.tree{list-style:none;padding-left:0}ul.tree ul{list-style:none;padding-left:1.2em;
border-left:2px solid var(--line);margin:.3em 0 .3em .4em}
ul.tree li{margin:.3em 0}
@media (max-width:640px){
table,thead,tbody,tr,th,td{display:block}thead{display:none}
tr{border-bottom:1px solid var(--line);padding:6px 0}td{border:0;padding:2px 4px}
td[data-label]::before{content:attr(data-label) ": ";color:var(--muted);font-size:.85em}
}
"""
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; img-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
HTML_TYPE = b"text/html; charset=utf-8"
SECURITY_HEADERS = (
    f"Content-Security-Policy: {CSP}\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "Referrer-Policy: no-referrer\r\n"
    "Cache-Control: no-store\r\n"
).encode()


ICON_PATH = "/favicon.svg"
# Served so that a browser asks for no /favicon.ico, which would be a 404 in its console.
ICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    b'<circle cx="8" cy="8" r="7" fill="#336791"/></svg>\n'
)


def e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def document_page(title: str, body: str) -> bytes:
    """An HTML page of this exporter: the one style block, ``body`` as given (already escaped)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="/favicon.svg">'
        f"<title>{e(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    ).encode()


def _playbook_link(name: str | None, text: str | None = None) -> str:
    if not name:
        return ""
    return f'<a href="/playbooks/{e(name)}">{e(text or name)}</a>'


def _banner(doc: dict[str, Any], worst: str) -> str:
    health = doc["health"]
    database = health["database"]
    if database == "down":
        headline = "Database not reachable"
        cls = "down"
        extra = " — values below are the last ones collected. Playbook: " + _playbook_link(
            health["database_playbook"]
        )
    elif database == "unknown":
        headline, cls, extra = "Not connected yet", "stale", ""
    else:
        headline, cls, extra = "Database reachable", worst, ""
    counts = ", ".join(
        f"{health[s]} {s}"
        for s in ("critical", "warning", "failing", "stale", "info", "ok", "skipped", "pending")
        if health[s]
    )
    past = [
        f'<a href="#check-{e(r["check"])}">{e(r["check"])}</a> ({e(r["state"])})'
        for c in doc["chapters"]
        for r in c["rows"]
        if r["state"] in ("critical", "warning", "failing", "stale")
    ]
    listed = f"<br>Past a threshold or failing: {', '.join(past)}" if past else ""
    return (
        f'<div class="banner {e(cls)}" id="health"><strong>{e(headline)}</strong>{extra}<br>'
        f"{health['checks']} checks: {e(counts)}{listed}</div>"
    )


def _value(row: dict[str, Any]) -> str:
    if row["value_text"] is None:
        return '<span class="muted">—</span>'
    text = f"<strong>{e(row['value_text'])}</strong>"
    if row["labels"]:
        labels = ", ".join(f"{k}={v}" for k, v in row["labels"].items())
        text += f' <span class="muted">{e(labels)}</span>'
    if row["series"] > 1:
        text += f' <span class="muted">(worst of {row["series"]} series)</span>'
    return text


def _detail(row: dict[str, Any]) -> str:
    parts = []
    if row["thresholds"]:
        parts.append(
            "thresholds: " + "; ".join(f"{t['severity']} {t['text']}" for t in row["thresholds"])
        )
    if row["judged_by_alerts"]:
        parts.append("judged by the alerts: " + "; ".join(row["judged_by_alerts"]))
    if row["error"]:
        parts.append(f"error ({row['error']['reason']}): {row['error']['message']}")
    if row["skipped"]:
        parts.append(f"skipped: {row['skipped']}")
    return "<br>".join(e(p) for p in parts)


def _row(row: dict[str, Any]) -> str:
    age = row["last_success_age_seconds"]
    last = f"{duration(age)} ago" if age is not None else "never"
    state = e(row["state"])
    return (
        f'<tr id="check-{e(row["check"])}" data-state="{state}">'
        f'<td data-label="state"><span class="state {state}">{state}</span></td>'
        f'<td data-label="check" class="check"><strong>{e(row["check"])}</strong>'
        f' <span class="muted">{e(row["metric"])}</span></td>'
        f'<td data-label="value" class="value">{_value(row)}</td>'
        f'<td data-label="last success">{e(last)}</td>'
        f'<td data-label="detail">{_detail(row)}</td>'
        f'<td data-label="playbook">{_playbook_link(row["playbook"])}</td></tr>'
    )


def _chapter(chapter: dict[str, Any]) -> str:
    rows = "\n".join(_row(r) for r in chapter["rows"])
    return (
        f"<h2>{e(chapter['name'])}</h2><table><thead><tr><th>state</th><th>check</th>"
        "<th>value</th><th>last success</th><th>detail</th><th>playbook</th></tr></thead>"
        f"<tbody>\n{rows}\n</tbody></table>"
    )


def _who(item: dict[str, Any], now_label: str = "") -> str:
    bits = [
        f"pid {item.get('pid', '')}",
        f"application {item.get('application_name', '')!s}" if "application_name" in item else "",
        f"client {item.get('client_addr') or 'local socket'}",
        f"user {item['usename']}" if item.get("usename") else "",
        f"database {item['datname']}" if item.get("datname") else "",
        f"state {item['state']}" if item.get("state") else "",
        f"{now_label} {duration(item['age_seconds'])}"
        if item.get("age_seconds") is not None
        else "",
    ]
    return e(" · ".join(b for b in bits if b))


def _fix(item: dict[str, Any]) -> str:
    return f"<pre>{e(item['fix'])}</pre>" if item.get("fix") else ""


def _blockers(section: dict[str, Any]) -> str:
    items = []
    for item in section["offenders"]:
        waiting = item.get("waiting")
        waiting_all = item.get("waiting_all")
        waits = (
            "1 session waits directly" if waiting == 1
            else f"{unit_count(waiting)} sessions wait directly"
        )  # fmt: skip
        if waiting_all is not None:
            waits += f", {unit_count(waiting_all)} in all"
        if item.get("relation"):
            waits += f", on table {item['relation']}"
        if item.get("command"):
            waits += f" (blocker runs {item['command']})"
        items.append(
            f'<li class="blocker"><strong>blocker</strong> {_who(item, "transaction open")}'
            f'{_fix(item)}<ul><li class="waiters">{e(waits)}</li></ul></li>'
        )
    return f'<ul class="tree">{"".join(items)}</ul>'


def unit_count(value: object) -> str:
    return shown(value, Unit.COUNT, 0) if isinstance(value, float) else "?"


def _sessions(section: dict[str, Any]) -> str:
    label = "idle for" if section["kind"] == "idle_in_transaction" else "running for"
    items = [f"<li>{_who(i, label)}{_fix(i)}</li>" for i in section["offenders"]]
    return f'<ul class="tree">{"".join(items)}</ul>'


def _offenders(doc: dict[str, Any]) -> str:
    parts = []
    for section in doc["offenders"]:
        link = _playbook_link(section["playbook"], "playbook")
        title = f"<h2>{e(section['title'])} {link}</h2>"
        if not section["offenders"]:
            parts.append(f'{title}<p class="muted">None past its threshold.</p>')
            continue
        body = _blockers(section) if section["kind"] == "blockers" else _sessions(section)
        parts.append(f'<section id="offenders-{e(section["kind"])}">{title}{body}</section>')
    return "\n".join(parts)


def render(doc: dict[str, Any], *, worst: str, name: str = "pg-runbook-exporter") -> bytes:
    body = (
        f"<h1>{e(name)} status</h1>"
        f'<p class="note">Generation {doc["generation"]}, rendered {e(doc["rendered_at"])}. '
        "States are instantaneous, at the thresholds the alerts use, without their "
        "<code>for</code>; conditions that need history are judged by the alerts. "
        '<a href="/status.json">JSON</a> · <a href="/playbooks/">playbooks</a> · '
        '<a href="/">home</a></p>'
        f"{_banner(doc, worst)}\n{_offenders(doc)}\n"
        + "\n".join(_chapter(c) for c in doc["chapters"])
    )
    return document_page(f"{name} status", body)
