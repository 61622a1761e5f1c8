"""The generated parts of the playbooks (docs/alerts/*.md) and of the README: what a page says.

Each playbook of an alert with a diagnosis holds two generated sections: ``page`` (the page of a
promtool example, as Prometheus renders it there) and ``diagnose`` (the first diagnosis statement,
from alerts.yaml, with that example's labels). The rest of a playbook is written by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pg_runbook_exporter.config import Config
from pg_runbook_exporter.mixin import ruletests
from pg_runbook_exporter.mixin.alertrules import rules
from pg_runbook_exporter.mixin.options import MixinOptions

PLAYBOOKS = "docs/alerts"
README_PAGE = "PostgresSessionsBlocked"  # the page the README shows
SHOWN = ("summary", "description", "culprit", "fix", "do_not")


def _text(value: str) -> str:
    return " ".join(value.split()).replace("<", "&lt;")


def page_markdown(alert: str, page: tuple[Any, Mapping[str, Any]]) -> str:
    example, alert_page = page
    annotations = alert_page["exp_annotations"]
    labels = ", ".join(f"{k}={v}" for k, v in alert_page["exp_labels"].items())
    lines = [
        f'The page of the promtool example "{example.name}" ([alerts/tests/]'
        f"(../../alerts/tests/)), word for word as Prometheus renders it (labels: {labels}):",
        "",
    ]
    for key in SHOWN:
        if key in annotations:
            text = _text(annotations[key])
            lines.append(f"- **{key}:** " + (f"`{text}`" if key == "fix" else text))
    if "diagnose" in annotations:
        lines.append("- **diagnose:** the statement below")
    return "\n".join(lines) + "\n"


def diagnose_markdown(alert: str, page: tuple[Any, Mapping[str, Any]]) -> str:
    sql = page[1]["exp_annotations"]["diagnose"]
    return (
        "The first statement, as the page's `diagnose` annotation shows it and"
        f" `pg-runbook-exporter diagnose {alert}` runs it (read-only, the alert's labels bound as"
        f" parameters; here the example's):\n\n```sql\n{sql.rstrip()};\n```\n"
    )


def sections(config: Config, options: MixinOptions) -> dict[str, dict[str, str]]:
    """Alert → generated section name → its Markdown."""
    diagnosed = {r.name for r in rules() if r.diagnosis is not None}
    found: dict[str, dict[str, str]] = {}
    for alert, page in ruletests.pages(config, options).items():
        if alert not in diagnosed:
            continue
        found[alert] = {
            "page": page_markdown(alert, page),
            "diagnose": diagnose_markdown(alert, page),
        }
    return found


def readme_page(config: Config, options: MixinOptions) -> str:
    """The README's example of a page, with a pointer to every playbook's."""
    page = ruletests.pages(config, options)[README_PAGE]
    return (
        page_markdown(README_PAGE, page)
        .replace("](../../alerts/tests/)", "](alerts/tests/)")
        .replace(
            "the statement below",
            f"the statement in [its playbook]({PLAYBOOKS}/{README_PAGE}.md#diagnosis)",
        )
        + f"\nEvery playbook in [{PLAYBOOKS}/]({PLAYBOOKS}/) shows its alert's page the same way.\n"
    )
