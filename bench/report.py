"""The benchmark's Markdown report and PNG chart, from the results of one run."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import pg_runbook_exporter
from bench.profile import RATE
from bench.reconnect import FIGURES

ORDER = ("pgrb", "qe", "pge", "fixed")
LABELS = {
    "pgrb": "pg-runbook-exporter",
    "qe": "query-exporter",
    "pge": "postgres_exporter",
    "fixed": "fixed bytes (ceiling)",
}
NA = "\u2013"  # en dash: "not measured"
TIMES = "\u00d7"
COMMAND = "python -m bench --mappings 1M,10M --extra-tables 5000"


METHOD = [
    "## Method",
    "",
    "One throwaway PostgreSQL (pg_stat_statements loaded) holds the portal schema"
    " (`pg_runbook_exporter/sql/portal-schema.sql`) seeded with the rows above. Each exporter"
    " connects as its own"
    " login role in `pg_monitor`, so pg_stat_statements tells their statements apart;"
    " query-exporter runs the checks of `queries.yaml` (one query per check, generated at run"
    " time). The ceiling is an asyncio server answering every request with a captured response"
    " of this exporter, byte for byte. Scrape figures are wrk medians over interleaved rounds"
    " (each round visits every exporter at every connection count, the order rotating), so"
    " drift on the shared machine hits all alike; wrk runs on the same 2 cores as the"
    " exporters. RSS and CPU come from /proc (the whole process tree); database load is the"
    " pg_stat_statements delta of each role over a window of paced scrapers.",
    "",
    "Per-check run times are taken in a quiet window of their own in each phase: before the"
    " other exporters start, and after the extra tables are created with the exporters that"
    " collect on a schedule stopped; no wrk, scrapers or seeding run meanwhile, and a CHECKPOINT"
    " comes first. For this measurement only, a second instance of this exporter runs a copy of"
    " `queries.yaml` whose every interval is lowered to the longest check timeout (the loader"
    " refuses a timeout above the interval), so each check runs once per cycle, in order."
    " After each cycle psql runs the same statements in one long-lived session, in the gap"
    " before the next cycle (a pass that ran into the next cycle is discarded), so the two"
    " sides alternate and drift hits both. Each side's figure is the median of its runs; the"
    " whole cycle is the sum of the per-check medians.",
]


def _version(argv: list[str], pattern: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "not installed"
    match = re.search(pattern, proc.stdout + proc.stderr)
    return match.group(1) if match else "unknown"


def environment(major: int) -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu}, {os.cpu_count()} cores, {mem_kb / 2**20:.0f} GiB, "
        f"Linux {platform.release()}",
        "python": platform.python_version(),
        "pg-runbook-exporter": pg_runbook_exporter.__version__,
        "postgres_exporter": _version(
            ["prometheus-postgres-exporter", "--version"], r"version (\S+)"
        ),
        "query-exporter": _version(["query-exporter", "--version"], r"(\d+\.\d+\.\d+)"),
        "wrk": _version(["wrk", "-v"], r"wrk (\S+)"),
        "postgresql_major": str(major),
    }


def _n(x: float | None, digits: int = 0) -> str:
    if x is None:
        return NA
    return f"{x:,.{digits}f}"


def _ms(x: float | None) -> str:
    if x is None:
        return NA
    return f"{x:.2f}" if x < 10 else f"{x:,.0f}"


def _names(section: dict[str, Any]) -> list[str]:
    return [n for n in ORDER if n in section]


def _serving_table(tp: dict[str, Any], described: dict[str, Any], conns: list[str]) -> list[str]:
    head = (
        "| exporter | series | bytes sent | "
        + " | ".join(f"{c} conn: scrapes/s · p50 · p99 ms" for c in conns)
        + " |"
    )
    lines = [head, "|---|---:|---:|" + "---:|" * len(conns)]
    for name in _names(tp):
        d = described.get(name, {})
        cells = []
        for c in conns:
            r = tp[name].get(c)
            cells.append(
                NA
                if r is None
                else f"{_n(r['per_second'])} · {_ms(r['p50_ms'])} · {_ms(r['p99_ms'])}"
                + (f" ({r['errors']} errors)" if r["errors"] else "")
            )
        lines.append(
            f"| {LABELS[name]} | {_n(d.get('series'))} | {_n(d.get('bytes_sent'))} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def _ratio(tp: dict[str, Any], a: str, b: str, c: str) -> float | None:
    try:
        return float(tp[a][c]["per_second"]) / float(tp[b][c]["per_second"])
    except (KeyError, ZeroDivisionError):
        return None


# CPU s/min at 2 scrapers of the 2026-11-24 report, when every check run re-rendered the whole
# exposition; rendering per check aims at a third of it.
CPU_BEFORE = 0.46
RSS_BEFORE = 48.0


def _resource_rows(res: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """The exporter's own CPU and memory against their targets."""
    rows: list[tuple[str, str, bool | None]] = []
    load_2 = res.get("load", {}).get("2", {}).get("pgrb", {})
    cpu = load_2.get("cpu_s_per_min")
    rows.append(
        (
            f"CPU s/min at 2 scrapers ≤ {CPU_BEFORE / 3:.2f} (a third of {CPU_BEFORE:.2f})",
            _n(cpu, 2),
            None if cpu is None else cpu <= CPU_BEFORE / 3,
        )
    )
    renders, runs = load_2.get("renders_per_min"), load_2.get("check_runs_per_min")
    rows.append(
        (
            "check renders/min ≤ check runs/min",
            f"{_n(renders, 1)} vs {_n(runs, 1)}",
            None if renders is None or runs is None else renders <= runs,
        )
    )
    rss = res.get("rss_after_load_mb", {}).get("pgrb")
    rows.append(
        (
            f"RSS ≤ {RSS_BEFORE:g} MB (the 2026-11-24 figure, with 25 checks)",
            f"{_n(rss, 1)} MB",
            None if rss is None else rss <= RSS_BEFORE,
        )
    )
    for name, what, _ in FIGURES:
        figures = res.get("reconnect", {}).get(name)
        worst = None if not figures or None in figures else max(figures)
        rows.append(
            (
                f"{what} ≤ {RECONNECT_LIMIT:g} s (worst of {len(figures or [])})",
                NA if worst is None else f"{worst:.2f} s",
                None if figures is None else worst is not None and worst <= RECONNECT_LIMIT,
            )
        )
    return rows


