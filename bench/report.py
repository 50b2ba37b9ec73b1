# Turning results into the terminal table and the JSON document: median and min-max over repeats, the machine
# and fsync mode above the table, reference figures from peers.md labelled as such, the goals checked. Must not
# know how anything was measured.
from __future__ import annotations

from typing import Any

from bench import machine, reference, stats

# Figures summarised over repeats; every name carries its unit.
FIGURES = ("records_per_s", "mb_per_s", "p50_ms", "p99_ms", "p999_ms", "max_ms", "wall_s", "records",
           "server_cpu_us_per_record", "client_cpu_s_per_wall_s", "sender_lag_max_ms")
FSYNC_MEANING = {
    "always": "a produce is acknowledged after the fsync that covers it (durable default)",
    "interval": "fsync on a timer; acknowledged after the write",
    "never": "no fsync; acknowledged after the write to the page cache",
    "external": "whatever the external broker was started with",
}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group per-repeat rows by (target, step) in first-seen order; each figure becomes {median, min, max}."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["target"], row["step"])
        g = groups.get(key)
        if g is None:
            g = groups[key] = {k: v for k, v in row.items() if k != "figures"}
            g["repeats"] = []
        g["repeats"].append(row["figures"])
    out = []
    for g in groups.values():
        for name in FIGURES:
            g[name] = stats.summarize([r.get(name) for r in g["repeats"]])
        g["latency_kind"] = g["repeats"][0].get("latency_kind")
        out.append(g)
    return out


def document(profile: str, mach: dict[str, Any], summary: list[dict[str, Any]], repeat: int) -> dict[str, Any]:
    """The ``--json`` output."""
    return {
        "profile": profile,
        "repeat": repeat,
        "machine": mach,
        "results": summary,
        "reference": {
            "source": reference.SOURCE,
            "measured_in_this_run": False,
            "figures": [{"peer": p, "workload": w, "record_bytes": s, **f}
                        for (p, w, s), f in reference.FIGURES.items()],
        },
        "goals": goals(summary),
    }


def table(profile: str, mach: dict[str, Any], summary: list[dict[str, Any]], repeat: int) -> str:
    modes = sorted({g["fsync"] for g in summary})
    lines = [f"millpond bench {profile}: {repeat} repeat(s){', median (min-max)' if repeat > 1 else ''}",
             f"machine: {machine.one_line(mach)}"]
    for m in modes:
        lines.append(f"fsync={m}: {FSYNC_MEANING.get(m, m)}")
    lines.append("")
    head = ["workload", "record", "fsync", "records/s", "MB/s", "p50 ms", "p99 ms", "max ms"]
    body = []
    for g in summary:
        size = g["record"]
        body.append([g["workload"] + (f" @{g['rate_per_s']:,}/s" if g["workload"] == "e2e" else ""), size, g["fsync"],
                     _cell(g["records_per_s"], "{:,.0f}"), _cell(g["mb_per_s"], "{:,.1f}"),
                     _cell(g["p50_ms"], "{:.2f}"), _cell(g["p99_ms"], "{:.2f}"), _cell(g["max_ms"], "{:.2f}")])
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    lines.append(fmt(head))
    lines.append("  ".join("-" * w for w in widths))
    lines += [fmt(r) for r in body]
    lines.append("")
    lines.append("latency: produce = send() to ack seen by the producer (sampled, 1 in 64); "
                 "e2e = send() to receipt in a consumer process (HDR, every record); consume has none.")
    lines.append("records/s: produce from first send to last ack; consume from the first fetch to the last record; "
                 "e2e = the rate achieved by the open-loop sender.")
    extra = _extra_lines(summary)
    if extra:
        lines += [""] + extra
    lines += ["", f"Reference figures, NOT measured in this run ({reference.SOURCE}):"]
    for (peer, w, s), f in reference.FIGURES.items():
        ours = next((g for g in summary if g["workload"] == w and g.get("record_bytes") == s
                     and g["fsync"] == "always" and not g.get("payload_file")), None)
        for name, value in f.items():
            ratio = ""
            if ours and ours[name]["median"] is not None and name == "records_per_s":
                ratio = f"   millpond/peer = {ours[name]['median'] / value:.1f}x"
            unit = "rec/s" if name == "records_per_s" else "ms " + name.split("_")[0]
            lines.append(f"  vs {peer} {w} {s:,} B: {value:,.2f} {unit}{ratio}".replace(".00 rec/s", " rec/s"))
    checked = goals(summary)
    if checked:
        lines += ["", "goals (issues 2 and 5):"]
        for goal in checked:
            lines.append(f"  [{'met' if goal['met'] else 'MISSED'}] {goal['goal']}: {goal['figure']} = "
                         f"{goal['value']:,.2f} (needs {goal['op']} {goal['threshold']:,})")
    return "\n".join(lines)


def goals(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for workload, size, mode, name, op, threshold, text in reference.GOALS:
        for g in summary:
            if (g["workload"] == workload and g["fsync"] == mode and (size is None or g.get("record_bytes") == size)
                    and not g.get("payload_file") and g[name]["median"] is not None):
                v = g[name]["median"]
                met = v >= threshold if op == ">=" else v < threshold
                out.append({"goal": text, "step": g["step"], "figure": name, "value": v, "op": op,
                            "threshold": threshold, "met": met})
    return out


def _extra_lines(summary: list[dict[str, Any]]) -> list[str]:
    lines = []
    for g in summary:
        parts = []
        cpu = g["server_cpu_us_per_record"]["median"]
        if cpu is not None:
            parts.append(f"broker CPU {cpu:.2f} µs/record")
        ccpu = g["client_cpu_s_per_wall_s"]["median"]
        if ccpu is not None:
            parts.append(f"client CPU {ccpu:.2f} s per wall s")
        if g["workload"] == "e2e":
            parts.append(f"p99.9 {g['p999_ms']['median']:.2f} ms")
            parts.append(f"sender lag max {g['sender_lag_max_ms']['median']:.2f} ms")
        parts.append(f"{g['records']['median']:,.0f} records in {g['wall_s']['median']:.2f} s")
        lines.append(f"  {g['step']}: " + ", ".join(parts))
    return lines


def _cell(s: dict[str, float | None], fmt: str) -> str:
    if s["median"] is None:
        return "-"
    if s["min"] == s["max"]:
        return fmt.format(s["median"])
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})"
