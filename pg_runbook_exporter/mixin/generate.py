"""Everything derived from queries.yaml: docs, alert rules, dashboards, the README's tables.

``pg-runbook-exporter generate`` writes these files; ``--check`` (and the test suite) fails when a
committed file differs from what the generators produce, so nothing drifts from the checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pg_runbook_exporter.config import Config
from pg_runbook_exporter.mixin import alertgen, alertrules, dashgen, kubernetes
from pg_runbook_exporter.mixin.docgen import metrics_markdown

README = "README.md"


@dataclass(frozen=True)
class Drift:
    path: str
    reason: str


def replace_section(text: str, name: str, body: str) -> str:
    """Replace what stands between ``<!-- begin NAME -->`` and ``<!-- end NAME -->``."""
    pattern = re.compile(
        rf"(<!-- begin {re.escape(name)} -->\n).*?(<!-- end {re.escape(name)} -->)", re.DOTALL
    )
    if not pattern.search(text):
        raise ValueError(f"{README} has no '<!-- begin {name} -->' … '<!-- end {name} -->' section")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)


def outputs(
    config: Config,
    *,
    root: Path,
    runbook_base_url: str = alertrules.DEFAULT_RUNBOOK_BASE_URL,
    dashboard_base_url: str = alertrules.DEFAULT_DASHBOARD_BASE_URL,
) -> dict[str, str]:
    """Relative path → content of every generated file (the README's tables when it exists)."""
    files = {"docs/metrics.md": metrics_markdown(config)}
    rules = alertgen.generate(
        config, runbook_base_url=runbook_base_url, dashboard_base_url=dashboard_base_url
    )
    files.update({f"alerts/{p}": text for p, text in rules.items()})
    files.update({f"dashboards/{p}": text for p, text in dashgen.generate(config).items()})
    files.update(kubernetes.generate(files))  # wraps the rendered rules and dashboards
    readme_path = root / README
    if readme_path.is_file():  # a checkout; an installed copy writes into a folder without one
        readme = readme_path.read_text(encoding="utf-8")
        readme = replace_section(readme, "alerts", alertgen.alerts_markdown(config))
        files[README] = replace_section(readme, "dashboards", dashgen.dashboards_markdown(config))
    return files


def write(config: Config, *, root: Path, **urls: str) -> list[str]:
    """Write every generated file that differs; returns the paths written."""
    written = []
    for path, content in outputs(config, root=root, **urls).items():
        target = root / path
        if not target.is_file() or target.read_text(encoding="utf-8") != content:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
            written.append(path)
    return written


def drift(config: Config, *, root: Path, **urls: str) -> list[Drift]:
    """Generated files that are missing or differ from the generators' output."""
    found = []
    for path, content in outputs(config, root=root, **urls).items():
        target = root / path
        if not target.is_file():
            found.append(Drift(path, "missing"))
        elif target.read_text(encoding="utf-8") != content:
            found.append(Drift(path, "differs from the generator's output"))
    return found