RECONNECT_LIMIT = 5.0  # seconds, for each of bench/reconnect.py's figures (checks every 60 s)


def _reconnect_lines(found: dict[str, list[float | None]]) -> list[str]:
    lines = [
        "`bench/reconnect.py` on a throwaway server of its own, every database check due each"
        " 60 s (each figure would be up to a minute at the checks' intervals; a hung path's"
        " checks run every second):",
        "",
        "| event | seconds |",
        "|---|---:|",
    ]
    for name, what, _ in FIGURES:
        if name in found:
            shown = ", ".join(NA if f is None else f"{f:.2f}" for f in found[name])
            lines.append(f"| {what} | {shown} |")
    return lines


def _profile_lines(res: dict[str, Any]) -> list[str]:
    prof = res.get("profile")
    if not prof:
        return ["No CPU profile (py-spy not installed)."]
    total = prof["samples"] or 1
    shares = sorted(prof["by_kind"].items(), key=lambda kv: -kv[1])
    return [
        f"py-spy sampled this exporter {RATE:,} times a second for {prof['seconds']:.0f} s while"
        f" {prof['scrapers']} scrapers scraped it every {prof['interval']:g} s"
        f" ({prof['cpu_s_per_min']:.2f} CPU s/min in that window; {prof['samples']:,} busy"
        " samples, waits left out):",
        "",
        "| where | share of busy samples |",
        "|---|---:|",
        *(f"| {kind} | {100 * n / total:.0f} % |" for kind, n in shares),
    ]


