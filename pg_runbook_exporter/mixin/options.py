"""What a deployment tells ``generate``: where playbooks and boards live, and which series are its.

Kept free of heavy imports: the command line reads the defaults below for its ``--help``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Placeholders a deployment overrides: where the playbooks (docs/alerts/) and the boards live.
DEFAULT_RUNBOOK_BASE_URL = "https://runbooks.example.com/pg-runbook-exporter/alerts/"
DEFAULT_DASHBOARD_BASE_URL = "https://grafana.example.com/d/"  # Grafana's /d/ prefix; + board uid
DEFAULT_JOB = "pg-runbook-exporter"
# node_exporter's series of the data volume (the disk rules and the storage board's volume row)
DEFAULT_NODE_JOB = "node"
DEFAULT_NODE_MOUNTPOINT = "/var/lib/postgresql"

_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_MATCHER = re.compile(r'\s*([^\s=!~,"]+)\s*(=~|!=|!~|=)\s*"([^"]*)"\s*(?:,|$)')
# Labels a target already has from its scrape, or that the selector cannot narrow.
_RESERVED = {"job": "use --mixin.job", "instance": "each exporter is its own instance"}


@dataclass(frozen=True)
class MixinOptions:
    """The generators' options; the defaults are the files committed in the repository."""

    runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL
    dashboard_base_url: str = DEFAULT_DASHBOARD_BASE_URL
    job: str = DEFAULT_JOB
    # extra label="value" matchers every selector of the rules and boards carries
    selector: tuple[tuple[str, str], ...] = ()
    node_job: str = DEFAULT_NODE_JOB
    node_mountpoint: str = DEFAULT_NODE_MOUNTPOINT

    def __post_init__(self) -> None:
        parse_job(self.job)
        for label, value in self.selector:
            _check_label(label)
            _check_value(label, value)
        _check_value("--mixin.node-job", self.node_job)
        _check_value("--mixin.node-mountpoint", self.node_mountpoint)

    @property
    def node_matchers(self) -> str:
        """node_exporter's series of the data volume: its job and the volume's mountpoint.

        Not the exporter's ``instance``: node_exporter's is its own host:port.
        """
        return f'job="{self.node_job}", mountpoint="{self.node_mountpoint}"'

    @property
    def matchers(self) -> str:
        """The extra selector as PromQL matchers, ``cluster="eu1", env="prod"`` (or "")."""
        return ", ".join(f'{label}="{value}"' for label, value in self.selector)

    @property
    def target_labels(self) -> dict[str, str]:
        """The labels the exporter's series carry from the scrape, ``instance`` aside."""
        return {"job": self.job, **dict(self.selector)}


def _check_label(label: str) -> None:
    if not _LABEL.fullmatch(label) or label.startswith("__"):
        raise ValueError(f"{label!r} is not a label name Prometheus accepts for a target")
    if label in _RESERVED:
        raise ValueError(f"the selector cannot set {label}: {_RESERVED[label]}")


def _check_value(what: str, value: str) -> None:
    if not value or any(c in value for c in '"\\\n'):
        raise ValueError(f"{what}: {value!r} must be non-empty, without quotes or backslashes")


def parse_job(text: str) -> str:
    """The job name, refused when it could not stand inside ``job="…"``."""
    _check_value("job", text)
    return text


def parse_node_job(text: str) -> str:
    """node_exporter's job name, refused when it could not stand inside ``job="…"``."""
    _check_value("node job", text)
    return text


def parse_mountpoint(text: str) -> str:
    """The data volume's mountpoint, refused when it could not stand inside ``mountpoint="…"``."""
    _check_value("mountpoint", text)
    return text


def parse_selector(text: str) -> tuple[tuple[str, str], ...]:
    """``cluster="eu1", env="prod"`` → ``(("cluster", "eu1"), ("env", "prod"))``.

    Only equality matchers: the generated promtool tests give their series exactly these labels,
    which a regular expression or a negative matcher cannot say.
    """
    text = text.strip().removeprefix("{").removesuffix("}")
    matchers: list[tuple[str, str]] = []
    position = 0
    while position < len(text.rstrip()):
        match = _MATCHER.match(text, position)
        if match is None:
            raise ValueError(f'expected label="value"[, …] at {text[position:]!r}')
        label, operator, value = match.groups()
        if operator != "=":
            raise ValueError(
                f'{label}{operator}: only label="value" matchers (the rule tests\' series must '
                "carry the labels exactly)"
            )
        _check_label(label)
        _check_value(label, value)
        if label in dict(matchers):
            raise ValueError(f"{label} is given twice")
        matchers.append((label, value))
        position = match.end()
    return tuple(matchers)
