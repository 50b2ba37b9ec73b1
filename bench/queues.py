# `millpond bench queues` (issue 11): SQS-style queues against the work queues a Python developer would otherwise
# use, side by side in one run: millpond at each --fsync mode, RabbitMQ (durable classic queue, persistent
# messages, publisher confirms, manual ack) and Redis lists (the reliable-queue pattern: LPUSH, then BLMOVE into a
# processing list, LREM when done). Rows: send at batch 1 and 10, receive+delete at batch 1 and 10 (draining what
# the send of that batch size left), push delivery with a prefetch window (a queue filled first, not measured), and
# the long-poll wake-up latency (a receiver process parked in a long poll, one message sent, send call to receipt).
# Every row checks its messages: each sent one held by the broker, each received exactly once, or the run aborts.
# `--against REV` / `--target millpond@REV` add millpond at git revisions (bench.targets.revision_queues), taking
# turns with this tree at each fsync mode. Then the goals as [met]/[MISSED] lines. Owns the row order, the
# checks and the report; must not know a client library (bench.targets.*_queues drive those).
from __future__ import annotations

import argparse
import json
import selectors
import subprocess
import sys
import time
from typing import Any, Callable, Iterator

from millpond.bench import machine, report, stats, targets
from millpond.bench.progress import Progress
from millpond.bench.targets import PeerUnavailable, queue_kit
from millpond.bench.targets.queue_kit import QueueOutcome, QueuePlan
from millpond.bench.workloads import BenchAborted, bench_name

DEFAULT_DURATION_S = 2.0  # per send row and for the wake-up rounds
COUNT_MAX = QueuePlan.count_max  # messages per send row at most (millpond's default queue bound is 1,000,000)
IN_FLIGHT = 32  # requests outstanding at once in the send and receive rows, for every target
PREFETCH = 100  # the push window, messages
WAKE_GAP_S = 0.003  # between a wake-up receipt and the next send: the receiver is parked again by then
WAKE_ROUNDS_MAX = 5_000
READY_TIMEOUT_S = 30.0
ROW_TIMEOUT_S = 120.0
PEERS = ("redis", "redis-aof", "rabbitmq")  # with --peers absent; redis-aof-always when named

ROWS = ("send batch 1", "receive+delete batch 1", "send batch 10", "receive+delete batch 10",
        f"push prefetch {PREFETCH}", "long-poll wake-up")
RATE_MEANING = ("messages/s: send from the first request to the last acknowledgement; receive+delete from the first "
                f"receive to the last delete acknowledged, draining what the send row above left; push from "
                f"subscribing to the last ack answered. {IN_FLIGHT} calls in flight on one connection (millpond: "
                f"{IN_FLIGHT} tasks, whose calls made together the client gathers into batch requests, docs/queues.md; "
                f"a peer: its pipeline or unconfirmed window of {IN_FLIGHT} requests). Latency: send = one call to "
                "its acknowledgement; receive+delete = one receive call to its delete's acknowledgement; wake-up = send "
                "call to receipt by a receiver process parked in a long poll (HDR, every round).")

RATIO_MEANING = ("ratio: the run's millpond (this tree) over the row's target, median over median: a peer against "
                 "millpond at fsync=always, a millpond revision against this tree at the same fsync mode; "
                 "messages/s > 1 means this tree is faster; for the wake-up (p50) < 1 means its latency is lower.")


class Goal:
    """One of issue 11's goals, checked on the median of a millpond row at fsync=always."""

    def __init__(self, row: str, figure: str, op: str, threshold: float, text: str) -> None:
        self.row, self.figure, self.op, self.threshold, self.text = row, figure, op, threshold, text


GOALS = (Goal("send batch 10", "messages_per_s", ">=", 100_000, "send batch 10 >= 100,000 messages/s, fsync=always"),
         Goal("receive+delete batch 10", "messages_per_s", ">=", 50_000,
              "receive+delete batch 10 >= 50,000 messages/s, fsync=always"),
         Goal("long-poll wake-up", "p50_ms", "<=", 0.5, "long-poll wake-up p50 <= 0.5 ms, fsync=always"))
AHEAD_OF = "rabbitmq"  # and ahead of its durable figures on every row


