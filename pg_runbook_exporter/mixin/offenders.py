"""The page's words about the culprit: offender series named through Prometheus template ``query``.

An alert's ``culprit`` (alerts.yaml) names the offender series to rank, the words for each one and
for none. Its text holds ``{label}``, ``{value}`` or ``{name}`` of a further series of the same
offender (``values``: ``pgrb_x`` or ``time() - pgrb_x``, matched on instance, job and ``key``),
each with an optional ``:format``, and ``[A|B]`` (A when A's labels are all non-empty and its
further series all present, else B).
``go_*`` write the Go templates of the rules; ``say_*`` render the same words in Python from a
promtool example's series, so the generated tests expect what Prometheus must render.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pg_runbook_exporter import playbook
from pg_runbook_exporter.mixin.promtemplate import FUNCTIONS
from pg_runbook_exporter.playbook import Diagnosis, Quote
from pg_runbook_exporter.validation import Problems

_PART = re.compile(r"\[([^\[\]|]*)(?:\|([^\[\]]*))?\]|\{(\w+)(?::(\w+))?\}")
_VALUE = re.compile(r"(time\(\) - )?(pgrb_\w+)")
RANKS = {"highest": ("sort_desc", "topk"), "oldest": ("sort", "bottomk")}
FORMATS = {None: None, "duration": "humanizeDuration", "humanize": "humanize",
           "bytes": "humanize1024", "percent": "humanizePercentage",
           "timestamp": "humanizeTimestamp"}  # fmt: skip
AS_OF = ' (as of {{ with query "time()" }}{{ . | first | value | humanizeTimestamp }}{{ end }})'


@dataclass(frozen=True)
class Culprit:
    series: str  # ranked; its labels are the words' {label}s
    text: str  # for each offender named
    none: str  # when there is none
    rank: str = "highest"
    top: int = 1
    key: tuple[str, ...] = ("pid", "backend_start")
    values: Mapping[str, str] = field(default_factory=dict)
    separator: str = "; "
    fills_fix: bool = False  # the fix's fields are the top offender's labels, not the alert's
    match: tuple[str, ...] = ()  # the alert's labels the offender series must share
    intro: str = ""  # before the offenders named (not before `none`)


def parse(raw: object, path: str, problems: Problems) -> Culprit | None:
    keys = {"series", "text", "none", "rank", "top", "key", "values", "separator", "fills_fix",
            "match", "intro"}  # fmt: skip
    data = problems.mapping(raw, path, keys, {"series", "text", "none"})
    culprit = Culprit(
        series=problems.text(data.get("series"), f"{path}.series"),
        text=problems.text(data.get("text"), f"{path}.text"),
        none=problems.text(data.get("none"), f"{path}.none"),
        rank=str(data.get("rank", "highest")),
        top=problems.positive_int(data.get("top"), f"{path}.top", 1),
        key=tuple(data.get("key", ("pid", "backend_start"))),
        values=dict(data.get("values") or {}),
        separator=str(data.get("separator", "; ")),
        fills_fix=bool(data.get("fills_fix", False)),
        match=tuple(data.get("match", ())),
        intro=str(data.get("intro", "")),
    )
    if culprit.rank not in RANKS:
        problems.add(f"{path}.rank", f"one of {', '.join(RANKS)}")
    for name, expr in culprit.values.items():
        if not _VALUE.fullmatch(str(expr)):
            problems.add(f"{path}.values.{name}", "expected pgrb_x or time() - pgrb_x")
    if re.search(r"[\[\]]", _PART.sub("", culprit.text)):
        problems.add(f"{path}.text", "an optional part is [A] or [A|B], not nested")
    for part in _PART.finditer(culprit.text):
        if part.group(3) is None and not _labels(culprit, part.group(1)) + _values(
            culprit, part.group(1)
        ):
            problems.add(f"{path}.text", f"[{part.group(1)}]: an optional part names a label or "
                         "a value it depends on")  # fmt: skip
    for _kind, name, fmt in _fields(culprit.text):
        if fmt not in FORMATS:
            problems.add(f"{path}.text", f"{{{name}:{fmt}}}: formats are {list(FORMATS)[1:]}")
    return culprit if not problems.items else None


def _fields(text: str) -> list[tuple[str, str, str | None]]:
    return [("field", m.group(3), m.group(4)) for m in _PART.finditer(text) if m.group(3)]


def _labels(c: Culprit, part: str) -> list[str]:
    """The offender's labels an optional part names (it applies when none is empty)."""
    return [n for _k, n, _f in _fields(part) if n != "value" and n not in c.values]


