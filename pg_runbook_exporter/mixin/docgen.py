"""docs/metrics.md: every exported metric, from queries.yaml and the self-metrics table."""

from __future__ import annotations

from pg_runbook_exporter import selfmetrics
from pg_runbook_exporter.config import Check, Config
from pg_runbook_exporter.mixin.options import MixinOptions


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _requires(check: Check) -> str:
    req = check.requires
    parts = []
    if req.min_version and req.max_version:
        parts.append(f"PostgreSQL {req.min_version}–{req.max_version}")
    elif req.min_version:
        parts.append(f"PostgreSQL {req.min_version}+")
    elif req.max_version:
        parts.append(f"PostgreSQL ≤ {req.max_version}")
    if req.primary:
        parts.append("primary only")
    if req.extension:
        parts.append(f"extension `{req.extension}`")
    if req.relations:
        parts.append("tables " + ", ".join(f"`{r}`" for r in req.relations))
    parts += [f"`{name} = {value}`" for name, value in req.settings]
    return "; ".join(parts) or "—"


def _seconds(value: float) -> str:
    if value >= 60 and value % 60 == 0:
        return f"{value / 60:g} min"
    return f"{value:g} s" if value >= 1 else f"{value * 1000:g} ms"


def metrics_markdown(config: Config) -> str:
    lines = [
        "# Metrics reference",
        "",
        "Generated from `queries.yaml` by `pg-runbook-exporter generate`; do not edit by hand.",
        "",
        f"Every metric carries the `{config.namespace}_` prefix. A check's values are served",
        "from the last successful run; after a failure they stay for `stale_intervals` intervals,",
        f"then vanish while `{config.metric_name('check_success')}` and "
        f"`{config.metric_name('check_last_success_timestamp_seconds')}` say why.",
        "",
        "## Checks",
        "",
        "| check | interval | timeout | lock timeout | needs | what it answers |",
        "|---|---|---|---|---|---|",
    ]
    for check in config.checks:
        lines.append(
            f"| `{check.name}` | {_seconds(check.interval)} | {_seconds(check.timeout)} | "
            f"{_seconds(check.lock_timeout)} | {_requires(check)} | {_cell(check.help)} |"
        )
    lines += [
        "",
        "## Metrics of the checks",
        "",
        "| metric | type | labels | check | help |",
        "|---|---|---|---|---|",
    ]
    for check in config.checks:
        labels = ", ".join(f"`{x}`" for x in check.labels) or "—"
        for metric in check.metrics:
            lines.append(
                f"| `{metric.name}` | {metric.type} | {labels} | `{check.name}` | "
                f"{_cell(metric.help)} |"
            )
    exported = [s for s in config.settings if s.metric is not None]
    if exported:
        lines += [
            "",
            "## Settings exported as metrics",
            "",
            "Thresholds from `queries.yaml` `settings`, so rules and panels can compare with them.",
            "",
            "| metric | setting | value | help |",
            "|---|---|---|---|",
        ]
        for setting in exported:
            assert setting.metric is not None
            lines.append(
                f"| `{config.metric_name(setting.metric)}` | `{setting.name}` | "
                f"{setting.value} | {_cell(setting.help)} |"
            )
    lines += [
        "",
        "## The exporter's own metrics",
        "",
        "| metric | type | labels | help |",
        "|---|---|---|---|",
    ]
    for own in selfmetrics.ALL:
        labels = ", ".join(f"`{x}`" for x in own.labels) or "—"
        lines.append(
            f"| `{config.metric_name(own.name)}` | {own.type} | {labels} | {_cell(own.help)} |"
        )
    lines += ["", "Process metrics (`process_*`) come from `prometheus_client`.", ""]
    return "\n".join(lines)


def generate(config: Config, options: MixinOptions) -> dict[str, str]:
    """The files under ``docs/`` (the metrics do not depend on the options)."""
    return {"metrics.md": metrics_markdown(config)}
