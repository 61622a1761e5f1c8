"""One benchmark run, phase by phase; every figure lands in a `Results` dict for the report."""

from __future__ import annotations

import logging
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import checks, dbload, loadgen, overhead, profile, reconnect, seed, targets, timing
from bench.pgserver import Database, start

logger = logging.getLogger(__name__)

QE_CONFIG_NAME = "query-exporter.yaml"


@dataclass(frozen=True)
class Options:
    major: int
    users: int
    mappings: tuple[int, ...]
    extra_tables: int
    connections: tuple[int, ...]
    duration: float
    rounds: int
    load_window: float
    load_scrapers: tuple[int, ...]
    scrape_interval: float
    integrity_timeout: float
    only: tuple[str, ...]  # targets to run: pgrb, pge, qe (fixed always runs)
    timing_runs: int = 5  # runs of every check behind each per-check median
    quick: bool = False
    profile_window: float = 60.0  # seconds of py-spy sampling of this exporter


def _specs(db: Database, opts: Options, qe_config: Path) -> list[targets.Spec]:
    specs = []
    if "pgrb" in opts.only:
        specs.append(
            targets.this_exporter(
                dsn=db.role_dsn("bench_pgrb"), queries=checks.QUERIES, port=targets.new_port()
            )
        )
    if "pge" in opts.only:
        specs.append(
            targets.postgres_exporter(dsn=db.role_dsn("bench_pge"), port=targets.new_port())
        )
    if "qe" in opts.only:
        specs.append(targets.query_exporter(config=qe_config, port=targets.new_port()))
    return specs


def _start_all(
    specs: list[targets.Spec], *, logdir: Path, env: dict[str, str]
) -> dict[str, targets.Running]:
    """Start every exporter; one that fails is reported and left out, not fatal to the run."""
    up: dict[str, targets.Running] = {}
    for given in specs:
        spec = targets.Spec(given.name, given.label, given.argv, {**env, **given.env}, given.port)
        run = targets.start(spec, logdir=logdir)
        try:
            n = targets.wait_collected(run, timeout=120)
            logger.info("%s up on :%d with %d series", spec.label, spec.port, n)
            up[spec.name] = run
        except (RuntimeError, TimeoutError) as exc:
            logger.error("%s left out: %s", spec.label, exc)
            targets.stop(run)
    return up


def _exposition(run: targets.Running) -> loadgen.Response:
    return loadgen.fetch("127.0.0.1", run.port, headers=loadgen.PROMETHEUS_HEADERS)


def _fixed_spec(reference: targets.Running, *, workdir: Path) -> targets.Spec:
    """The ceiling serves the reference exporter's own response, byte for byte."""
    resp = _exposition(reference)
    body = workdir / "fixed-body"
    body.write_bytes(resp.body)
    return targets.fixed_bytes(
        body=body,
        content_type=resp.headers.get("content-type", "text/plain"),
        encoding=resp.headers.get("content-encoding"),
        port=targets.new_port(),
    )


