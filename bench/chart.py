"""The benchmark's PNG chart: scrapes per second and p99 latency by exporter and connections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import LABELS, ORDER


def chart(res: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - optional dependency, only for the chart

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    tp = res.get("throughput", {})
    names = [n for n in ORDER if n in tp]
    conns = [str(c) for c in res["options"]["connections"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(conns))]
        axes[0].bar(
            xs, [tp[name].get(c, {}).get("per_second", 0) for c in conns], width, label=LABELS[name]
        )
        axes[1].bar(
            xs, [tp[name].get(c, {}).get("p99_ms", 0) for c in conns], width, label=LABELS[name]
        )
    for ax, title in ((axes[0], "scrapes per second (log)"), (axes[1], "p99 latency, ms (log)")):
        ax.set_yscale("log")
        ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(conns))])
        ax.set_xticklabels([f"{c} connections" for c in conns])
        ax.set_title(title)
        ax.grid(axis="y", which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(names), fontsize=9, frameon=False)
    env = res.get("environment", {})
    fig.suptitle(
        f"PostgreSQL {res.get('server_version')} · {env.get('date')} · wrk, keep-alive,"
        " Prometheus headers",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
