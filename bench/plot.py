# `--plot DIR`: PNG charts of a run's summary with matplotlib (the optional `plot` extra): throughput per workload
# (records/s, median with a min-max bar, one bar per target and durability) and the latency percentiles of the
# e2e, produce and send_await runs. Must not know how anything was measured; imports matplotlib only when asked to
# draw.
from __future__ import annotations

from pathlib import Path
from typing import Any

from millpond.bench import report

PERCENTILES = (("p50", "p50_ms"), ("p99", "p99_ms"), ("p99.9", "p999_ms"), ("max", "max_ms"))


def write(summary: list[dict[str, Any]], directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    out = []
    throughput = [g for g in summary if g["workload"] in ("produce", "consume") and g["records_per_s"]["median"]]
    if throughput:
        out.append(_throughput(plt, throughput, directory / "throughput.png"))
    for workload in ("e2e", "produce", "send_await"):
        rows = [g for g in summary if g["workload"] == workload and g["p50_ms"]["median"] is not None]
        if rows:
            out.append(_latency(plt, rows, workload, directory / f"latency-{workload}.png"))
    return out


def _series(g: dict[str, Any]) -> str:
    return f"{g['target']} ({g['fsync'] if report.is_peer(g) else 'fsync=' + g['fsync']})"


def _throughput(plt: Any, rows: list[dict[str, Any]], path: Path) -> Path:
    groups = list(dict.fromkeys(f"{g['workload']} {g['record']}" for g in rows))
    series = list(dict.fromkeys(_series(g) for g in rows))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups) + 0.4 * len(series)), 4.5))
    for k, name in enumerate(series):
        xs, ys, lo, hi = [], [], [], []
        for i, grp in enumerate(groups):
            g = next((g for g in rows if _series(g) == name and f"{g['workload']} {g['record']}" == grp), None)
            if g:
                s = g["records_per_s"]
                xs.append(i + (k - (len(series) - 1) / 2) * width)
                ys.append(s["median"])
                lo.append(s["median"] - s["min"])
                hi.append(s["max"] - s["median"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=name)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("records/s (median, min-max)")
    ax.set_title("Throughput")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _latency(plt: Any, rows: list[dict[str, Any]], workload: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for g in rows:
        ys = [g[name]["median"] for _, name in PERCENTILES]
        ax.plot([p for p, _ in PERCENTILES], ys, marker="o", label=f"{_series(g)} {g['record']}")
    ax.set_yscale("log")
    ax.set_ylabel("latency, ms (median over repeats)")
    kind = {"e2e": "end-to-end, open loop", "send_await": "awaited single-record send"}.get(
        workload, "produce ack, sampled")
    rate = next((g.get("rate_per_s") for g in rows if g.get("rate_per_s")), None)
    ax.set_title(f"Latency percentiles ({kind}{f' at {rate:,}/s' if rate else ''})")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
