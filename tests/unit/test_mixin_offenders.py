"""offenders.py: a culprit's words as a Go template for the rules, and the same words rendered
from series for the rule tests (promtool compares the two in alerts/tests/)."""

from __future__ import annotations

import pytest

from pg_runbook_exporter import playbook
from pg_runbook_exporter.config import load_config
from pg_runbook_exporter.errors import ConfigError
from pg_runbook_exporter.mixin import offenders
from pg_runbook_exporter.mixin.alertrules import rules
from pg_runbook_exporter.mixin.offenders import Culprit, Scene
from pg_runbook_exporter.playbook import Diagnosis, Fix
from pg_runbook_exporter.validation import Problems

TARGET = {"instance": "db1:9819", "job": "pg"}
CULPRIT = Culprit(
    series="pgrb_idle_since",
    rank="oldest",
    text="{application_name}[ @ {client_addr}] idle for {idle:duration}",
    none="nobody",
    values={"idle": "time() - pgrb_idle_since"},
    fills_fix=True,
)


def _scene(*samples: tuple[str, dict[str, str], float]) -> Scene:
    return Scene(samples, 1200.0, TARGET, lambda name: name)


def _session(pid: str, app: str, addr: str, since: float) -> tuple[str, dict[str, str], float]:
    labels = {**TARGET, "pid": pid, "backend_start": f"b{pid}", "application_name": app,
              "client_addr": addr}  # fmt: skip
    return ("pgrb_idle_since", labels, since)


def test_the_go_template_queries_the_alerts_target_and_matches_values_on_the_key() -> None:
    assert offenders.go_culprit(CULPRIT) == (
        '{{ with printf "sort(bottomk(1, pgrb_idle_since{instance=%q, job=%q}))" $labels.instance'
        " $labels.job | query }}{{ range $i, $o := . }}{{ if $i }}; {{ end }}"
        "{{ $o.Labels.application_name }}{{ if $o.Labels.client_addr }} @ "
        "{{ $o.Labels.client_addr }}{{ end }} idle for "
        '{{ with printf "time() - pgrb_idle_since{instance=%q, job=%q, pid=%q, backend_start=%q}"'
        " $labels.instance $labels.job $o.Labels.pid $o.Labels.backend_start | query }}"
        "{{ . | first | value | humanizeDuration }}{{ end }}{{ end }}{{ else }}nobody{{ end }}"
        + offenders.AS_OF
    )


def test_the_oldest_offender_is_named_and_an_empty_part_left_out() -> None:
    scene = _scene(_session("7", "portal-bff", "", 600.0), _session("8", "cron", "10.0.0.1", 900.0))
    assert offenders.say_culprit(CULPRIT, scene) == (
        "portal-bff idle for 10m 0s (as of 1970-01-01 00:20:00 +0000 UTC)"
    )


def test_without_offender_series_the_page_says_none() -> None:
    other = {**_session("7", "portal-bff", "", 600.0)[1], "instance": "db2:9819"}
    scene = _scene(("pgrb_idle_since", other, 600.0))
    assert offenders.say_culprit(CULPRIT, scene) == "nobody (as of 1970-01-01 00:20:00 +0000 UTC)"


def test_the_fix_is_filled_from_the_top_offender_or_shows_its_fields() -> None:
    diagnosis = Diagnosis("X", "SELECT 1", (), (Fix("kill {pid} {backend_start:literal}"),))
    named = _scene(_session("7", "portal-bff", "", 600.0))
    assert offenders.say_fix(diagnosis, CULPRIT, named) == "kill 7 'b7'"
    assert offenders.say_fix(diagnosis, CULPRIT, _scene()) == "kill <pid> <backend_start>"
    assert offenders.go_fix(diagnosis, CULPRIT).endswith(
        "kill {{ $o.Labels.pid }} '{{ reReplaceAll \"'\" \"''\" $o.Labels.backend_start }}'"
        "{{ end }}{{ else }}kill <pid> <backend_start>{{ end }}"
    )


def test_the_diagnose_sql_gets_the_alerts_labels_as_literals() -> None:
    sql = "SELECT 1 WHERE datname = %(datname)s AND x > %(limit)s"
    diagnosis = Diagnosis("X", sql, ("datname",), (Fix("none"),))
    said = offenders.say_diagnose(diagnosis, {"datname": "it's"}, lambda name: "300")
    assert said == "SELECT 1 WHERE datname = 'it''s' AND x > 300"
    assert offenders.go_diagnose(diagnosis, lambda name: "300") == (
        "SELECT 1 WHERE datname = '{{ reReplaceAll \"'\" \"''\" $labels.datname }}' AND x > 300"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[a [b {x}]]", "an optional part is [A] or [A|B], not nested"),
        ("{x:loud}", "{x:loud}: formats are ['duration', 'humanize', 'bytes', 'percent', "
                     "'timestamp']"),
    ],
)  # fmt: skip
def test_a_culprit_text_it_cannot_render_is_refused(text: str, problem: str) -> None:
    problems = Problems("alerts.yaml")
    raw = {"series": "pgrb_x", "text": text, "none": "nobody"}
    assert offenders.parse(raw, "alerts.X.culprit", problems) is None
    with pytest.raises(ConfigError) as raised:
        raise ConfigError(problems.items)
    assert raised.value.problems == [f"alerts.yaml: alerts.X.culprit.text: {problem}"]


def test_every_series_a_page_names_is_a_metric_of_queries_yaml_with_the_labels_it_reads() -> None:
    config = load_config()
    labels = {m.name: set(c.labels) for c in config.checks for m in c.metrics}
    for rule in rules():
        culprit = rule.culprit
        if culprit is None:
            continue
        series = [culprit.series, *(v.removeprefix("time() - ") for v in culprit.values.values())]
        for metric in series:
            name = metric
            assert name in labels, f"{rule.name}: {metric} is not exported"
            assert set(culprit.key) <= labels[name], f"{rule.name}: {metric} lacks {culprit.key}"
        read = {n for _kind, n, _f in offenders._fields(culprit.text)} - {"value", *culprit.values}
        assert read <= labels[culprit.series], rule.name
        fix = rule.diagnosis.fixes if rule.diagnosis and culprit.fills_fix else ()
        for one in fix:
            used = {n for n, _q in playbook.fields(one.text)} | ({one.when} - {None})
            assert used <= labels[culprit.series], rule.name