def _targets(res: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met?) — met is None when the run could not measure it."""
    tp = res.get("throughput", {})
    rows: list[tuple[str, str, bool | None]] = []
    for c in ("8", "64"):
        for other, want, what in (
            ("qe", 20.0, "query-exporter"),
            ("pge", 100.0, "postgres_exporter"),
            ("fixed", 0.80, "the ceiling"),
        ):
            r = _ratio(tp, "pgrb", other, c)
            shown = f"≥ {want:g}{TIMES}" if want >= 1 else f"≥ {want:.0%}"
            rows.append(
                (
                    f"{c} clients: scrapes/s {shown} {what}",
                    NA if r is None else (f"{r:,.1f}{TIMES}" if want >= 1 else f"{r:.0%}"),
                    None if r is None else r >= want,
                )
            )
    p99 = tp.get("pgrb", {}).get("8", {}).get("p99_ms")
    rows.append(("p99 ≤ 5 ms at 8 clients", _ms(p99) + " ms", None if p99 is None else p99 <= 5))
    load = res.get("load", {})
    lo, hi = min(load, key=int, default=None), max(load, key=int, default=None)
    try:
        s_lo = load[lo]["pgrb"]["statements_per_min"]
        s_hi = load[hi]["pgrb"]["statements_per_min"]
        same = abs(s_hi - s_lo) <= 0.1 * max(s_lo, 1)
        rows.append(
            (f"statements/min with {lo} and {hi} scrapers equal", f"{s_lo:.0f} vs {s_hi:.0f}", same)
        )
    except (KeyError, TypeError):
        rows.append(("statements/min independent of scrapers", NA, None))
    ov = res.get("overhead", {})
    if ov:
        ratio = ov["exporter_cycle_s"] / ov["psql_cycle_s"]
        rows.append(
            (
                f"collection cycle ≤ 1.10 {TIMES} raw SQL (psql)",
                f"{ratio:.2f}{TIMES}",
                ratio <= 1.10,
            )
        )
    rows += _resource_rows(res)
    ext = res.get("extra_tables")
    if ext:
        n = ext["count"]
        series = ext["targets"].get("pgrb", {}).get("series")
        rows.append(
            (f"{n} tables: series ≤ 2,000", _n(series), None if series is None else series <= 2000)
        )
        cyc = ext.get("overhead", {}).get("exporter_cycle_s")
        rows.append(
            (
                f"{n} tables: collection cycle ≤ 2 s",
                f"{_n(cyc, 2)} s",
                None if cyc is None else cyc <= 2,
            )
        )
        for c in ("8", "64"):
            try:
                r = ext["throughput"]["pgrb"][c]["per_second"] / tp["pgrb"][c]["per_second"]
                rows.append(
                    (f"{n} tables: {c}-client scrapes/s unchanged (≥ 80 %)", f"{r:.0%}", r >= 0.8)
                )
            except (KeyError, ZeroDivisionError):
                pass
    want = res["seed"]["faults"]
    for name in ("pgrb", "qe"):
        got = res.get("targets", {}).get(name, {}).get("faults")
        if got is not None:
            shown = " / ".join(_n(got.get(k)) for k in want)
            ok = all(got.get(k) == v for k, v in want.items())
            rows.append(
                (
                    f"{LABELS[name]} reports the seeded faults ("
                    + " / ".join(str(v) for v in want.values())
                    + ")",
                    shown,
                    ok,
                )
            )
    integ = res.get("integrity", {})
    if integ:
        top = max(integ, key=int)
        mine = [s for s in integ[top] if s["name"].startswith("queries.yaml")]
        if mine:
            slow = max(mine, key=lambda s: float("inf") if s["seconds"] is None else s["seconds"])
            secs = slow["seconds"]
            rows.append(
                (
                    f"integrity checks at {int(top):,} mappings ≤ 5 s per run (slowest:"
                    f" {slow['name'].removeprefix('queries.yaml ')})",
                    f"{_n(secs, 2)} s",
                    None if secs is None else secs <= 5,
                )
            )
    return rows


def _load_table(res: dict[str, Any]) -> list[str]:
    load = res.get("load", {})
    if not load:
        return []
    headline = "2" if "2" in load else max(load, key=int)
    first = load[headline]
    some = next(iter(first.values()))
    lines = [
        f"Each exporter scraped by {headline} scrapers every {some['interval']:g} s for "
        f"{some['window']:.0f} s (all exporters at once; statements told apart by role):",
        "",
        "| exporter | RSS MB | CPU s/min | check runs/min | renders/min | statements/min | "
        "database ms/min | "
        + " | ".join(f"statements/min, {n} scrapers" for n in sorted(load, key=int))
        + " |",
        "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(load),
    ]
    rss_after = res.get("rss_after_load_mb", {})
    for name in _names(first):
        x = first[name]
        per_n = " | ".join(
            _n(load[n].get(name, {}).get("statements_per_min")) for n in sorted(load, key=int)
        )
        rss = max(x["rss_mb"], rss_after.get(name, 0.0))
        lines.append(
            f"| {LABELS[name]} | {rss:.1f} | {x['cpu_s_per_min']:.2f} | "
            f"{_n(x.get('check_runs_per_min'), 1)} | {_n(x.get('renders_per_min'), 1)} | "
            f"{_n(x['statements_per_min'])} | {_n(x['db_ms_per_min'], 1)} | {per_n} |"
        )
    lines.append("")
    lines.append(
        "RSS is the larger of the value after the load window and after the wrk runs. Check runs"
        " and renders are this exporter's own counters (`pgrb_check_runs_total`,"
        " `pgrb_check_renders_total`) over the window: a check is rendered when a run changed it."
    )
    return lines


def _overhead_table(ov: dict[str, Any]) -> list[str]:
    if not ov:
        return ["This exporter did not run: no collection-cycle figures."]
    lines = [
        "Median run time of each check inside the exporter over `runs` runs (intervals lowered to"
        f" {ov.get('interval_s', 0):g} s for the measurement) against the same SQL through psql"
        f" in one session (`\\timing`, median of {ov.get('psql_passes', 0)} passes, one after"
        f" each cycle; {ov.get('discarded_psql_passes', 0)} discarded for overlap):",
        "",
        "| check | runs | exporter s | psql s | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, x in sorted(ov["per_check"].items(), key=lambda kv: -kv[1]["psql_s"]):
        r = x["exporter_s"] / x["psql_s"] if x["psql_s"] else 0
        lines.append(
            f"| {name} | {x.get('runs', 1)} | {x['exporter_s']:.4f} | {x['psql_s']:.4f} | {r:.2f} |"
        )
    total = ov["exporter_cycle_s"] / ov["psql_cycle_s"]
    lines.append(
        f"| **whole cycle** | | **{ov['exporter_cycle_s']:.4f}** | "
        f"**{ov['psql_cycle_s']:.4f}** | **{total:.2f}** |"
    )
    return lines


def _integrity_table(integ: dict[str, Any]) -> list[str]:
    scales = sorted(integ, key=int)
    lines = [
        "| statement | "
        + " | ".join(f"{int(s):,} mappings: s (est. cost)" for s in scales)
        + " | result |",
        "|---|" + "---:|" * len(scales) + "---:|",
    ]
    for i, shape in enumerate(integ[scales[0]]):
        cells = []
        for s in scales:
            x = integ[s][i]
            t = "timeout" if x["seconds"] is None else f"{x['seconds']:.3f}"
            cells.append(f"{t} ({x['estimated_cost']:.3g})")
        result = integ[scales[-1]][i]["result"]
        lines.append(f"| {shape['name']} | " + " | ".join(cells) + f" | {_n(result)} |")
    return lines


def markdown(res: dict[str, Any]) -> str:
    env, opts, seed = res.get("environment", {}), res["options"], res["seed"]
    conns = [str(c) for c in opts["connections"]]
    out = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench`; do not edit by hand. Full figures: `results.json`; the",
        "query-exporter config (generated from `queries.yaml`): `query-exporter.yaml`.",
        "",
        f"- date: {env.get('date')}; machine: {env.get('machine')}",
        f"- PostgreSQL {res.get('server_version')}; pg-runbook-exporter "
        f"{env.get('pg-runbook-exporter')}; postgres_exporter {env.get('postgres_exporter')}; "
        f"query-exporter {env.get('query-exporter')}; wrk {env.get('wrk')}; "
        f"Python {env.get('python')}",
        f"- data: {seed['users']:,} users, {seed['mappings']:,} id_mappings "
        f"(+ faults: {seed['faults']['orphaned_mappings']} orphaned, "
        f"{seed['faults']['duplicate_whmcs_groups']} duplicated WHMCS ids, "
        f"{seed['faults']['duplicate_sf_groups']} duplicated Salesforce ids)",
        f"- wrk: {opts['duration']:g} s per run, {opts['rounds']} interleaved rounds (medians), "
        "Prometheus' `Accept` and `Accept-Encoding: gzip` headers, keep-alive",
        f"- wall time of the run: {res.get('wall_seconds', 0) / 60:.1f} min",
    ]
    if opts.get("quick"):
        out.append("- **--quick run: small scale, short runs; not figures to compare or quote**")
    if res.get("failed_to_start"):
        out.append(f"- did not start (left out): {', '.join(res['failed_to_start'])}")
    out += ["", *METHOD]
    out += ["", "## Targets", "", "| target | measured | met |", "|---|---:|:-:|"]
    for what, got, met in _targets(res):
        out.append(f"| {what} | {got} | {NA if met is None else ('yes' if met else '**no**')} |")
    out += [
        "",
        "## Scrape serving",
        "",
        *_serving_table(res.get("throughput", {}), res.get("targets", {}), conns),
    ]
    out += ["", "![scrapes per second and p99 latency](scrapes.png)", ""]
    out += ["## Resources and database load", "", *_load_table(res), ""]
    out += ["### Where this exporter's CPU goes", "", *_profile_lines(res), ""]
    if res.get("reconnect"):
        out += ["### Reconnecting", "", *_reconnect_lines(res["reconnect"]), ""]
    out += ["## Collection overhead", "", *_overhead_table(res.get("overhead", {})), ""]
    ext = res.get("extra_tables")
    if ext:
        out += [
            f"## With {ext['count']:,} extra tables",
            "",
            *_serving_table(
                ext["throughput"],
                ext["targets"],
                [c for c in conns if c in next(iter(ext["throughput"].values()))],
            ),
            "",
            *_overhead_table(ext.get("overhead", {})),
            "",
        ]
    if res.get("integrity"):
        out += [
            "## id_mappings integrity checks",
            "",
            f"Run directly as the superuser; shapes that hit the {opts['integrity_timeout']:g}"
            " s statement_timeout show `timeout`.",
            "",
            *_integrity_table(res["integrity"]),
            "",
        ]
    if res.get("checks", {}).get("skipped"):
        out += ["Checks skipped on this server: " + "; ".join(res["checks"]["skipped"]), ""]
    out += [
        "## Reproduce",
        "",
        "```",
        "apt-get install wrk prometheus-postgres-exporter",
        "pip install -e '.[bench]'   # or: pip install query-exporter matplotlib py-spy",
        COMMAND,
        "```",
        "",
        "From the repository root, on an otherwise idle machine: about 20 minutes on 2 cores"
        " (`--quick` tries the whole pipeline at small scale in about 3 minutes).",
        "",
    ]
    return "\n".join(out)
