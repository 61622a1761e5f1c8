"""Configs for tests whose checks need SQL the vetting refuses: pg_sleep(), tables a test made."""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from pg_runbook_exporter.config import Config, SqlVariant, parse_config


def unvetted_config(text: str, *, source: str = "unvetted.yaml") -> Config:
    """``text`` loaded as queries.yaml, each check running its SQL as written, past the vetting.

    Every other key is validated as usual. Only tests may do this: the exporter has no way to.
    """
    data: dict[str, Any] = yaml.safe_load(text)
    written: dict[str, Any] = {}
    for name, check in data.get("checks", {}).items():
        written[name] = check["sql"]
        if isinstance(check["sql"], list):
            check["sql"] = [{**variant, "sql": "SELECT 1"} for variant in check["sql"]]
        else:
            check["sql"] = "SELECT 1"
    config = parse_config(yaml.safe_dump(data, sort_keys=False), source=source)

    def as_written(variant: SqlVariant, sql: str) -> SqlVariant:
        return dataclasses.replace(variant, sql=sql)

    checks = []
    for check in config.checks:
        sql = written[check.name]
        texts = [v["sql"] for v in sql] if isinstance(sql, list) else [sql]
        variants = tuple(as_written(v, t) for v, t in zip(check.variants, texts, strict=True))
        checks.append(dataclasses.replace(check, variants=variants))
    return dataclasses.replace(config, checks=tuple(checks))
