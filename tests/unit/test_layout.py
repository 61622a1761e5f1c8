"""The package's layout rules: no import circles, a summary atop each module, short modules, every
module named in docs/architecture.md, and tests in files named for what they test.

The file list is meant to show the pipeline; these rules keep it that way as the code grows. Each
test reads the source with ``ast`` (nothing is imported), so a violation names the file and line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "pg_runbook_exporter"
NAME = PACKAGE.name
MAX_LINES = 400
# Modules allowed past MAX_LINES, each with the reason it is one piece.
LONG_MODULES: dict[str, str] = {
    f"{NAME}.cli": "every command's flags and their environment variables: next to split",
    f"{NAME}.config": "queries.yaml's schema and loader, validated in one pass: next to split",
    f"{NAME}.mixin.dashdetail": "a table of the detail boards' panels: data, one entry a panel",
    f"{NAME}.mixin.dashgen": "the health board's tiles, a table, beside the generator",
    f"{NAME}.pgserver.binaries": "the four sources of PostgreSQL binaries, tried in order",
}


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def top_level_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports when it is imported (not inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in known)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    if f"{base}.{alias.name}" in known:
                        found.add(f"{base}.{alias.name}")
                    elif base in known:
                        found.add(base)
            elif isinstance(node, ast.If | ast.Try):  # TYPE_CHECKING blocks count: a circle is one
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    found.discard(name)
    found.discard(NAME)  # the package's __init__ holds only the version
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            connect(node)
    return found


def import_graph() -> dict[str, set[str]]:
    found = dict(modules())
    known = set(found)
    return {name: top_level_imports(name, path, known) for name, path in found.items()}


def test_the_package_has_no_import_circles() -> None:
    assert cycles(import_graph()) == []


def test_the_circle_finder_finds_a_circle() -> None:
    # The rule above is only as good as this finder: a two-module circle must be reported.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_relative_and_type_checking_imports_are_seen(tmp_path: Path) -> None:
    module = tmp_path / "mod.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import other\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.third import Thing\n"
        "def later():\n"
        "    from pkg import fourth\n"
    )
    known = {"pkg.mod", "pkg.other", "pkg.third", "pkg.fourth"}
    assert top_level_imports("pkg.mod", module, known) == {"pkg.other", "pkg.third"}


def test_every_module_opens_with_a_one_line_summary() -> None:
    missing = []
    for name, path in modules():
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if not doc.split("\n", 1)[0].strip():
            missing.append(name)
    assert missing == []


def test_modules_stay_short_unless_named_with_a_reason() -> None:
    long = {
        name: n
        for name, path in modules()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert {name: n for name, n in long.items() if name not in LONG_MODULES} == {}
    assert sorted(set(LONG_MODULES) - set(long)) == [], "no longer long: drop it from the list"


def test_docs_architecture_names_every_module() -> None:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    unnamed = [
        str(path.relative_to(REPO))
        for _, path in modules()
        if path.name != "__init__.py" and f"`{path.relative_to(REPO)}`" not in text
    ]
    assert unnamed == []


# Test files named for something other than a module, each with the reason (docs/architecture.md,
# "Tests"). The ones marked "not yet split" hold tests of several modules and are to be split.
OTHER_TEST_FILES: dict[str, str] = {
    "unit/test_layout.py": "the package's layout itself",
    "integration/test_faults.py": "not yet split: the runbook's emergencies, caused for real",
    "integration/test_cardinality.py": "not yet split: series bounds on a database of 5,000 tables",
    "integration/test_webserver.py": "not yet split: web/server.py's and web/negotiation.py's",
}


def follows_the_naming_rule(name: str, modules_by_test_name: set[str]) -> bool:
    """Whether a ``tests/unit`` or ``tests/integration`` file name follows the naming rule."""
    stem = name.removeprefix("test_")
    return (
        stem in modules_by_test_name
        or (stem.startswith("deploy_") and (REPO / "deploy" / stem[len("deploy_") :]).is_dir())
        or stem == "checks"
        or stem.endswith("_checks")
    )


def test_every_unit_and_integration_file_is_named_for_what_it_tests() -> None:
    names = {name.removeprefix(f"{NAME}.").replace(".", "_") for name, _ in modules()}
    stray = [
        str(path.relative_to(REPO / "tests"))
        for kind in ("unit", "integration")
        for path in sorted((REPO / "tests" / kind).glob("test_*.py"))
        if str(path.relative_to(REPO / "tests")) not in OTHER_TEST_FILES
        and not follows_the_naming_rule(path.stem, names)
    ]
    assert stray == []
    gone = [name for name in OTHER_TEST_FILES if not (REPO / "tests" / name).exists()]
    assert gone == [], "no longer there: drop it from the list"


def test_the_test_naming_rule_refuses_a_themed_name() -> None:
    names = {"config", "web_server", "backup_files"}
    assert follows_the_naming_rule("test_web_server", names)
    assert follows_the_naming_rule("test_deploy_systemd", names)
    assert follows_the_naming_rule("test_sequence_checks", names)
    assert not follows_the_naming_rule("test_security", names)
    assert not follows_the_naming_rule("test_deploy_nowhere", names)
