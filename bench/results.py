# bench/RESULTS.md: the Markdown rendering of one benchmark document (what `--json` prints), written by
# `millpond bench results`, with the machine (cores, CPU model, Python, fsync mode) stated above every table, each
# peer's durability beside its figures, the ratio millpond/peer per figure, and the ratio this tree / revision for
# a millpond revision run beside it (`--against REV`); rebalance, soak and limits (whose figures are times, memory
# and costs rather than rates) in sections of their own. The document is saved beside it (RESULTS.json) so the
# page can be re-rendered or charted without re-running. Must not know how anything was measured: it renders what
# bench.report produced.
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from millpond.bench import fanout, queues, report

OWN_SECTIONS = ("rebalance", "soak")  # workloads with a table of their own, not in the per-fsync-mode tables
DEFAULT = str(Path(__file__).resolve().parent / "RESULTS.md")
FIGURES = (("records/s", "records_per_s", "{:,.0f}"), ("MB/s", "mb_per_s", "{:,.1f}"),
           ("p50 ms", "p50_ms", "{:.2f}"), ("p99 ms", "p99_ms", "{:.2f}"), ("max ms", "max_ms", "{:.2f}"))


def write(doc: dict[str, Any], path: str | None, *, command: str) -> Path:
    """Write ``render(doc)`` to ``path`` (default bench/RESULTS.md) and the document itself beside it as .json."""
    out = Path(path or DEFAULT)
    out.write_text(render(doc, command=command))
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    return out


def render(doc: dict[str, Any], *, command: str = "millpond bench results") -> str:
    summary = doc["results"]
    mach = doc["machine"]
    modes = list(dict.fromkeys(g["fsync"] for g in summary if not report.is_peer(g)))
    peers = [g for g in summary if g["target"] != "millpond"]
    repeat = doc.get("repeat", 1)
    lines = [
        "# millpond benchmark results",
        "",
        "Regenerate with `millpond bench results` (or `python -m millpond.bench results`; about 15 minutes with every "
        "peer installed, see bench/peers/README.md): this page and RESULTS.json beside it are written by that command, "
        f"not by hand. This one came from `{doc.get('command', command)}`: profile `{doc.get('profile', '?')}`, "
        f"{repeat} repeat(s); each cell "
        f"is the median{' (min-max)' if repeat > 1 else ''} over repeats, and the targets ran interleaved "
        "(millpond, then each peer, then millpond again) so drift on the machine hits all alike. "
        "MB/s counts payload bytes only (MB = 10^6 B).",
        "",
    ]
    if peers:
        lines += ["Peers measured in this run (each started for the run on 127.0.0.1 with a temporary directory):",
                  ""]
        lines += [f"- {line}" for line in report.durability_lines(summary)]
        lines.append("")
    for name, why in doc.get("skipped", {}).items():
        lines.append(f"- **{name} not measured**: {why}")
    if doc.get("skipped"):
        lines.append("")
    for mode in modes or [None]:
        lines += _section(mode, mach, summary, doc.get("ratios", report.ratios(summary)))
    lines += _revisions(mach, doc.get("revision_ratios", report.revision_ratios(summary)))
    lines += _rebalance(mach, summary) + _soak(mach, summary)
    if doc.get("limits"):
        lines += _limits(doc["limits"])
    lines += queues.markdown(doc.get("queues"))
    lines += fanout.markdown(doc.get("fanout"))
    checked = doc.get("goals") or []
    if checked:
        lines += ["## Goals (issues 2, 5 and 8)", "", _machine_line(mach, "as named in each row's step"), "",
                  "| goal | measured in | figure | value | needs | |", "|---|---|---|---:|---|---|"]
        for g in checked:
            lines.append(f"| {g['goal']} | {g['step']} | {g['figure']} | {g['value']:,.2f} | {g['op']} "
                         f"{g['threshold']:,} | {'met' if g['met'] else '**missed**'} |")
        lines.append("")
    return "\n".join(lines)