def run(args: argparse.Namespace) -> int:
    """The `queues` workload from the bench command line: ``--fsync`` (default always), ``--peers``, ``--repeat``,
    ``--duration-s`` / ``--count`` (per send row; the wake-up's rounds), ``--record-bytes`` (message body, default
    100), ``--warmup-s``, ``--broker``, ``--json``, ``--no-progress``."""
    try:
        doc = measure(args)
    except BenchAborted as exc:
        print(f"\nmillpond bench: ABORTED, no figures reported: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2) if args.json else table(doc))
    return 0


def measure(args: argparse.Namespace, note: Callable[[str], None] | None = None,
            modes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The queues document (what ``--json`` prints): per target and fsync mode (``modes``, default ``--fsync`` or
    always), each row's figures summarised over ``--repeat`` runs, the targets skipped and why, and the goals
    checked. Raises ``BenchAborted``."""
    from millpond.bench.cli import fsync_modes

    modes = modes or fsync_modes(args.fsync) or ("always",)
    repeat = args.repeat or 1
    body_bytes = args.record_bytes or 100
    if body_bytes < queue_kit.BODY_BYTES_MIN:
        raise BenchAborted(f"queues: --record-bytes must be at least {queue_kit.BODY_BYTES_MIN}")
    names = target_names(args)
    rows, about, skipped = run_targets(
        args, names, modes, repeat, len(ROWS), _get, _missing, note,
        lambda target, server, progress, skipped: run_rows(target, server, args, body_bytes, progress, skipped))
    summary = summarize(rows)
    return {"workload": "queues", "machine": machine.describe(), "repeat": repeat, "body_bytes": body_bytes,
            "in_flight": IN_FLIGHT, "prefetch": PREFETCH, "results": summary, "about": about, "skipped": skipped,
            "goals": goals(summary), "command": _command(args)}


def run_targets(args: argparse.Namespace, names: list[str], modes: tuple[str, ...], repeat: int, rows_per_run: int,
                get: Callable[[str], Any], missing: Callable[[str], str | None],
                note: Callable[[str], None] | None,
                run_server: Callable[[Any, Any, Progress, dict[str, str]], list[dict[str, Any]]],
                ) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]], dict[str, str]]:
    """Run every target (``names``) ``repeat`` times: this tree and revisions at each fsync mode of ``modes``,
    taking turns in an order that turns (A B, B A); a peer once per repeat (its durability is its own).
    ``run_server(target, server, progress, skipped)`` runs the rows against one started server; a revision runs
    its rows in a child process. Returns the rows, each target's description, and the targets skipped and why
    (``missing(name)`` before anything runs, or ``PeerUnavailable`` while running)."""
    ours = [n for n in names if targets.is_millpond(n)]
    progress = Progress(rows_per_run * repeat * (len(modes) * len(ours) + len(names) - len(ours)),
                        enabled=not args.no_progress)
    say = note or progress.note
    skipped: dict[str, str] = {}
    for name in names:
        why = missing(name)
        if why:
            skipped[name] = why
            say(f"skipping {name}: {why}")
    rows: list[dict[str, Any]] = []
    about: dict[str, dict[str, str]] = {}

    def one(name: str, mode: str) -> None:
        if name in skipped:
            return
        target = get(name)
        about.setdefault(name, target.describe())
        try:
            if name.startswith(targets.REVISION_PREFIX):
                progress.step(f"{name} fsync={mode}: every row in a child process")
                got = target.rows(mode, args)
                progress.done(f"{len(got)} rows")
                rows.extend(got)
                return
            with target.server(mode, args.broker if name == "millpond" else None) as server:
                rows.extend(run_server(target, server, progress, skipped))
        except PeerUnavailable as exc:
            skipped[name] = str(exc)
            say(f"skipping {name}: {exc}")

    for r in range(repeat):
        for k, mode in enumerate(modes):
            shift = (r + k) % len(ours) if ours else 0
            for name in ours[shift:] + ours[:shift]:
                one(name, mode)
        for name in names:
            if name not in ours:
                one(name, modes[0])
    return rows, about, skipped


def target_names(args: argparse.Namespace) -> list[str]:
    """``--target`` (default millpond; ``millpond@REV``: a git revision), the revisions of ``--against`` (as
    ``millpond@<short commit>``), then the peers."""
    from millpond.bench.cli import _revision_label, _split_names

    names = [_revision_label(n) for n in _split_names(args.target)]
    names += [n for n in (_revision_label(targets.REVISION_PREFIX + r) for r in _split_names(args.against or ""))
              if n not in names]
    return names + [n for n in peer_names(args.peers) if n not in names]


def peer_names(peers: str | None) -> list[str]:
    """``--peers``: the queue targets named (``redis`` means Redis without and with AOF, as for the topic
    workloads); absent: PEERS; ``none``: none."""
    if peers is None:
        return list(PEERS)
    if peers == "none":
        return []
    return targets.peer_targets([n.strip() for n in peers.split(",") if n.strip()])


def _is_revision(name: str) -> bool:
    return name.startswith(targets.REVISION_PREFIX)


def _get(name: str) -> Any:
    if _is_revision(name):
        from millpond.bench.targets import revision_queues

        return revision_queues.RevisionQueues(name[len(targets.REVISION_PREFIX):])
    return queue_kit.get(name)


def _missing(name: str) -> str | None:
    if name not in queue_kit.QUEUE_TARGETS and not _is_revision(name):
        return f"no queue loop for {name} in this benchmark"
    return _get(name).missing()


def run_rows(target: Any, server: Any, args: argparse.Namespace, body_bytes: int, progress: Progress,
             skipped: dict[str, str]) -> list[dict[str, Any]]:
    """Every row against one server, in ROWS order; one fresh queue per row (a receive row drains its send row's)."""
    duration = None if args.count else (args.duration_s or DEFAULT_DURATION_S)
    count = min(args.count, COUNT_MAX) if args.count else None
    address = server.address
    if args.warmup_s > 0:  # connections, code paths and the broker warm, on a queue of its own, not counted
        warm = _queue(target, address, "warmup")
        sent = _checked(target.send(address, warm, QueuePlan(body_bytes, 10, IN_FLIGHT, None, args.warmup_s),
                                    lambda n: None), "warm-up send")
        _checked(target.receive_delete(address, warm, QueuePlan(body_bytes, 10, IN_FLIGHT, sent.messages,
                                                                 timeout_s=ROW_TIMEOUT_S), lambda n: None),
                 "warm-up receive")
    out = []
    left: dict[int, tuple[str, int]] = {}  # batch -> the queue a send row filled and how many it holds

    def row(label: str, measure_it: Callable[[Callable[[int], None]], dict[str, Any]]) -> None:
        progress.step(f"{target.name} {label}" + (f" fsync={server.fsync}" if target.name == "millpond" else ""))
        figs = measure_it(_tick(progress, label))
        progress.done(_summary_line(figs))
        out.append({"target": target.name, "row": label, "fsync": server.fsync, "figures": figs})

    for batch in (1, 10):
        def send(tick: Callable[[int], None], batch: int = batch) -> dict[str, Any]:
            q = _queue(target, address, f"send{batch}")
            plan = QueuePlan(body_bytes, batch, IN_FLIGHT, count, duration)
            figs = _timed(server, lambda: target.send(address, q, plan, tick), f"send batch {batch}", body_bytes)
            held = target.depth(address, q)
            _require(held == figs["messages"], f"{target.name}: the queue holds {held} messages, "
                                               f"{figs['messages']} sends were acknowledged")
            left[batch] = (q, figs["messages"])
            return figs

        def receive(tick: Callable[[int], None], batch: int = batch) -> dict[str, Any]:
            q, n = left.pop(batch)
            plan = QueuePlan(body_bytes, batch, IN_FLIGHT, n, timeout_s=ROW_TIMEOUT_S)
            figs = _timed(server, lambda: target.receive_delete(address, q, plan, tick),
                          f"receive+delete batch {batch}", body_bytes)
            _require(figs["messages"] == n, f"{target.name}: {figs['messages']} of {n} messages received")
            _require(target.depth(address, q) == 0, f"{target.name}: messages left in the queue after the drain")
            return figs

        row(f"send batch {batch}", send)
        row(f"receive+delete batch {batch}", receive)

    push_label = f"push prefetch {PREFETCH}"
    if hasattr(target, "push"):
        def push(tick: Callable[[int], None]) -> dict[str, Any]:
            q = _queue(target, address, "push")
            n = count or min(COUNT_MAX, max(1000, out[2]["figures"]["messages"]))  # as many as send batch 10 sent
            _checked(target.send(address, q, QueuePlan(body_bytes, 10, IN_FLIGHT, n), lambda k: None), "push fill")
            plan = QueuePlan(body_bytes, 1, IN_FLIGHT, n, prefetch=PREFETCH, timeout_s=ROW_TIMEOUT_S)
            figs = _timed(server, lambda: target.push(address, q, plan, tick), push_label, body_bytes)
            _require(target.depth(address, q) == 0, f"{target.name}: messages left in the queue after the push run")
            return figs

        row(push_label, push)
    else:
        progress.step(f"{target.name} {push_label}")
        progress.done(f"skipped: {target.no_push}")
        skipped.setdefault(f"{target.name} push", target.no_push)
    row("long-poll wake-up", lambda tick: wake(target, server, body_bytes, count, duration or DEFAULT_DURATION_S))
    return out


def wake(target: Any, server: Any, body_bytes: int, count: int | None, duration_s: float) -> dict[str, Any]:
    """A receiver process long-polls; this process sends one message, waits for the receiver's report, pauses
    WAKE_GAP_S, and again: ``count`` rounds or as many as fit in ``duration_s``. Latency: send call to receipt."""
    address = server.address
    q = _queue(target, address, "wake")
    job = {"target": target.name, "address": address, "queue": q}
    child = subprocess.Popen([sys.executable, "-m", "millpond.bench.queue_waiter", json.dumps(job)],
                             stdout=subprocess.PIPE, text=True)
    hist = stats.new_histogram()
    try:
        _require(_read_line(child, READY_TIMEOUT_S) == "ready", f"{target.name}: the wake-up receiver did not start")

        def received() -> None:
            line = _read_line(child, READY_TIMEOUT_S)
            _require(line.startswith("us "), f"{target.name}: the wake-up receiver reported {line!r}")
            stats.record_us(hist, float(line[3:]))

        cpu0 = server.cpu_s()
        first = time.perf_counter()
        error = target.wake_send(address, q, _rounds(count, duration_s), body_bytes, WAKE_GAP_S, received)
        wall = time.perf_counter() - first
        cpu1 = server.cpu_s()
        _require(not error, f"{target.name} wake-up sender: {error}")
        end = json.loads(_read_line(child, READY_TIMEOUT_S) or '{"error": "no result"}')
        _require(not end["error"], f"{target.name} wake-up receiver: {end['error']}")
    finally:
        _reap(child)
    rounds = hist.get_total_count()
    return {"messages": rounds, "wall_s": wall, "messages_per_s": None, "mb_per_s": None,
            **stats.latency_figures(hist), "server_cpu_us_per_message": _per_message_us(cpu0, cpu1, rounds)}


def _rounds(count: int | None, duration_s: float) -> Iterator[int]:
    stop_at = time.perf_counter() + duration_s
    for seq in range(min(count or WAKE_ROUNDS_MAX, WAKE_ROUNDS_MAX)):
        if count is None and time.perf_counter() >= stop_at:
            return
        yield seq


def _timed(server: Any, call: Callable[[], QueueOutcome], what: str, body_bytes: int) -> dict[str, Any]:
    cpu0, client0 = server.cpu_s(), time.process_time()
    out = _checked(call(), what)
    cpu1, client1 = server.cpu_s(), time.process_time()
    wall = out.last - out.first
    return {"messages": out.messages, "wall_s": wall,
            "messages_per_s": out.messages / wall if wall > 0 else None,
            "mb_per_s": out.messages * body_bytes / 1e6 / wall if wall > 0 else None,
            **stats.latency_figures(stats.merge([out.latency_hdr])),
            "server_cpu_us_per_message": _per_message_us(cpu0, cpu1, out.messages),
            "client_cpu_us_per_message": _per_message_us(client0, client1, out.messages)}


def _checked(out: QueueOutcome, what: str) -> QueueOutcome:
    _require(not out.error, f"{what}: {out.error}")
    _require(out.messages > 0, f"{what}: no message went through")
    return out


def _queue(target: Any, address: str, kind: str) -> str:
    name = bench_name(kind)
    target.create(address, name)
    return name


def _tick(progress: Progress, label: str) -> Callable[[int], None]:
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        progress.update(0.5, f"{done:,} messages")

    return tick


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise BenchAborted(message)


def _per_message_us(cpu0: float | None, cpu1: float | None, n: int) -> float | None:
    return None if cpu0 is None or cpu1 is None or not n else (cpu1 - cpu0) * 1e6 / n


def _read_line(proc: subprocess.Popen, timeout_s: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            return ""
    return proc.stdout.readline().strip()


def _reap(child: subprocess.Popen) -> None:
    try:
        child.wait(5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    if child.stdout is not None:
        child.stdout.close()


# ---- summary and report ----
FIGURES = ("messages_per_s", "mb_per_s", "p50_ms", "p99_ms", "max_ms", "messages", "wall_s",
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


def goals(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 11's goals on millpond's fsync=always rows: the three thresholds, then ahead of RabbitMQ on every row
    (messages/s higher; for the wake-up, p50 lower). A goal whose rows did not run is not listed."""
    first = base_target(summary)
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
        figure, op = ("p50_ms", "<") if label == "long-poll wake-up" else ("messages_per_s", ">")
        a, b = m[figure]["median"], p[figure]["median"]
        if a is None or b is None:
            continue
        out.append({"goal": f"{label}: ahead of RabbitMQ durable ({figure}), fsync=always", "value": a, "op": op,
                    "threshold": b, "met": a > b if op == ">" else a < b})
    return out


def table(doc: dict[str, Any]) -> str:
    summary = doc["results"]
    lines = [f"millpond bench queues: {doc['repeat']} repeat(s){', median (min-max)' if doc['repeat'] > 1 else ''},"
             f" {doc['body_bytes']:,} B bodies", f"machine: {machine.one_line(doc['machine'])}"]
    for name, about in doc["about"].items():
        if name != "millpond":
            lines.append(f"{name}: {about['server']}; {about['client']}; {about['durability']}")
    lines += [f"skipped {name}: {why}" for name, why in doc["skipped"].items()]
    lines.append("")
    head = ["row", "target", "fsync", "messages/s", "MB/s", "p50 ms", "p99 ms", "max ms", "ratio"]
    body = []
    order = {label: i for i, label in enumerate(ROWS)}
    for g in sorted(summary, key=lambda g: (order.get(g["row"], 99), not targets.is_millpond(g["target"]))):
        body.append([g["row"], g["target"], g["fsync"], report.cell(g["messages_per_s"], "{:,.0f}"),
                     report.cell(g["mb_per_s"], "{:,.1f}"), report.cell(g["p50_ms"], "{:.2f}"),
                     report.cell(g["p99_ms"], "{:.2f}"), report.cell(g["max_ms"], "{:.2f}"),
                     _ratio(g, counterpart(g, summary))])
    lines += report._columns(head, body, left=3)
    lines += ["", RATE_MEANING, RATIO_MEANING]
    cpu = ["  " + line for line in cpu_lines(summary)]
    if cpu:
        lines += [""] + cpu
    if doc["goals"]:
        lines += ["", "goals (issue 11):"]
        for goal in doc["goals"]:
            lines.append(f"  [{'met' if goal['met'] else 'MISSED'}] {goal['goal']}: {goal['value']:,.2f} "
                         f"(needs {goal['op']} {goal['threshold']:,.2f})")
    return "\n".join(lines)


def base_target(summary: list[dict[str, Any]]) -> str | None:
    """The millpond the run is about: this tree if it ran, else the first revision (``--target millpond@REV``)."""
    ours = [g["target"] for g in summary if targets.is_millpond(g["target"])]
    return "millpond" if "millpond" in ours else next(iter(ours), None)


def counterpart(g: dict[str, Any], summary: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row of the run's millpond that ``g`` is compared with: for a revision, the same row at the same fsync
    mode; for a peer, the same row at fsync=always (else the first mode that ran); None for the run's own rows."""
    first = base_target(summary)
    if g["target"] == first:
        return None
    same = [m for m in summary if m["target"] == first and m["row"] == g["row"]]
    if targets.is_millpond(g["target"]):
        return next((m for m in same if m["fsync"] == g["fsync"]), None)
    return next((m for m in same if m["fsync"] == "always"), same[0] if same else None)


def cpu_lines(summary: list[dict[str, Any]]) -> list[str]:
    """``target row (fsync): broker CPU x µs/message, client CPU y µs/message`` for each row that has them (the
    client's: this process's CPU in the row's call, all of its work on the row's messages)."""
    return [f"{g['target']} {g['row']} ({g['fsync']}): " + ", ".join(
        f"{who} CPU {g[name]['median']:.1f} µs/message" for who, name in (
            ("broker", "server_cpu_us_per_message"), ("client", "client_cpu_us_per_message"))
        if g.get(name, {}).get("median") is not None)
        for g in summary if g["server_cpu_us_per_message"]["median"] is not None]


def _ratio(g: dict[str, Any], ours: dict[str, Any] | None) -> str:
    if ours is None:
        return "-"
    figure = "p50_ms" if g["row"] == "long-poll wake-up" else "messages_per_s"
    a, b = ours[figure]["median"], g[figure]["median"]
    return "-" if a is None or not b else f"{a / b:.2f}x"


def _summary_line(f: dict[str, Any]) -> str:
    parts = [] if f["messages_per_s"] is None else [f"{f['messages_per_s']:,.0f} messages/s"]
    if f["p50_ms"] is not None:
        parts.append(f"p50 {f['p50_ms']:.2f} ms, p99 {f['p99_ms']:.2f} ms")
    return ", ".join(parts + [f"{f['messages']:,} messages"])


def _command(args: argparse.Namespace) -> str:
    from millpond.bench.cli import command_line

    return command_line(args)


# ---- bench/RESULTS.md ----
RESULTS_COMMAND = "millpond bench queues --fsync always,never --repeat 3"


def markdown(doc: dict[str, Any] | None) -> list[str]:
    """The queues section of bench/RESULTS.md: the table and goals of a queues document, or, when the run had
    none, a line saying which command fills it."""
    lines = ["## Queues (issue 11)", ""]
    if not doc:
        return lines + [f"Not measured in this run: `{RESULTS_COMMAND}` measures send and receive+delete at batch "
                        f"1 and 10, push delivery (prefetch {PREFETCH}) and the long-poll wake-up, beside RabbitMQ "
                        "and Redis where installed; `millpond bench results` includes it.", ""]
    mach = doc["machine"]
    lines += [f"Command: `{doc['command']}`; {doc['repeat']} repeat(s), {doc['body_bytes']:,} B bodies.", ""]
    lines += [f"- {name}: {about['server']}; {about['client']}; {about['durability']}"
              for name, about in doc["about"].items() if name != "millpond"]
    lines += [f"- **{name} not measured**: {why}" for name, why in doc["skipped"].items()]
    lines += ["", f"**Machine:** {machine.one_line(mach)}.", "",
              "| row | target | durability | messages/s | MB/s | p50 ms | p99 ms | max ms | ratio |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    order = {label: i for i, label in enumerate(ROWS)}
    summary = doc["results"]
    for g in sorted(summary, key=lambda g: (order.get(g["row"], 99), not targets.is_millpond(g["target"]))):
        durability = f"fsync={g['fsync']}" if targets.is_millpond(g["target"]) else g["fsync"]
        lines.append("| " + " | ".join([g["row"], g["target"], durability] + [
            report.cell(g[n], f) for n, f in (("messages_per_s", "{:,.0f}"), ("mb_per_s", "{:,.1f}"),
                                              ("p50_ms", "{:.2f}"), ("p99_ms", "{:.2f}"), ("max_ms", "{:.2f}"))]
            + [_ratio(g, counterpart(g, summary))]) + " |")
    lines += ["", RATE_MEANING + " " + RATIO_MEANING, "", "CPU per message (medians):", ""]
    lines += [f"- {line}" for line in cpu_lines(summary)] + [""]
    if doc["goals"]:
        lines += [f"**Machine:** {machine.one_line(mach)}. Goals on millpond's fsync=always rows:", "",
                  "| goal | value | needs | |", "|---|---:|---|---|"]
        lines += [f"| {g['goal']} | {g['value']:,.2f} | {g['op']} {g['threshold']:,.2f} | "
                  f"{'met' if g['met'] else '**missed**'} |" for g in doc["goals"]]
        lines.append("")
    return lines
