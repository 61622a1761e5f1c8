"""Everything derived from queries.yaml and alerts.yaml: docs, alert rules and their promtool tests,
dashboards, the README's tables.

``pg-runbook-exporter generate`` writes these files; ``--check`` (and the test suite) fails when a
committed file differs from what the generators produce, so nothing drifts from the checks.
A new generator is one more line in ``GENERATORS`` (or ``README_SECTIONS``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pg_runbook_exporter.config import Config
from pg_runbook_exporter.mixin import alertgen, dashgen, docgen, kubernetes, playbooks, ruletests
from pg_runbook_exporter.mixin.options import MixinOptions

README = "README.md"

Generator = Callable[[Config, MixinOptions], Mapping[str, str]]
# (folder, generator): the generator's paths are relative to the folder
GENERATORS: tuple[tuple[str, Generator], ...] = (
    ("docs", docgen.generate),
    ("alerts", alertgen.generate),
    ("alerts", ruletests.generate),
    ("dashboards", dashgen.generate),
)
# (section of the README between <!-- begin NAME --> and <!-- end NAME -->, its Markdown)
README_SECTIONS: tuple[tuple[str, Callable[[Config, MixinOptions], str]], ...] = (
    ("alerts", alertgen.alerts_markdown),
    ("page", playbooks.readme_page),
    ("dashboards", dashgen.dashboards_markdown),
)


@dataclass(frozen=True)
class Drift:
    path: str
    reason: str


def replace_section(text: str, name: str, body: str, where: str = README) -> str:
    """Replace what stands between ``<!-- begin NAME -->`` and ``<!-- end NAME -->``."""
    pattern = re.compile(
        rf"(<!-- begin {re.escape(name)} -->\n).*?(<!-- end {re.escape(name)} -->)", re.DOTALL
    )
    if not pattern.search(text):
        raise ValueError(f"{where} has no '<!-- begin {name} -->' … '<!-- end {name} -->' section")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)


def outputs(config: Config, *, root: Path, options: MixinOptions | None = None) -> dict[str, str]:
    """Relative path → content of every generated file (the README's tables when it exists)."""
    options = options or MixinOptions()
    files: dict[str, str] = {}
    for folder, generator in GENERATORS:
        files.update({f"{folder}/{p}": text for p, text in generator(config, options).items()})
    files.update(kubernetes.generate(files))  # wraps the rendered rules and dashboards
    readme_path = root / README
    if readme_path.is_file():  # a checkout; an installed copy writes into a folder without one
        readme = readme_path.read_text(encoding="utf-8")
        for name, section in README_SECTIONS:
            readme = replace_section(readme, name, section(config, options))
        files[README] = readme
    for alert, parts in playbooks.sections(config, options).items():
        path = f"{playbooks.PLAYBOOKS}/{alert}.md"
        if (root / path).is_file():  # a checkout's playbooks, written by hand around the sections
            text = (root / path).read_text(encoding="utf-8")
            for name, body in parts.items():
                text = replace_section(text, name, body, path)
            files[path] = text
    return files


def write(config: Config, *, root: Path, options: MixinOptions | None = None) -> list[str]:
    """Write every generated file that differs; returns the paths written."""
    written = []
    for path, content in outputs(config, root=root, options=options).items():
        target = root / path
        if not target.is_file() or target.read_text(encoding="utf-8") != content:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
            written.append(path)
    return written


def drift(config: Config, *, root: Path, options: MixinOptions | None = None) -> list[Drift]:
    """Generated files that are missing or differ from the generators' output."""
    found = []
    for path, content in outputs(config, root=root, options=options).items():
        target = root / path
        if not target.is_file():
            found.append(Drift(path, "missing"))
        elif target.read_text(encoding="utf-8") != content:
            found.append(Drift(path, "differs from the generator's output"))
    return found