def _section(mode: str | None, mach: dict[str, Any], summary: list[dict[str, Any]],
             ratios: list[dict[str, Any]]) -> list[str]:
    """One table: millpond at ``mode`` and every peer, each peer row with its millpond/peer ratios."""
    rows = [g for g in report.ordered(summary) if (report.is_peer(g) or g["fsync"] == mode)
            and g["workload"] not in OWN_SECTIONS]
    if not rows:
        return []
    title = f"millpond fsync = {mode}" if mode else "peers only"
    meaning = report.FSYNC_MEANING.get(mode or "", "")
    lines = [f"## {title}", "", _machine_line(mach, f"{mode}" + (f": {meaning}" if meaning else "")), ""]
    has_peers = any(report.is_peer(g) for g in rows)
    head = ["workload", "record", "target", "durability"] + [h for h, _, _ in FIGURES]
    if has_peers and mode:
        head += [f"millpond/peer {h}" for h in ("records/s", "MB/s", "p50", "p99")]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * 4 + "---:|" * (len(head) - 4)]
    for g in rows:
        cells = [report.workload_label(g), g["record"],
                 g["target"], g["fsync"] if report.is_peer(g) else f"fsync={g['fsync']}"]
        cells += [report.cell(g[name], fmt) for _, name, fmt in FIGURES]
        if has_peers and mode:
            r = next((r for r in ratios if r["peer_step"] == g["step"] and r["millpond_fsync"] == mode), None)
            cells += [("-" if r is None or r[n] is None else f"{r[n]:.2f}x") for n in report.RATIO_FIGURES]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Latency: produce = send() to the ack seen by the producer (1 in 64 records sampled); e2e = "
              "send() to receipt in a separate consumer process, open loop at a fixed rate (HDR histogram, every "
              "record after warm-up); send_await = one awaited send() (a peer: one command round trip), from the "
              "call to the ack (HDR, every send); consume has none. " + report.RATIO_MEANING + ".", ""]
    return lines


def _revisions(mach: dict[str, Any], ratios: list[dict[str, Any]]) -> list[str]:
    """This tree against each millpond revision measured beside it: the ratio of each figure, per fsync mode."""
    if not ratios:
        return []
    names = ", ".join(dict.fromkeys(f"`{r['revision']}`" for r in ratios))
    lines = [f"## This tree against {names}", "", _machine_line(mach, "as named in each row"), "",
             "| workload | record | fsync | this tree | revision | " + " | ".join(
                 f"this tree / revision {h}" for h in ("records/s", "MB/s", "p50", "p99")) + " |",
             "|---|---|---|---|---|" + "---:|" * 4]
    for r in ratios:
        cells = [report.workload_label(r), r["record"], r["fsync"], r.get("this", "millpond"), r["revision"]]
        lines.append("| " + " | ".join(cells + [report.ratio_cell(r, n) for n in report.RATIO_FIGURES]) + " |")
    lines += ["", report.REVISION_MEANING + ".", ""]
    return lines


def _rebalance(mach: dict[str, Any], summary: list[dict[str, Any]]) -> list[str]:
    rows = [g for g in summary if g["workload"] == "rebalance"]
    if not rows:
        return []
    lines = ["## Consumer group rebalance", ""]
    for g in rows:
        lines += [_machine_line(mach, g["fsync"]), "",
                  "| step | member death to settled assignment s | member join to settled assignment s |",
                  "|---|---:|---:|",
                  f"| {g['step']} | {report.cell(g['death_to_settled_s'], '{:.2f}')} | "
                  f"{report.cell(g['join_to_settled_s'], '{:.2f}')} |", ""]
    lines += ["A 3-member group on a 6-partition topic, members with a 3 s session timeout: seconds from a member's "
              "SIGKILL (noticed when its session lapses) and from a new member's join until describe_group shows "
              "the group stable with every partition owned; the median of 3 rounds per repeat.", ""]
    return lines


