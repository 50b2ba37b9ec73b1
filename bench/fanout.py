# `millpond bench fanout` (issue 12): one publish, N queues, side by side in one run with the fan-out a Python
# developer would otherwise use: millpond at each --fsync mode (a topic with N queue subscriptions, raw delivery),
# RabbitMQ (a durable fanout exchange to N durable classic queues, persistent messages, publisher confirms) and
# Redis Streams (one stream, N consumer groups, one XREADGROUP reader per group). Rows: fan-out to 1, 3 and 10
# queues (records published per second, and messages per second into the queues: from the first publish until every
# queue holds every record), then the publish-to-queue latency (a receiver process waiting on one subscribed queue,
# one record published, publish call to receipt). After each fan-out row every queue must hold exactly the records
# published, or the row is not reported and the run aborts. `--against REV` / `--target millpond@REV` add millpond
# at git revisions, taking turns with this tree at each fsync mode (a revision without fan-out is skipped with its
# error). Then the goals as [met]/[MISSED] lines. Owns the row order, the checks and the report; must not
# know a client library (bench.targets.*_fanout drive those).
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any, Callable

from millpond.bench import machine, payload, queues, report, stats, targets
from millpond.bench.progress import Progress
from millpond.bench.targets import fanout_kit, queue_kit
from millpond.bench.targets.fanout_kit import BoundedPlan
from millpond.bench.workloads import BenchAborted, bench_name

DEFAULT_DURATION_S = 2.0  # of publishing per fan-out row, and for the latency rounds
COUNT_MAX = 200_000  # records per fan-out row at most: 10 queues hold 2,000,000 messages then
SUBSCRIPTIONS = (1, 3, 10)
LATENCY_ROW = "publish-to-queue latency"
ROWS = tuple(f"fan-out to {n}" for n in SUBSCRIPTIONS) + (LATENCY_ROW,)
ROW_TIMEOUT_S = 120.0  # for the queues to catch up after the last publish

RATE_MEANING = ("records/s: published, from the first publish to the last acknowledgement; messages/s: delivered "
                "into the queues (records x queues), from the first publish until every queue was seen holding every "
                f"record (after the last acknowledgement, one queue's depth read every {fanout_kit.POLL_S * 1000:g} ms "
                "until it holds them all, then the next; Redis: "
                "until each group's reader had read every entry). Latency: publish call to receipt by a receiver "
                "process waiting on one subscribed queue (millpond: a long-polling receive; RabbitMQ: a consumer "
                "with prefetch 1; Redis: XREADGROUP BLOCK), one record at a time (HDR, every round).")
RATIO_MEANING = ("ratio: the run's millpond (this tree) over the row's target, median over median: a peer against "
                 "millpond at fsync=always, a millpond revision against this tree at the same fsync mode; "
                 "messages/s > 1 means this tree is faster; for the latency (p50) < 1 means its latency is lower.")


class Goal:
    """One of issue 12's goals, checked on the median of a millpond row at fsync=always."""

    def __init__(self, row: str, figure: str, op: str, threshold: float, text: str) -> None:
        self.row, self.figure, self.op, self.threshold, self.text = row, figure, op, threshold, text


GOALS = (Goal("fan-out to 10", "messages_per_s", ">=", 200_000,
              "fan-out to 10 subscriptions >= 200,000 messages/s into queues, fsync=always"),
         Goal(LATENCY_ROW, "p50_ms", "<=", 2.0, "publish-to-queue p50 <= 2 ms, fsync=always"))
AHEAD_OF = "rabbitmq"  # and ahead of its durable figures on every row


