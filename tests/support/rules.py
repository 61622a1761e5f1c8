"""The generated alert rules made fast for end-to-end tests: every ``for`` replaced."""

from __future__ import annotations

import yaml

from pg_runbook_exporter.config import Config
from pg_runbook_exporter.mixin import alertgen
from pg_runbook_exporter.mixin.alertrules import RULES_FILE


def with_for(text: str, duration: str) -> str:
    """A rule file's text with every rule's ``for`` set to ``duration`` (``0s``: fire at once)."""
    document = yaml.safe_load(text)
    for group in document["groups"]:
        for rule in group["rules"]:
            rule["for"] = duration
    return alertgen.dump(document)


def rules_firing_at_once(config: Config) -> str:
    """The rules generated from ``config``, each firing at its first evaluation above threshold."""
    return with_for(alertgen.generate(config)[RULES_FILE], "0s")