def _soak(mach: dict[str, Any], summary: list[dict[str, Any]]) -> list[str]:
    rows = [g for g in summary if g["workload"] == "soak"]
    if not rows:
        return []
    lines = ["## Soak", ""]
    for g in rows:
        lines += [_machine_line(mach, g["fsync"]), "",
                  "| step | records/s | MB/s | broker RSS start MB | broker RSS end MB | broker RSS max MB |",
                  "|---|---:|---:|---:|---:|---:|",
                  f"| {g['step']} | " + " | ".join(report.cell(g[n], f) for n, f in (
                      ("records_per_s", "{:,.0f}"), ("mb_per_s", "{:,.1f}"), ("rss_mb_start", "{:,.1f}"),
                      ("rss_mb_end", "{:,.1f}"), ("rss_mb_max", "{:,.1f}"))) + " |", "",
                  _machine_line(mach, g["fsync"]), "",
                  "Over time (first repeat; one sample a second in RESULTS.json):", "",
                  "| " + " | ".join(report.SOAK_HEAD) + " |", "|---|" + "---:|" * (len(report.SOAK_HEAD) - 1)]
        lines += ["| " + " | ".join(cells) + " |" for cells in report.soak_windows(g)]
        lines.append("")
    lines += ["Producer processes send at a fixed rate (open loop) while a 3-member consumer group, settled before "
              "the first send, reads a 6-partition topic; every record is consumed exactly once or the run aborts. "
              "records/s: records consumed from the first send to the last record consumed. Broker RSS: VmRSS of "
              "the broker process (MB = 10^6 B).", ""]
    return lines


def _limits(doc: dict[str, Any]) -> list[str]:
    micro, prod = doc["micro"], doc["produce"]
    lines = ["## Limits", "", _machine_line(doc["machine"], doc["fsync"] + " (the produce runs below)"), "",
             "Admission check cost per algorithm, in-process (best of 5; includes ~15 ns loop overhead); memory: "
             "tracemalloc of 100,000 keys' state and dict slots, the key strings excluded.", "",
             "| algorithm | admit ns | refuse ns | peek ns | B/key | MB per 100k keys |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, row in micro["algorithms"].items():
        lines.append(f"| {name} | {row['admit_ns']:.0f} | {row['refuse_ns']:.0f} | {row['peek_ns']:.0f} | "
                     f"{row['bytes_per_key']:.0f} | {row['bytes_per_key'] * 100_000 / 1e6:.1f} |")
    lines += ["", "PolicySet.admit (what the server calls): " + ", ".join(
        f"{ns:.0f} ns with {n} matching polic{'y' if str(n) == '1' else 'ies'}"
        for n, ns in micro["policy_set_admit_ns"].items()) + "."]
    batching = "client default batching" if doc["batch_bytes"] is None else f"batch_bytes={doc['batch_bytes']}"
    lines += ["", _machine_line(doc["machine"], doc["fsync"]), "",
              f"Produce, {doc['record_bytes']} B records, {batching}, one producer, {doc['pairs']} x (off, on) runs "
              f"of {doc['duration_s']:g} s on one broker, interleaved; the default policy "
              f"({prod['policy']['algorithm']} {prod['policy']['params']} per {prod['policy']['scope']}, "
              f"{prod['policy']['unit']}) off and on:", "",
              "| default policy | records/s (median) | runs | server CPU µs/record |", "|---|---:|---|---:|"]
    for label in ("off", "on"):
        cpu = prod[f"server_cpu_us_per_record_{label}"]
        lines.append(f"| {label} | {prod['records_per_s_' + label]:,.0f} | "
                     + " ".join(f"{r['records_per_s']:,.0f}" for r in prod["runs"][label])
                     + f" | {'-' if cpu is None else f'{cpu:.2f}'} |")
    cpu_over = prod["server_cpu_overhead_pct"]
    lines += ["", f"Overhead of the default policy: {prod['overhead_pct']:+.1f} % throughput"
              + ("" if cpu_over is None else f", {cpu_over:+.1f} % server CPU per record") + ".", ""]
    return lines


def _machine_line(mach: dict[str, Any], fsync: str) -> str:
    return (f"**Machine:** {mach.get('cores', '?')} cores, {mach.get('cpu_model', '?')}, {mach.get('python', '?')}, "
            f"{mach.get('os', '?')}" + (f", {mach['memory_gib']:.0f} GiB RAM" if mach.get("memory_gib") else "")
            + f". **millpond fsync mode:** {fsync}.")

