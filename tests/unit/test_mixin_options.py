"""generate's mixin options: the selector is equality matchers only, job and labels checked."""

from __future__ import annotations

from typing import Any

import pytest

from pg_runbook_exporter.config import load_config
from pg_runbook_exporter.mixin import alertgen
from pg_runbook_exporter.mixin.options import MixinOptions, parse_job, parse_selector


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("", ()),
        ('cluster="eu1"', (("cluster", "eu1"),)),
        (' cluster = "eu1" , env="prod" ', (("cluster", "eu1"), ("env", "prod"))),
        ('{cluster="eu1",}', (("cluster", "eu1"),)),
        ('region="eu-west-1"', (("region", "eu-west-1"),)),
    ],
)
def test_selectors_parse(text: str, parsed: tuple[tuple[str, str], ...]) -> None:
    assert parse_selector(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('cluster=~"eu.*"', 'only label="value" matchers'),
        ('cluster!="eu1"', 'only label="value" matchers'),
        ("cluster=eu1", 'expected label="value"'),
        ('cluster="eu1" env="prod"', 'expected label="value"'),
        ('job="db"', "use --mixin.job"),
        ('instance="db1:9819"', "cannot set instance"),
        ('__name__="up"', "not a label name"),
        ('1st="x"', "not a label name"),
        ('cluster="eu1", cluster="eu2"', "cluster is given twice"),
        ('cluster=""', "must be non-empty"),
        ('cluster="a\\\\b"', "without quotes or backslashes"),
    ],
)
def test_selectors_the_rule_tests_cannot_reproduce_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_selector(text)


@pytest.mark.parametrize("job", ["", 'pg"x', "a\\b", "two\nlines"])
def test_a_job_that_cannot_stand_in_a_matcher_is_refused(job: str) -> None:
    with pytest.raises(ValueError, match="must be non-empty, without quotes or backslashes"):
        parse_job(job)
    with pytest.raises(ValueError):
        MixinOptions(job=job)


def test_the_selector_joins_what_the_expression_already_selects() -> None:
    config = load_config()
    options = MixinOptions(job="db", selector=(("cluster", "eu1"),))
    expr = (
        'up{job="db"} == 0 or absent(pgrb_up) or rate(pgrb_checks_total{check="x"}[5m])'
        ' or label_replace(pgrb_up, "pgrb_label", "pgrb_value", "", "")'
        " or on(instance, job) process_cpu_seconds_total"
    )
    assert alertgen.select(expr, config, options) == (
        'up{job="db", cluster="eu1"} == 0 or absent(pgrb_up{cluster="eu1"})'
        ' or rate(pgrb_checks_total{check="x", cluster="eu1"}[5m])'
        ' or label_replace(pgrb_up{cluster="eu1"}, "pgrb_label", "pgrb_value", "", "")'
        " or on(instance, job) process_cpu_seconds_total"
    )
    assert alertgen.select(expr, config, MixinOptions()) == expr


@pytest.mark.parametrize("field", ["node_job", "node_mountpoint"])
@pytest.mark.parametrize("value", ["", '/srv/"x', "a\\b"])
def test_a_node_selector_that_cannot_stand_in_a_matcher_is_refused(field: str, value: str) -> None:
    fields: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match="must be non-empty, without quotes or backslashes"):
        MixinOptions(**fields)


def test_the_disk_rules_select_node_exporter_by_its_job_and_mountpoint_only() -> None:
    options = MixinOptions(
        job="db", selector=(("cluster", "eu1"),), node_job="hosts", node_mountpoint="/srv/pg"
    )
    document = alertgen.document(load_config(), options)
    (warning, critical) = [
        rule["expr"]
        for group in document["groups"]
        for rule in group["rules"]
        if rule["alert"] == "PostgresDiskSpaceLow"
    ]
    for expr in (warning, critical):
        assert 'node_filesystem_avail_bytes{job="hosts", mountpoint="/srv/pg"}' in expr
        assert "instance" not in expr and "cluster" not in expr