def _values(c: Culprit, part: str) -> list[str]:
    """The further series an optional part names (it applies when all are present)."""
    return [n for _k, n, _f in _fields(part) if n in c.values]


# -- Go templates ---------------------------------------------------------------------------


def _go_quoted(ref: str, how: Quote) -> str:
    if how is Quote.LITERAL:
        return "'{{ reReplaceAll \"'\" \"''\" " + ref + " }}'"
    if how is Quote.IDENT:
        return '"{{ reReplaceAll "\\"" "\\"\\"" ' + ref + ' }}"'
    return "{{ " + ref + " }}"


def _query(expr: str, metric: str, labels: Sequence[str], on: str, match: Sequence[str]) -> str:
    """``printf "…" … | query`` of ``expr`` ({} marks the selector) for the alert's target:
    its instance, job and ``match`` labels, and ``labels`` of the offender ``on``."""
    mine = ("instance", "job", *match)
    matchers = ", ".join(f"{name}=%q" for name in (*mine, *labels))
    refs = " ".join([*(f"$labels.{n}" for n in mine), *(f"{on}.Labels.{n}" for n in labels)])
    return f'printf "{expr.format(f"{metric}{{{matchers}}}")}" {refs} | query'


def _go_value(c: Culprit, name: str) -> str:
    """The query of the offender's further series ``name`` (an empty result when absent)."""
    age, metric = _VALUE.fullmatch(c.values[name]).groups()  # type: ignore[union-attr]
    return _query((age or "") + "{}", metric, c.key, "$o", c.match)


def _go_field(c: Culprit, name: str, fmt: str | None) -> str:
    pipe = f" | {FORMATS[fmt]}" if FORMATS.get(fmt) else ""
    if name == "value":
        return "{{ $o.Value" + pipe + " }}"
    if name in c.values:
        return "{{ with " + _go_value(c, name) + " }}{{ . | first | value" + pipe + " }}{{ end }}"
    return "{{ $o.Labels." + name + " }}"


def _go_text(c: Culprit, text: str) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(3):
            return _go_field(c, match.group(3), match.group(4))
        then, otherwise = match.group(1), match.group(2) or ""
        tests = [f"$o.Labels.{n}" for n in _labels(c, then)]
        tests += [f"({_go_value(c, n)})" for n in _values(c, then)]
        test = tests[0] if len(tests) == 1 else "and " + " ".join(tests)
        body = "{{ if " + test + " }}" + _go_text(c, then)
        return body + ("{{ else }}" + _go_text(c, otherwise) if otherwise else "") + "{{ end }}"

    return _PART.sub(one, text)


def _ranked(c: Culprit, top: int) -> str:
    order, pick = RANKS[c.rank]
    return _query(f"{order}({pick}({top}, {{}}))", c.series, (), "", c.match)


def go_culprit(c: Culprit) -> str:
    each = _go_text(c, c.text)
    return (
        "{{ with " + _ranked(c, c.top) + " }}" + c.intro + "{{ range $i, $o := . }}{{ if $i }}"
        + c.separator
        + "{{ end }}" + each + "{{ end }}{{ else }}" + c.none + "{{ end }}" + AS_OF
    )  # fmt: skip


def _go_fix_text(text: str, on: str) -> str:
    return playbook.FIELD.sub(
        lambda m: _go_quoted(f"{on}.{m.group(1)}", Quote(m.group(2) or "")), text
    )


