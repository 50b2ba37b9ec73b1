# Turning results into the terminal table and the JSON document: median and min-max over repeats, the machine
# and fsync mode (and each peer's durability) above the table, the ratio millpond/peer for each figure of each
# peer measured in the run, the ratio this tree / revision for each figure of a millpond revision measured beside
# it (`--against REV`) at the same fsync mode, and the goals, each judged on figures of the run itself. Must not know
# how anything was measured.
from __future__ import annotations

from typing import Any

from millpond.bench import machine, reference, stats
from millpond.bench.plans import spread_label

# Figures summarised over repeats; every name carries its unit.
FIGURES = ("records_per_s", "mb_per_s", "p50_ms", "p99_ms", "p999_ms", "max_ms", "wall_s", "records",
           "server_cpu_us_per_record", "client_cpu_s_per_wall_s", "sender_lag_max_ms", "death_to_settled_s",
           "join_to_settled_s", "rss_mb_start", "rss_mb_end", "rss_mb_max")
FSYNC_MEANING = {
    "always": "a produce is acknowledged after the fsync that covers it (durable default)",
    "interval": "fsync on a timer; acknowledged after the write",
    "never": "no fsync; acknowledged after the write to the page cache",
    "external": "whatever the external broker was started with",
}
# Figures a peer row gets a millpond/peer ratio for: throughput (> 1: millpond faster), latency (< 1: lower).
RATIO_FIGURES = ("records_per_s", "mb_per_s", "p50_ms", "p99_ms")
RATIO_MEANING = ("millpond / peer, median over median: for records/s and MB/s > 1 means millpond is faster; "
                 "for latency < 1 means millpond's is lower")
REVISION_MEANING = ("this tree / millpond revision at the same fsync mode, run side by side step by step, median over "
                    "median (in brackets: the range of the per-repeat ratios): records/s > 1 means this tree is "
                    "faster; latency < 1 means this tree's is lower. \"this tree\" is millpond@worktree where the "
                    "run has it (this tree hosted like a revision, client and broker in child processes); its own "
                    "row against millpond (hosted in the bench process) is the A/A check of that hosting")
WORKTREE = "worktree"  # the revision name of this tree hosted like a revision (bench.targets.revision)
LATENCY_MEANING = ("latency: produce = send() to ack seen by the producer (sampled, 1 in 64); e2e = send() to receipt "
                   "in a consumer process (HDR, every record); send_await = one awaited send (or one peer command "
                   "round trip), call to ack (HDR, every send); consume has none.")


def is_revision(g: dict[str, Any]) -> bool:
    """A row of millpond at another git revision (``millpond@REV``), measured beside this tree's."""
    return bool(g.get("revision"))


def is_peer(g: dict[str, Any]) -> bool:
    return g["target"] != "millpond" and not is_revision(g)


def base(summary: list[dict[str, Any]]) -> str | None:
    """The millpond the run is about, which peers and other revisions are compared with and goals judged on:
    ``millpond`` (this tree) if it ran, else the first revision that did (``--target millpond@REV``)."""
    ours = [g["target"] for g in summary if not is_peer(g)]
    return "millpond" if "millpond" in ours else next(iter(ours), None)


def match_key(g: dict[str, Any]) -> tuple:
    """What makes a millpond row and a peer row the same measurement (everything but target and durability)."""
    return (g["workload"], g.get("record_bytes"), g.get("payload_file"), g.get("rate_per_s"), g.get("partitions"),
            g.get("producers"), g.get("keys") or 0)