def run(args: argparse.Namespace) -> int:
    """The `fanout` workload from the bench command line: ``--fsync`` (default always), ``--peers``, ``--repeat``,
    ``--duration-s`` / ``--count`` (records per fan-out row; the latency's rounds), ``--record-bytes`` (default
    100), ``--warmup-s``, ``--broker``, ``--target``, ``--against``, ``--json``, ``--no-progress``."""
    try:
        doc = measure(args)
    except BenchAborted as exc:
        print(f"\nmillpond bench: ABORTED, no figures reported: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2) if args.json else table(doc))
    return 0


def measure(args: argparse.Namespace, note: Callable[[str], None] | None = None,
            modes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The fan-out document (what ``--json`` prints): per target and fsync mode (``modes``, default ``--fsync`` or
    always), each row's figures summarised over ``--repeat`` runs, the targets skipped and why, and the goals
    checked. Raises ``BenchAborted``."""
    from millpond.bench.cli import fsync_modes

    modes = modes or fsync_modes(args.fsync) or ("always",)
    repeat = args.repeat or 1
    record_bytes = args.record_bytes or 100
    if record_bytes < queue_kit.BODY_BYTES_MIN:
        raise BenchAborted(f"fanout: --record-bytes must be at least {queue_kit.BODY_BYTES_MIN}")
    names = queues.target_names(args)
    rows, about, skipped = queues.run_targets(
        args, names, modes, repeat, len(ROWS), _get, _missing, note,
        lambda target, server, progress, skipped: run_rows(target, server, args, record_bytes, progress))
    summary = summarize(rows)
    return {"workload": "fanout", "machine": machine.describe(), "repeat": repeat, "record_bytes": record_bytes,
            "subscriptions": list(SUBSCRIPTIONS), "results": summary, "about": about, "skipped": skipped,
            "goals": goals(summary), "command": _command(args)}


def _is_revision(name: str) -> bool:
    return name.startswith(targets.REVISION_PREFIX)


def _get(name: str) -> Any:
    if _is_revision(name):
        from millpond.bench.targets import revision_fanout

        return revision_fanout.RevisionFanout(name[len(targets.REVISION_PREFIX):])
    return fanout_kit.get(name)


def _missing(name: str) -> str | None:
    if name not in fanout_kit.FANOUT_TARGETS and not _is_revision(name):
        return f"no fan-out loop for {name} in this benchmark"
    return _get(name).missing()


def run_rows(target: Any, server: Any, args: argparse.Namespace, record_bytes: int,
             progress: Progress) -> list[dict[str, Any]]:
    """Every row against one server, in ROWS order; a fresh topic (exchange, stream) and fresh queues per row."""
    duration = None if args.count else (args.duration_s or DEFAULT_DURATION_S)
    count = min(args.count, COUNT_MAX) if args.count else None
    values = payload.values(record_bytes, args.payload_file)
    address = server.address
    if args.warmup_s > 0:  # connections, code paths and the broker warm, on a fan-out of its own, not counted
        plan = BoundedPlan(values, None, args.warmup_s, None, None, count_max=COUNT_MAX)
        fan_out(target, address, 1, plan, lambda n: None, "warm-up")
    out = []

    def row(label: str, measure_it: Callable[[Callable[[int], None]], dict[str, Any]]) -> None:
        progress.step(f"{target.name} {label}" + (f" fsync={server.fsync}" if target.name == "millpond" else ""))
        figs = measure_it(_tick(progress))
        progress.done(_summary_line(figs))
        out.append({"target": target.name, "row": label, "fsync": server.fsync, "figures": figs})

    for n in SUBSCRIPTIONS:
        plan = BoundedPlan(values, count, duration, None, None, count_max=COUNT_MAX)

        def measure_row(tick: Callable[[int], None], n: int = n, plan: BoundedPlan = plan) -> dict[str, Any]:
            cpu0, client0 = server.cpu_s(), time.process_time()
            got = fan_out(target, address, n, plan, tick, f"fan-out to {n}")
            cpu1, client1 = server.cpu_s(), time.process_time()
            messages = got.records * n
            publish_s, wall = got.last_ack - got.first, got.all_in - got.first
            return {"records": got.records, "messages": messages, "wall_s": wall,
                    "records_per_s": got.records / publish_s if publish_s > 0 else None,
                    "messages_per_s": messages / wall if wall > 0 else None,
                    "p50_ms": None, "p99_ms": None, "max_ms": None,
                    "server_cpu_us_per_message": queues._per_message_us(cpu0, cpu1, messages),
                    "client_cpu_us_per_message": queues._per_message_us(client0, client1, messages)}

        row(f"fan-out to {n}", measure_row)
    row(LATENCY_ROW, lambda tick: latency(target, server, record_bytes, count, duration or DEFAULT_DURATION_S))
    return out


def fan_out(target: Any, address: str, n: int, plan: BoundedPlan, tick: Callable[[int], None],
            what: str) -> fanout_kit.FanoutOutcome:
    """One fan-out to ``n`` fresh queues, its counts checked: every queue holds exactly the records published."""
    fan = target.setup(address, bench_name(f"fanout{n}"), n)
    got = target.fan_out(address, fan, plan, tick, ROW_TIMEOUT_S)
    _require(not got.error, f"{target.name} {what}: {got.error}")
    _require(got.records > 0, f"{target.name} {what}: no record went through")
    problem = target.check(address, fan, got.records)
    _require(not problem, f"{target.name} {what}: {problem}")
    return got


def latency(target: Any, server: Any, record_bytes: int, count: int | None, duration_s: float) -> dict[str, Any]:
    """A receiver process waits on one subscribed queue; this process publishes one record, waits for the
    receiver's report, pauses WAKE_GAP_S, and again: ``count`` rounds or as many as fit in ``duration_s``.
    Latency: publish call to receipt."""
    address = server.address
    fan = target.setup(address, bench_name("latency"), 1)
    job = {"target": target.name, "address": address, "fan": fan}
    child = subprocess.Popen([sys.executable, "-m", "millpond.bench.queue_waiter", json.dumps(job)],
                             stdout=subprocess.PIPE, text=True)
    hist = stats.new_histogram()
    try:
        _require(queues._read_line(child, queues.READY_TIMEOUT_S) == "ready",
                 f"{target.name}: the latency receiver did not start")

        def received() -> None:
            line = queues._read_line(child, queues.READY_TIMEOUT_S)
            _require(line.startswith("us "), f"{target.name}: the latency receiver reported {line!r}")
            stats.record_us(hist, float(line[3:]))

        cpu0 = server.cpu_s()
        first = time.perf_counter()
        error = target.latency_send(address, fan, queues._rounds(count, duration_s), record_bytes,
                                    queues.WAKE_GAP_S, received)
        wall = time.perf_counter() - first
        cpu1 = server.cpu_s()
        _require(not error, f"{target.name} latency publisher: {error}")
        end = json.loads(queues._read_line(child, queues.READY_TIMEOUT_S) or '{"error": "no result"}')
        _require(not end["error"], f"{target.name} latency receiver: {end['error']}")
    finally:
        queues._reap(child)
    rounds = hist.get_total_count()
    return {"records": rounds, "messages": rounds, "wall_s": wall, "records_per_s": None, "messages_per_s": None,
            **stats.latency_figures(hist), "server_cpu_us_per_message": queues._per_message_us(cpu0, cpu1, rounds),
            "client_cpu_us_per_message": None}


def _tick(progress: Progress) -> Callable[[int], None]:
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        progress.update(0.5, f"{done:,} records")

    return tick


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise BenchAborted(message)


def _command(args: argparse.Namespace) -> str:
    from millpond.bench.cli import command_line

    return command_line(args)


# ---- summary and report ----
FIGURES = ("records_per_s", "messages_per_s", "p50_ms", "p99_ms", "max_ms", "records", "messages", "wall_s",
           "server_cpu_us_per_message", "client_cpu_us_per_message")


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by (target, fsync, row) in first-seen order, each figure ``{median, min, max}`` over repeats."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        g = groups.setdefault((r["target"], r["fsync"], r["row"]),
                              {"target": r["target"], "fsync": r["fsync"], "row": r["row"], "repeats": []})
        g["repeats"].append(r["figures"])
    for g in groups.values():
        for name in FIGURES:
            g[name] = stats.summarize([f.get(name) for f in g["repeats"]])
    return list(groups.values())


def _figure(row: str) -> tuple[str, str]:
    """The figure a row is judged and compared by, and which way is better."""
    return ("p50_ms", "<") if row == LATENCY_ROW else ("messages_per_s", ">")


def goals(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 12's goals on millpond's fsync=always rows: the two thresholds, then ahead of RabbitMQ on every row
    (messages/s into the queues higher; for the latency, p50 lower). A goal whose rows did not run is not listed."""
    first = queues.base_target(summary)
    ours = {g["row"]: g for g in summary if g["target"] == first and g["fsync"] == "always"}
    peer = {g["row"]: g for g in summary if g["target"] == AHEAD_OF}
    out = []
    for goal in GOALS:
        g = ours.get(goal.row)
        if g is not None and g[goal.figure]["median"] is not None:
            v = g[goal.figure]["median"]
            out.append({"goal": goal.text, "value": v, "op": goal.op, "threshold": goal.threshold,
                        "met": v >= goal.threshold if goal.op == ">=" else v <= goal.threshold})
    for label in ROWS:
        m, p = ours.get(label), peer.get(label)
        if m is None or p is None:
            continue
        figure, op = _figure(label)
        a, b = m[figure]["median"], p[figure]["median"]
        if a is None or b is None:
            continue
        out.append({"goal": f"{label}: ahead of RabbitMQ durable ({figure}), fsync=always", "value": a, "op": op,
                    "threshold": b, "met": a > b if op == ">" else a < b})
    return out


def _cells(g: dict[str, Any], summary: list[dict[str, Any]]) -> list[str]:
    return [report.cell(g["records_per_s"], "{:,.0f}"), report.cell(g["messages_per_s"], "{:,.0f}"),
            report.cell(g["p50_ms"], "{:.2f}"), report.cell(g["p99_ms"], "{:.2f}"),
            report.cell(g["max_ms"], "{:.2f}"), _ratio(g, queues.counterpart(g, summary))]


def _ordered(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {label: i for i, label in enumerate(ROWS)}
    return sorted(summary, key=lambda g: (order.get(g["row"], 99), not targets.is_millpond(g["target"])))


def table(doc: dict[str, Any]) -> str:
    summary = doc["results"]
    lines = [f"millpond bench fanout: {doc['repeat']} repeat(s){', median (min-max)' if doc['repeat'] > 1 else ''},"
             f" {doc['record_bytes']:,} B records", f"machine: {machine.one_line(doc['machine'])}"]
    for name, about in doc["about"].items():
        if name != "millpond":
            lines.append(f"{name}: {about['server']}; {about['client']}; {about['durability']}")
    lines += [f"skipped {name}: {why}" for name, why in doc["skipped"].items()]
    lines.append("")
    head = ["row", "target", "fsync", "records/s", "messages/s", "p50 ms", "p99 ms", "max ms", "ratio"]
    body = [[g["row"], g["target"], g["fsync"]] + _cells(g, summary) for g in _ordered(summary)]
    lines += report._columns(head, body, left=3)
    lines += ["", RATE_MEANING, RATIO_MEANING]
    cpu = ["  " + line for line in queues.cpu_lines(summary)]
    if cpu:
        lines += [""] + cpu
    if doc["goals"]:
        lines += ["", "goals (issue 12):"]
        for goal in doc["goals"]:
            lines.append(f"  [{'met' if goal['met'] else 'MISSED'}] {goal['goal']}: {goal['value']:,.2f} "
                         f"(needs {goal['op']} {goal['threshold']:,.2f})")
    return "\n".join(lines)


def _ratio(g: dict[str, Any], ours: dict[str, Any] | None) -> str:
    if ours is None:
        return "-"
    figure, _ = _figure(g["row"])
    a, b = ours[figure]["median"], g[figure]["median"]
    return "-" if a is None or not b else f"{a / b:.2f}x"


def _summary_line(f: dict[str, Any]) -> str:
    parts = [] if f["messages_per_s"] is None else [f"{f['records_per_s']:,.0f} records/s in, "
                                                     f"{f['messages_per_s']:,.0f} messages/s out"]
    if f["p50_ms"] is not None:
        parts.append(f"p50 {f['p50_ms']:.2f} ms, p99 {f['p99_ms']:.2f} ms")
    return ", ".join(parts + [f"{f['messages']:,} messages"])


# ---- bench/RESULTS.md ----
RESULTS_COMMAND = "millpond bench fanout --fsync always,never --repeat 3"


def markdown(doc: dict[str, Any] | None) -> list[str]:
    """The fan-out section of bench/RESULTS.md: the table and goals of a fan-out document, or, when the run had
    none, a line saying which command fills it."""
    lines = ["## Fan-out (issue 12)", ""]
    if not doc:
        return lines + [f"Not measured in this run: `{RESULTS_COMMAND}` measures fan-out to 1, 3 and 10 queue "
                        "subscriptions (records in, messages into the queues per second) and the publish-to-queue "
                        "latency, beside RabbitMQ (fanout exchange) and Redis Streams (consumer groups) where "
                        "installed; `millpond bench results` includes it.", ""]
    mach = doc["machine"]
    summary = doc["results"]
    lines += [f"Command: `{doc['command']}`; {doc['repeat']} repeat(s), {doc['record_bytes']:,} B records.", ""]
    lines += [f"- {name}: {about['server']}; {about['client']}; {about['durability']}"
              for name, about in doc["about"].items() if name != "millpond"]
    lines += [f"- **{name} not measured**: {why}" for name, why in doc["skipped"].items()]
    lines += ["", f"**Machine:** {machine.one_line(mach)}.", "",
              "| row | target | durability | records/s | messages/s | p50 ms | p99 ms | max ms | ratio |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for g in _ordered(summary):
        durability = f"fsync={g['fsync']}" if targets.is_millpond(g["target"]) else g["fsync"]
        lines.append("| " + " | ".join([g["row"], g["target"], durability] + _cells(g, summary)) + " |")
    lines += ["", RATE_MEANING + " " + RATIO_MEANING, "", "CPU per message (medians):", ""]
    lines += [f"- {line}" for line in queues.cpu_lines(summary)] + [""]
    if doc["goals"]:
        lines += [f"**Machine:** {machine.one_line(mach)}. Goals on millpond's fsync=always rows:", "",
                  "| goal | value | needs | |", "|---|---:|---|---|"]
        lines += [f"| {g['goal']} | {g['value']:,.2f} | {g['op']} {g['threshold']:,.2f} | "
                  f"{'met' if g['met'] else '**missed**'} |" for g in doc["goals"]]
        lines.append("")
    return lines