def go_fix(d: Diagnosis, c: Culprit | None) -> str:
    def chosen(on: str) -> str:
        out, ends = "", ""
        for fix in d.fixes:
            if fix.when is None:
                return out + _go_fix_text(fix.text, on) + ends
            out += "{{ if " + f"{on}.{fix.when}" + " }}" + _go_fix_text(fix.text, on) + "{{ else }}"
            ends += "{{ end }}"
        return out + ends

    if c is None or not c.fills_fix:
        return chosen("$labels")
    placeholder = playbook.fill(d.fixes[-1].text, {})
    return "{{ with " + _ranked(c, 1) + " }}{{ range $o := . }}" + chosen("$o.Labels") + (
        "{{ end }}{{ else }}" + placeholder + "{{ end }}")  # fmt: skip


def go_diagnose(d: Diagnosis, settings: Callable[[str], str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        return _go_quoted(f"$labels.{name}", Quote.LITERAL) if name in d.labels else settings(name)

    return re.sub(r"%\((\w+)\)s", one, d.sql.strip()).replace("%%", "%")


# -- the same words, rendered from series ----------------------------------------------------

Sample = tuple[str, Mapping[str, str], float]  # metric, labels, value at the evaluation time


def _timestamp(value: float) -> str:
    if not float(value).is_integer():
        raise ValueError(f"timestamp {value}: only whole seconds are rendered here")
    moment = datetime.datetime.fromtimestamp(value, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def _format(value: float, fmt: str | None) -> str:
    if fmt == "timestamp":
        return _timestamp(value)
    return FUNCTIONS[FORMATS[fmt]](value)


def _matching(samples: Sequence[Sample], metric: str, labels: Mapping[str, str]) -> list[Sample]:
    return [
        s for s in samples if s[0] == metric and all(s[1].get(k) == v for k, v in labels.items())
    ]


@dataclass(frozen=True)
class Scene:
    """What the example's Prometheus holds at its evaluation time, for one alert."""

    samples: Sequence[Sample]
    at: float
    labels: Mapping[str, str]  # the alert's
    rename: Callable[[str], str]  # pgrb_ → the config's namespace

    def ranked(self, c: Culprit, top: int) -> list[Sample]:
        target = {k: self.labels.get(k, "") for k in ("instance", "job", *c.match)}
        found = _matching(self.samples, self.rename(c.series), target)
        return sorted(found, key=lambda s: s[2], reverse=c.rank == "highest")[:top]

    def value(self, c: Culprit, name: str, offender: Sample) -> float | None:
        age, metric = _VALUE.fullmatch(c.values[name]).groups()  # type: ignore[union-attr]
        wanted = {k: self.labels.get(k, "") for k in ("instance", "job", *c.match)}
        wanted.update({k: offender[1].get(k, "") for k in c.key})
        found = _matching(self.samples, self.rename(metric), wanted)
        if not found:
            return None
        return self.at - found[0][2] if age else found[0][2]


def _say_text(c: Culprit, text: str, scene: Scene, o: Sample) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(3):
            name, fmt = match.group(3), match.group(4)
            if name == "value":
                return _format(o[2], fmt)
            if name in c.values:
                value = scene.value(c, name, o)
                return "" if value is None else _format(value, fmt)
            return o[1].get(name, "")
        then, otherwise = match.group(1), match.group(2) or ""
        applies = all(o[1].get(n) for n in _labels(c, then)) and all(
            scene.value(c, n, o) is not None for n in _values(c, then)
        )
        chosen = then if applies else otherwise
        return _say_text(c, chosen, scene, o)

    return _PART.sub(one, text)


def say_culprit(c: Culprit, scene: Scene) -> str:
    found = scene.ranked(c, c.top)
    words = c.separator.join(_say_text(c, c.text, scene, o) for o in found)
    words = c.intro + words if found else c.none
    return f"{words} (as of {_timestamp(scene.at)})"


def say_fix(d: Diagnosis, c: Culprit | None, scene: Scene) -> str:
    if c is None or not c.fills_fix:
        return d.fix_for(scene.labels)
    found = scene.ranked(c, 1)
    return d.fix_for(found[0][1]) if found else playbook.fill(d.fixes[-1].text, {})


def say_diagnose(d: Diagnosis, labels: Mapping[str, str], settings: Callable[[str], str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        return playbook.quote(labels.get(name, ""), Quote.LITERAL) if name in d.labels else (
            settings(name))  # fmt: skip

    return re.sub(r"%\((\w+)\)s", one, d.sql.strip()).replace("%%", "%")