def ratios(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (peer row, millpond row of the same measurement): ``{figure: millpond/peer or None}``."""
    out = []
    ours = [g for g in summary if g["target"] == base(summary)]
    for peer in filter(is_peer, summary):
        for m in (g for g in ours if match_key(g) == match_key(peer)):
            entry: dict[str, Any] = {"workload": peer["workload"], "record": peer["record"],
                                     "record_bytes": peer.get("record_bytes"), "rate_per_s": peer.get("rate_per_s"), "millpond_step": m["step"],
                                     "millpond_target": m["target"],
                                     "millpond_fsync": m["fsync"], "peer": peer["target"], "peer_step": peer["step"],
                                     "peer_durability": peer["fsync"]}
            for name in RATIO_FIGURES:
                a, b = m[name]["median"], peer[name]["median"]
                entry[name] = a / b if a is not None and b else None
            out.append(entry)
    return out


def revision_ratios(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (revision row, this tree's row of the same measurement at the same fsync mode): ``{figure:
    this tree / revision, median over median or None}``, and ``{figure}_range``: the lowest and highest ratio of
    the repeats paired in run order (each pair measured next to each other), or None. This tree's row is the one
    hosted like the revision (``millpond@worktree``: client and broker in child processes) where the run has it,
    else ``millpond``; the worktree row itself is compared with ``millpond`` (the A/A check of that hosting)."""
    out = []
    first = base(summary)
    for rev in (g for g in summary if is_revision(g) and g["target"] != first):
        same = [g for g in summary if match_key(g) == match_key(rev) and g["fsync"] == rev["fsync"]]
        hosted = next((g for g in same if g.get("revision") == WORKTREE), None)
        m = next((g for g in same if g["target"] == first), None)
        if first == "millpond" and rev.get("revision") != WORKTREE and hosted is not None:
            m = hosted
        if m is not None:
            entry: dict[str, Any] = {"workload": rev["workload"], "record": rev["record"],
                                     "record_bytes": rev.get("record_bytes"), "rate_per_s": rev.get("rate_per_s"),
                                     "fsync": rev["fsync"], "revision": rev["target"], "this": m["target"],
                                     "step": m["step"], "revision_step": rev["step"]}
            for name in RATIO_FIGURES:
                a, b = m[name]["median"], rev[name]["median"]
                entry[name] = a / b if a is not None and b else None
                pairs = [x.get(name) / y.get(name) for x, y in zip(m["repeats"], rev["repeats"])
                         if x.get(name) is not None and y.get(name)]
                entry[f"{name}_range"] = [min(pairs), max(pairs)] if pairs else None
            out.append(entry)
    return out


def ordered(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the same measurement next to each other (first-seen order): each fsync mode's millpond row with
    the revision rows of that mode, then the peers: easy to compare."""
    keys: dict[tuple, int] = {}
    modes: dict[str, int] = {}
    for g in summary:
        keys.setdefault(match_key(g), len(keys))
        modes.setdefault(g["fsync"], len(modes))
    return sorted(summary, key=lambda g: (keys[match_key(g)], is_peer(g), 0 if is_peer(g) else modes[g["fsync"]],
                                          is_revision(g)))


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


def document(profile: str, mach: dict[str, Any], summary: list[dict[str, Any]], repeat: int,
             skipped: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``--json`` output."""
    return {
        "profile": profile,
        "repeat": repeat,
        "machine": mach,
        "results": summary,
        "ratios": ratios(summary),
        "revision_ratios": revision_ratios(summary),
        "skipped": skipped or {},
        "goals": goals(summary),
    }


def table(profile: str, mach: dict[str, Any], summary: list[dict[str, Any]], repeat: int,
          skipped: dict[str, str] | None = None) -> str:
    modes = sorted({g["fsync"] for g in summary if not is_peer(g)})
    lines = [f"millpond bench {profile}: {repeat} repeat(s){', median (min-max)' if repeat > 1 else ''}"
             + (", targets interleaved" if len({g["target"] for g in summary}) > 1 else ""),
             f"machine: {machine.one_line(mach)}"]
    for m in modes:
        lines.append(f"fsync={m}: {FSYNC_MEANING.get(m, m)}")
    lines += durability_lines(summary)
    lines += [f"skipped {name}: {why}" for name, why in (skipped or {}).items()]
    lines.append("")
    peers = any(g["target"] != "millpond" for g in summary)
    head = ["workload", "record"] + (["target"] if peers else []) + ["fsync", "records/s", "MB/s", "p50 ms",
                                                                    "p99 ms", "max ms"]
    body = []
    for g in ordered(summary):
        size = g["record"]
        body.append([workload_label(g), size]
                    + ([g["target"]] if peers else []) + [g["fsync"],
                     cell(g["records_per_s"], "{:,.0f}"), cell(g["mb_per_s"], "{:,.1f}"),
                     cell(g["p50_ms"], "{:.2f}"), cell(g["p99_ms"], "{:.2f}"), cell(g["max_ms"], "{:.2f}")])
    lines += _columns(head, body, left=len(head) - 5)
    if ratios(summary):
        lines += ["", RATIO_MEANING + ":"]
        lines += _columns(["workload", "record", "millpond", "peer", "records/s", "MB/s", "p50 ms", "p99 ms"],
                          [[r["workload"] + (f" @{r['rate_per_s']:,}/s" if r["rate_per_s"] else ""), r["record"],
                            _ours(r) + f"fsync={r['millpond_fsync']}", f"{r['peer']} ({r['peer_durability']})",
                            *(_ratio(r[n]) for n in RATIO_FIGURES)] for r in ratios(summary)], left=4)
    if revision_ratios(summary):
        lines += ["", REVISION_MEANING + ":"]
        lines += _columns(["workload", "record", "fsync", "this tree", "revision", "records/s", "MB/s", "p50 ms",
                           "p99 ms"],
                          [[r["workload"] + (f" @{r['rate_per_s']:,}/s" if r["rate_per_s"] else ""), r["record"],
                            r["fsync"], r.get("this", "millpond"), r["revision"],
                            *(ratio_cell(r, n) for n in RATIO_FIGURES)] for r in revision_ratios(summary)], left=5)
    lines.append("")
    lines.append(LATENCY_MEANING)
    lines.append("records/s: produce from first send to last ack; consume from the first fetch to the last record; "
                 "e2e = the rate achieved by the open-loop sender; soak = records consumed from the first send to the "
                 "last record consumed.")
    extra = _extra_lines(summary)
    if extra:
        lines += [""] + extra
    lines += soak_lines(summary)
    checked = goals(summary)
    waiting = unjudged(summary)
    if checked or waiting:
        lines += ["", "goals (judged on this run's rows only):"]
        for goal in checked:
            lines.append(f"  [{'met' if goal['met'] else 'MISSED'}] {goal['goal']}: {goal['figure']} = "
                         f"{goal['value']:,.2f} (needs {goal['op']} {goal['threshold']:,})")
        for text, why in waiting:
            lines.append(f"  [not judged] {text}: {why}")
    return "\n".join(lines)


def _peer_pairs(goal: reference.PeerGoal, summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in ratios(summary)
            if (r["workload"], r["record_bytes"], r["millpond_fsync"], r["peer"]) == (
                goal.workload, goal.record_bytes, goal.fsync, goal.peer)
            and r["rate_per_s"] is None and r[goal.figure] is not None]


def unjudged(summary: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(goal, why)`` for each goal of reference.PEER_GOALS the run has the millpond row for but no peer row beside
    it: such a goal is judged only side by side, never against a figure from elsewhere."""
    first = base(summary)
    out = []
    for goal in reference.PEER_GOALS:
        ours = any(g["target"] == first and (g["workload"], g.get("record_bytes"), g["fsync"]) == (
            goal.workload, goal.record_bytes, goal.fsync) for g in summary)
        if ours and not _peer_pairs(goal, summary):
            out.append((goal.text, f"needs the {goal.peer} row measured in the same run (millpond bench compare "
                                   f"--peers {goal.peer})"))
    return out


def goals(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each goal of reference.GOALS checked on the median of each matching row of the run's millpond (``base``),
    each of reference.PEER_GOALS on the ratio millpond / peer of each matching pair measured in the run, then each
    of reference.REVISION_GOALS on the ratio it / revision of each matching pair of rows."""
    out = []
    first = base(summary)
    for goal in reference.GOALS:
        for g in summary:
            if (g["target"] == first and g["workload"] == goal.workload and g["fsync"] == goal.fsync
                    and not g.get("keys")  # keyed rows have a goal of their own (SPREAD_GOALS)
                    and goal.record_bytes in (None, g.get("record_bytes"))
                    and goal.rate_per_s in (None, g.get("rate_per_s"))
                    and not g.get("payload_file") and g[goal.figure]["median"] is not None):
                v = g[goal.figure]["median"]
                out.append({"goal": goal.text, "step": g["step"], "figure": goal.figure, "value": v, "op": goal.op,
                            "threshold": goal.threshold, "met": _meets(v, goal.op, goal.threshold)})
    for goal in reference.PEER_GOALS:
        for r in _peer_pairs(goal, summary):
            out.append({"goal": goal.text, "step": f"{r['millpond_step']} / {r['peer_step']}",
                        "figure": f"{goal.figure} ratio", "value": r[goal.figure], "op": goal.op,
                        "threshold": goal.threshold, "met": _meets(r[goal.figure], goal.op, goal.threshold)})
    for workload, name, op, threshold, text in reference.SPREAD_GOALS:
        for g, one in _spread_pairs(workload, summary, first):
            v = g[name]["median"] / one[name]["median"]
            out.append({"goal": f"{text.format(n=g['partitions'])}, fsync={g['fsync']}",
                        "step": f"{g['step']} / {one['step']}", "figure": f"{name} ratio", "value": v, "op": op,
                        "threshold": threshold, "met": _meets(v, op, threshold)})
    for workload, size, name, op, threshold, text in reference.REVISION_GOALS:
        for r in revision_ratios(summary):
            if (r["workload"] == workload and r.get("record_bytes") == size and r[name] is not None
                    and r["revision"].partition("@")[2] != WORKTREE):  # the A/A check is no goal
                out.append({"goal": f"{text}, fsync={r['fsync']}", "step": f"{r['step']} / {r['revision_step']}",
                            "figure": f"{name} ratio", "value": r[name], "op": op, "threshold": threshold,
                            "met": _meets(r[name], op, threshold)})
    return out


def _spread_pairs(workload: str, summary: list[dict[str, Any]], target: str | None
                  ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(row over N > 1 partitions, row over 1)`` for each keyed ``workload`` row of ``target`` with a row over one
    partition measured in the run at the same record size, keys, producers and fsync mode."""
    def same_but_partitions(g: dict[str, Any]) -> tuple:
        return (g["fsync"], *match_key({**g, "partitions": 1}))

    rows = [g for g in summary if g["target"] == target and g["workload"] == workload and g.get("keys")
            and g["records_per_s"]["median"]]
    ones = {same_but_partitions(g): g for g in rows if g.get("partitions", 1) == 1}
    return [(g, ones[k]) for g in rows if g.get("partitions", 1) > 1 and (k := same_but_partitions(g)) in ones]


def _meets(value: float, op: str, threshold: float) -> bool:
    return {">=": value >= threshold, "<": value < threshold, "<=": value <= threshold}[op]


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
        if g["workload"] == "rebalance":
            parts.append(f"member death to settled assignment {g['death_to_settled_s']['median']:.2f} s, "
                         f"join to settled {g['join_to_settled_s']['median']:.2f} s")
        if g["workload"] == "soak" and g["rss_mb_max"]["median"] is not None:
            parts.append(f"broker RSS {g['rss_mb_start']['median']:,.1f} MB at the start, "
                         f"{g['rss_mb_end']['median']:,.1f} MB at the end, {g['rss_mb_max']['median']:,.1f} MB max")
        if g["workload"] == "e2e":
            parts.append(f"p99.9 {g['p999_ms']['median']:.2f} ms")
            parts.append(f"sender lag max {g['sender_lag_max_ms']['median']:.2f} ms")
        parts.append(f"{g['records']['median']:,.0f} records in {g['wall_s']['median']:.2f} s")
        lines.append(f"  {g['step']}: " + ", ".join(parts))
    return lines


def workload_label(g: dict[str, Any]) -> str:
    """``e2e @5,000/s``: the workload, with its send rate where it has a fixed one, and its keys and partitions
    (``plans.spread_label``: ``produce keys=1,000 partitions=64``)."""
    spread = spread_label(g["workload"], g.get("keys") or 0, g.get("partitions", 1))
    return g["workload"] + (f" @{g['rate_per_s']:,}/s" if g.get("rate_per_s") else "") + spread


def soak_windows(g: dict[str, Any]) -> list[list[str]]:
    """A soak row's per-second series (its first repeat) as at most 10 rows of table cells."""
    mb = lambda x: "-" if x is None else f"{x:,.1f}"
    return [[f"{w['from_s']:.0f}-{w['to_s']:.0f}", f"{w['sent_per_s']:,.0f}", f"{w['consumed_per_s']:,.0f}",
             f"{w['lag_records_max']:,}", mb(w["rss_mb_max"])]
            for w in windows(g["repeats"][0].get("series", []))]


def windows(series: list[dict[str, Any]], rows_max: int = 10) -> list[dict[str, Any]]:
    """A soak's per-second series in at most ``rows_max`` equal windows: mean rates, the largest lag and RSS."""
    out: list[dict[str, Any]] = []
    size = -(-len(series) // rows_max) if series else 1
    for i in range(0, len(series), size):
        part = series[i:i + size]
        rss = [p["rss_mb"] for p in part if p["rss_mb"] is not None]
        out.append({"from_s": out[-1]["to_s"] if out else 0.0, "to_s": part[-1]["t_s"],
                    "sent_per_s": sum(p["sent_per_s"] for p in part) / len(part),
                    "consumed_per_s": sum(p["consumed_per_s"] for p in part) / len(part),
                    "lag_records_max": max(p["lag_records"] for p in part),
                    "rss_mb_max": max(rss) if rss else None})
    return out


SOAK_HEAD = ["seconds", "sent/s", "consumed/s", "lag max (records)", "broker RSS max MB"]


def soak_lines(summary: list[dict[str, Any]]) -> list[str]:
    """Each soak's series over time, compact (the full per-second series is in the JSON)."""
    lines = []
    for g in summary:
        if g["workload"] == "soak":
            lines += ["", f"{g['step']}, over time (first repeat; per second in --json; MB = 10^6 B):"]
            lines += _columns(SOAK_HEAD, soak_windows(g), left=1)
    return lines


def durability_lines(summary: list[dict[str, Any]]) -> list[str]:
    """One line per peer measured: server, client and what is durable when it acknowledges."""
    out, seen = [], set()
    for g in summary:
        about = g.get("about") or {}
        if g["target"] != "millpond" and g["target"] not in seen and about:
            seen.add(g["target"])
            if is_revision(g):  # its durability is its fsync mode, in each row
                out.append(f"{g['target']}: {about.get('server', '?')}; {about.get('client', '?')}")
            else:
                out.append(f"{g['target']} ({g['fsync']}): {about.get('server', '?')}; {about.get('client', '?')}; "
                           f"{about.get('durability', '?')}")
    return out


def _columns(head: list[str], body: list[list[str]], left: int) -> list[str]:
    """A fixed-width table: the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in body]


def _ours(r: dict[str, Any]) -> str:
    """'' for this tree's millpond, ``millpond@REV `` for a revision that is the run's base."""
    target = r.get("millpond_target", "millpond")
    return "" if target == "millpond" else target + " "


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def ratio_cell(r: dict[str, Any], name: str) -> str:
    """A revision ratio: ``1.02x`` and, when repeats were paired, the range of theirs: ``1.02x (0.97-1.05)``."""
    text = _ratio(r[name])
    span = r.get(f"{name}_range")
    if r[name] is not None and span and span[0] != span[1]:
        text += f" ({span[0]:.2f}-{span[1]:.2f})"
    return text


def cell(s: dict[str, float | None], fmt: str) -> str:
    """A summarised figure as ``median (min-max)``, or just the median when every repeat agreed; '-' if none."""
    if s["median"] is None:
        return "-"
    if s["min"] == s["max"]:
        return fmt.format(s["median"])
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})"