def _describe(up: dict[str, targets.Running]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, run in up.items():
        resp = _exposition(run)
        out[name] = {
            "label": run.spec.label,
            "series": loadgen.series_count(resp.text()),
            "bytes_sent": len(resp.body),
            "content_type": resp.headers.get("content-type", ""),
            "content_encoding": resp.headers.get("content-encoding", ""),
            "rss_mb": targets.rss_bytes(run.proc.pid) / 2**20,
            "faults": overhead.reported_faults(resp.text()),
        }
    return out


def _throughput(
    up: dict[str, targets.Running], *, connections: tuple[int, ...], rounds: int, duration: float
) -> dict[str, dict[str, dict[str, float]]]:
    """wrk against every target, interleaved: each round visits every (connections, target)
    pair, the target order rotating, so machine drift is spread over all of them."""
    raw: dict[tuple[str, int], list[loadgen.WrkResult]] = {}
    names = list(up)
    for r in range(rounds):
        for c in connections:
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                res = loadgen.wrk(up[name].url, connections=c, seconds=duration)
                raw.setdefault((name, c), []).append(res)
                logger.info(
                    "round %d c=%d %s: %.0f/s p50 %.2f ms p99 %.2f ms",
                    r + 1,
                    c,
                    name,
                    res.per_second,
                    res.p50_ms,
                    res.p99_ms,
                )
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (name, c), results in raw.items():
        out.setdefault(name, {})[str(c)] = {
            "per_second": statistics.median(x.per_second for x in results),
            "p50_ms": statistics.median(x.p50_ms for x in results),
            "p99_ms": statistics.median(x.p99_ms for x in results),
            "errors": sum(x.errors + x.non_2xx for x in results),
            "requests": sum(x.requests for x in results),
        }
    return out


def _timing(
    db: Database, resolved: checks.Resolved, opts: Options, *, workdir: Path, name: str
) -> dict[str, Any]:
    """Per-check run times of this exporter and of psql, measured alone (see bench.timing)."""
    if "pgrb" not in opts.only:
        return {}
    window = timing.measure(
        role_dsn=db.role_dsn("bench_pgrb"),
        superuser_dsn=db.dsn,
        resolved=resolved,
        queries=checks.QUERIES,
        workdir=workdir,
        runs=opts.timing_runs,
        name=name,
    )
    return timing.summary(window)


def run(opts: Options) -> dict[str, Any]:
    results: dict[str, Any] = {"options": asdict(opts)}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, start(major=opts.major) as db:
        work = Path(tmp)
        results["server_version"] = db.server.execute("SHOW server_version")[0][0]
        seed.load_schema(db.dsn)
        seeded = seed.seed(db.dsn, users=opts.users, mappings=opts.mappings[0])
        results["seed"] = asdict(seeded)
        dbload.create_roles(db)
        resolved = checks.resolve(db.role_dsn("bench_pgrb"))
        results["checks"] = {
            "run": [c.name for c in resolved.checks],
            "skipped": list(resolved.skipped),
        }
        integrity = tuple(c for c in resolved.checks if "id_mappings" in c.sql)
        shapes = overhead.integrity_shapes(
            db.dsn, checks=integrity, timeout_s=opts.integrity_timeout
        )
        results["integrity"] = {str(opts.mappings[0]): [asdict(s) for s in shapes]}
        # Before any other exporter starts: nothing else runs while the checks are timed.
        results["overhead"] = _timing(db, resolved, opts, workdir=work, name="pgrb-timing")

        qe_config = work / QE_CONFIG_NAME
        checks.write_query_exporter_config(
            checks.query_exporter_config(resolved, dsn=db.dsn, env_dsn="BENCH_QE_DSN"), qe_config
        )
        results["query_exporter_config"] = qe_config.read_text()
        env = {
            "BENCH_QE_DSN": db.role_dsn("bench_qe").replace(
                "postgresql://", "postgresql+psycopg://", 1
            )
        }
        db.server.execute("SELECT pg_stat_statements_reset()", dbname="portal")

        up = _start_all(_specs(db, opts, qe_config), logdir=work, env=env)
        results["failed_to_start"] = [n for n in opts.only if n not in up]
        try:
            reference = up.get("pgrb") or up.get("qe")
            if reference is not None:
                fixed = _start_all([_fixed_spec(reference, workdir=work)], logdir=work, env={})
                up.update(fixed)
            results["targets"] = _describe(up)
            results["load"] = {}
            for n in opts.load_scrapers:
                loads = dbload.measure(
                    db.dsn, up, scrapers=n, interval=opts.scrape_interval, window=opts.load_window
                )
                results["load"][str(n)] = {k: asdict(v) for k, v in loads.items()}
            if "pgrb" in up:
                # After the load windows, so the sampler's own work never lands in their figures.
                found = profile.measure(
                    up["pgrb"],
                    scrapers=2,
                    interval=opts.scrape_interval,
                    window=opts.profile_window,
                    workdir=work,
                )
                results["profile"] = asdict(found) if found else None
            results["throughput"] = _throughput(
                up, connections=opts.connections, rounds=opts.rounds, duration=opts.duration
            )
            results["rss_after_load_mb"] = {
                n: targets.rss_bytes(r.proc.pid) / 2**20 for n, r in up.items()
            }
            if opts.extra_tables:
                results["extra_tables"] = _extra_tables(db, up, resolved, opts, logdir=work)
        finally:
            for r in up.values():
                targets.stop(r)
            results["logs"] = {
                n: r.log.read_text(errors="replace")[-3000:]
                for n, r in up.items()
                if r.proc.returncode not in (0, -15)
            }

        have = opts.mappings[0]
        for want in opts.mappings[1:]:
            secs = seed.add_mappings(db.dsn, have=have, want=want, users=seeded.users)
            logger.info("grew id_mappings to %d in %.0fs", want, secs)
            have = want
            results["integrity"][str(want)] = [
                asdict(s)
                for s in overhead.integrity_shapes(
                    db.dsn, checks=integrity, timeout_s=opts.integrity_timeout
                )
            ]
    if "pgrb" in opts.only:
        # Last and on a server of its own: it stops and restarts PostgreSQL.
        results["reconnect"] = reconnect.measure(major=opts.major, repeat=1 if opts.quick else 3)
    return results


def _extra_tables(
    db: Database,
    up: dict[str, targets.Running],
    resolved: checks.Resolved,
    opts: Options,
    *,
    logdir: Path,
) -> dict[str, Any]:
    secs = seed.add_tables(db.dsn, count=opts.extra_tables)
    logger.info("created %d extra tables in %.0fs", opts.extra_tables, secs)
    # The exporters that collect on a schedule are stopped while the checks are timed (the
    # others only query when scraped), then started afresh: their first cycle covers every
    # check, including the ones that run every few minutes.
    scheduled = [n for n in ("pgrb", "qe") if n in up]
    for name in scheduled:
        targets.stop(up[name])
    overhead = _timing(db, resolved, opts, workdir=logdir, name="pgrb-timing-tables")
    for name in scheduled:
        up[name] = targets.start(up[name].spec, logdir=logdir)
    for name in scheduled:
        targets.wait_collected(up[name], timeout=180)
    live = {n: r for n, r in up.items() if n != "fixed"}
    conns = tuple(c for c in opts.connections if c >= 8) or opts.connections
    return {
        "count": opts.extra_tables,
        "seconds_to_create": secs,
        "targets": _describe(live),
        "throughput": _throughput(
            live, connections=conns, rounds=opts.rounds, duration=opts.duration
        ),
        "overhead": overhead,
    }
