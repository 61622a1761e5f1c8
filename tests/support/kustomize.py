"""The objects ``kustomize build DIR`` would emit, for the subset of kustomize ``deploy/`` uses.

kustomize cannot be installed here (it is neither a Debian, PyPI nor npm package), so the tests
build the resource list themselves: ``resources`` (files and directories, recursively),
``configMapGenerator`` with ``files``, and ``patches`` given as JSON 6902 ``add``/``replace``
operations on a ``target`` by kind and name. Any other field fails the build, so a kustomization
never silently means more than the tests check. kustomize also appends a content hash to a
generated ConfigMap's name and rewrites the references; the objects here keep the plain name.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = frozenset({"apiVersion", "kind", "resources", "configMapGenerator", "patches"})

Object = dict[str, Any]


class KustomizeError(Exception):
    pass


def build(root: Path) -> list[Object]:
    """Every object of the kustomization in ``root``, patched, in kustomize's input order."""
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text(encoding="utf-8"))
    unsupported = set(kustomization) - SUPPORTED
    if unsupported:
        raise KustomizeError(f"{root}/kustomization.yaml: not built by the tests: {unsupported}")
    if kustomization.get("kind") != "Kustomization":
        raise KustomizeError(f"{root}/kustomization.yaml: kind is not Kustomization")
    objects: list[Object] = []
    for entry in kustomization.get("resources", []):
        path = (root / entry).resolve()
        objects += build(path) if path.is_dir() else list(_documents(path))
    for generator in kustomization.get("configMapGenerator", []):
        objects.append(_config_map(root, generator))
    for patch in kustomization.get("patches", []):
        _apply(root, patch, objects)
    return objects


def _documents(path: Path) -> Iterator[Object]:
    for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if document is not None:
            yield document


def _config_map(root: Path, generator: dict[str, Any]) -> Object:
    if set(generator) != {"name", "files"}:
        raise KustomizeError(f"configMapGenerator {generator.get('name')}: only name and files")
    data = {Path(f).name: (root / f).read_text(encoding="utf-8") for f in generator["files"]}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]},
            "data": data}  # fmt: skip


def _apply(root: Path, patch: dict[str, Any], objects: list[Object]) -> None:
    target = patch["target"]
    matches = [
        o for o in objects
        if o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]
    ]  # fmt: skip
    if len(matches) != 1:
        raise KustomizeError(f"patch {patch['path']}: {len(matches)} objects match {target}")
    operations = yaml.safe_load((root / patch["path"]).read_text(encoding="utf-8"))
    if not isinstance(operations, list):
        raise KustomizeError(f"patch {patch['path']}: only JSON 6902 operations are built")
    for operation in operations:
        _operate(matches[0], operation)


def _operate(document: Object, operation: dict[str, Any]) -> None:
    op, pointer, value = operation["op"], operation["path"], operation.get("value")
    if op not in ("add", "replace"):
        raise KustomizeError(f"JSON patch op {op!r} is not built by the tests")
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    value = copy.deepcopy(value)
    if isinstance(node, list):
        if last == "-":
            node.append(value)
        elif op == "add":
            node.insert(int(last), value)
        else:
            node[int(last)] = value
    elif op == "replace" and last not in node:
        raise KustomizeError(f"JSON patch replace of missing {pointer}")
    else:
        node[last] = value
