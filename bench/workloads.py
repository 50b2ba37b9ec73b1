# The workloads: what each measures, over which span, and the checks that make its figures honest (warm-up
# excluded, span from first send to last ack, every record accounted for exactly once, or the run aborts). Each
# drives any target through the bench.targets interface and returns figures whose names carry their units.
# New workloads (send_await, limits, rebalance, soak) register in WORKLOADS. Must not know a broker's client
# library, except the two consumer-group workloads at the end (group_consume, rebalance): server-side consumer
# groups are millpond's alone among the targets, so they drive the millpond client directly and refuse any other.
from __future__ import annotations

import itertools
import json
import multiprocessing
import secrets
import selectors
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable

from millpond.bench import payload, stats, targets
from millpond.bench.plans import ConsumePlan, E2EPlan, Params, ProduceOutcome, ProducePlan
from millpond.bench.progress import Progress

READY_TIMEOUT_S = 30
SPAWN_LEAD_S = 2.0  # producer processes start this long after being asked: enough to import and connect
# What a run creates (topics, groups, queues) is named with a token of the run as well as a counter, so runs of
# several bench processes against one --broker never collide (the counter alone starts at 1 in each).
RUN_TOKEN = secrets.token_hex(3)
_topic_ids = itertools.count(1)


class BenchAborted(RuntimeError):
    """A run whose numbers cannot be trusted (lost, repeated or failed records): reported, never tabulated."""


@dataclass
class Filled:
    """A topic a produce run left behind, for a consume run to read: its name, records and payload bytes."""

    topic: str
    records: int
    payload_bytes: int


Figures = dict[str, Any]


def bench_name(kind: str) -> str:
    """``bench-KIND-TOKEN-N``: a topic, group or queue name no other bench run against the same broker uses."""
    return f"bench-{kind}-{RUN_TOKEN}-{next(_topic_ids)}"



def _span(progress: Progress, params: Params, total: int | None) -> Callable[[int], None]:
    """A tick callback that moves the bar by count (when known) or by elapsed time (duration runs)."""
    done = 0
    start = time.perf_counter()

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if total:
            progress.update(done / total, f"{done:,} records")
        elif params.duration_s:
            progress.update((time.perf_counter() - start) / params.duration_s, f"{done:,} records")

    return tick


def produce(target: Any, server: Any, params: Params, progress: Progress) -> tuple[Figures, Filled]:
    """Records/s and MB/s from the first send to the last ack, and sampled ack latency, for N producers."""
    vals = payload.values(params.record_bytes, params.payload_file)
    address = server.address
    topic = bench_name("produce")
    target.create_topic(address, topic, params.partitions)
    if params.warmup_s > 0:  # a separate topic: warm connections, code paths and broker caches, not counted
        warm = bench_name("warmup")
        target.create_topic(address, warm, params.partitions)
        out = target.produce(address, warm, _produce_plan(params, vals, None, params.warmup_s), lambda n: None)
        _check_produced(target, address, warm, [out], None)
    cpu0 = server.cpu_s()
    counts = _split(params.count, params.producers)
    client_cpu: float | None = None
    if params.producers == 1:
        t_cpu = time.process_time()
        outs = [target.produce(address, topic, _produce_plan(params, vals, counts[0], params.duration_s),
                               _span(progress, params, params.count))]
        client_cpu = _client_cpu_s(target, t_cpu)
    else:
        outs = _produce_in_processes(target, address, topic, params, vals, counts, progress)
    cpu1 = server.cpu_s()
    records = _check_produced(target, address, topic, outs, params.count)
    first = min(o.first_send for o in outs)
    last = max(o.last_ack for o in outs)
    wall = last - first
    payload_bytes = sum(o.payload_bytes for o in outs)
    figs: Figures = {
        "records": records,
        "wall_s": wall,
        "records_per_s": records / wall,
        "mb_per_s": payload_bytes / 1e6 / wall,
        **stats.latency_figures(stats.merge(o.latency_hdr for o in outs)),
        "server_cpu_us_per_record": _per_record_us(cpu0, cpu1, records),
        "client_cpu_s_per_wall_s": None if client_cpu is None else client_cpu / wall,
        "latency_kind": "ack",
    }
    return figs, Filled(topic, records, payload_bytes)


def consume(target: Any, server: Any, params: Params, progress: Progress, filled: Filled | None = None) -> Figures:
    """Records/s and MB/s reading a pre-filled topic from offset 0 with one consumer (filled here if not given)."""
    address = server.address
    if filled is None:
        progress.update(0.0, "filling the topic (not measured)", force=True)
        _, filled = produce(target, server, params, Progress(1, enabled=False))
    if params.warmup_s > 0:  # read something else first: connection, decoder and page cache warm
        warm = bench_name("warmup")
        target.create_topic(address, warm, params.partitions)
        vals = payload.values(params.record_bytes, params.payload_file)
        out = target.produce(address, warm, _produce_plan(params, vals, None, params.warmup_s / 2), lambda n: None)
        _require(target.consume(address, warm, ConsumePlan(out.records), lambda n: None).error == "",
                 "warm-up consume failed")
    cpu0 = server.cpu_s()
    t_cpu = time.process_time()
    out = target.consume(address, filled.topic, ConsumePlan(filled.records),
                         _span(progress, params, filled.records))
    client_cpu = _client_cpu_s(target, t_cpu)
    cpu1 = server.cpu_s()
    _require(not out.error, f"consume of {filled.topic}: {out.error}")
    _require(out.records == filled.records, f"consumed {out.records} records, {filled.records} were produced")
    wall = out.last_record - out.first_record
    return {
        "records": out.records,
        "wall_s": wall,
        "records_per_s": out.records / wall,
        "mb_per_s": filled.payload_bytes / 1e6 / wall,
        **stats.latency_figures(stats.new_histogram()),
        "server_cpu_us_per_record": _per_record_us(cpu0, cpu1, out.records),
        "client_cpu_s_per_wall_s": None if client_cpu is None else client_cpu / wall,
        "latency_kind": None,
    }


def e2e(target: Any, server: Any, params: Params, progress: Progress) -> Figures:
    """End-to-end latency (send() in this process to receipt in a consumer process) at a fixed, open-loop rate."""
    address = server.address
    vals = payload.values(params.record_bytes, params.payload_file, stamped=True)
    rate = params.rate_per_s
    measured = params.count if params.count is not None else int(rate * (params.duration_s or 5.0))
    warmup = int(rate * params.warmup_s)
    total = warmup + measured
    timeout_s = total / rate + 30
    topic = bench_name("e2e")
    target.create_topic(address, topic, params.partitions)
    job = {"target": target.name, "address": address, "topic": topic, "count": total, "warmup": warmup,
           "rate_per_s": rate, "timeout_s": timeout_s}
    child = subprocess.Popen([sys.executable, "-m", "millpond.bench.e2e_consumer", json.dumps(job)],
                             stdout=subprocess.PIPE, text=True)
    try:
        _require(_read_line(child, READY_TIMEOUT_S) == "ready", "the e2e consumer process did not get ready")
        plan = E2EPlan(count=total, warmup=warmup, rate_per_s=rate, values=vals, batch_bytes=params.batch_bytes,
                       linger_s=params.linger_s, timeout_s=timeout_s)
        cpu0 = server.cpu_s()
        out = target.e2e_produce(address, topic, plan, _span(progress, params, total))
        cpu1 = server.cpu_s()
        line = _read_line(child, timeout_s)
    finally:
        if child.poll() is None:
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if child.stdout is not None:
            child.stdout.close()
    _require(line.startswith("{"), "the e2e consumer process gave no result")
    got = json.loads(line)
    _require(not out.failed and not out.error, f"e2e produce: {out.failed} record(s) failed: {out.error}")
    _require(not got["error"], f"e2e consume: {got['error']}")
    _require(got["records"] == total == out.records, f"e2e: sent {out.records}, consumed {got['records']}, "
                                                     f"planned {total}")
    span = out.last_send - out.first_send
    hist = stats.merge([got["latency_hdr"].encode("ascii")])
    return {
        "records": measured,
        "wall_s": span,
        "records_per_s": (total - 1) / span if span > 0 else None,  # achieved send rate over the whole run
        "mb_per_s": out.payload_bytes / 1e6 / span if span > 0 else None,
        **stats.latency_figures(hist),
        "rate_per_s": rate,
        "sender_lag_max_ms": out.lag_max_s * 1000,
        "server_cpu_us_per_record": _per_record_us(cpu0, cpu1, total),
        "client_cpu_s_per_wall_s": None,
        "latency_kind": "e2e",
    }


def send_await(target: Any, server: Any, params: Params, progress: Progress) -> Figures:
    """Records/s and per-send latency of ``await producer.send(topic, value)`` one record at a time, with the
    client's default producer settings (``--batch-bytes``/``--linger-s`` override them): what an application that
    waits for each acknowledgement gets. A peer does its client's one-command round trip (Redis: one XADD).
    Every send is timed (HDR); records/s from the first send to the last ack; the broker must hold every record."""
    vals = payload.values(params.record_bytes, params.payload_file)
    address = server.address
    topic = bench_name("send-await")
    target.create_topic(address, topic, params.partitions)
    if params.warmup_s > 0:  # a separate topic: connection, code paths and the broker warm, not counted
        warm = bench_name("warmup")
        target.create_topic(address, warm, params.partitions)
        out = target.send_await(address, warm, _produce_plan(params, vals, None, params.warmup_s), lambda n: None)
        _check_produced(target, address, warm, [out], None)
    cpu0 = server.cpu_s()
    t_cpu = time.process_time()
    out = target.send_await(address, topic, _produce_plan(params, vals, params.count, params.duration_s),
                            _span(progress, params, params.count))
    client_cpu = _client_cpu_s(target, t_cpu)
    cpu1 = server.cpu_s()
    records = _check_produced(target, address, topic, [out], params.count)
    wall = out.last_ack - out.first_send
    return {
        "records": records,
        "wall_s": wall,
        "records_per_s": records / wall if wall > 0 else None,
        "mb_per_s": out.payload_bytes / 1e6 / wall if wall > 0 else None,
        **stats.latency_figures(stats.merge([out.latency_hdr])),
        "server_cpu_us_per_record": _per_record_us(cpu0, cpu1, records),
        "client_cpu_s_per_wall_s": None if client_cpu is None or wall <= 0 else client_cpu / wall,
        "latency_kind": "send",
    }


# name -> function(target, server, params, progress): the workloads a step may name (group ones: at the end)
WORKLOADS: dict[str, Callable[..., Any]] = {"produce": produce, "consume": consume, "e2e": e2e,
                                             "send_await": send_await}
# workload -> the target methods it needs beyond the common ones: a target without them skips its steps
TARGET_METHODS: dict[str, tuple[str, ...]] = {"send_await": ("send_await",)}


def _client_cpu_s(target: Any, process_time_before: float) -> float | None:
    """CPU seconds the client used in the target call just made: this process's, or, for a target that runs its
    client in a process of its own (a millpond revision), what that process reported."""
    reported = getattr(target, "client_cpu_s", None)
    if reported is not None:
        return reported()
    return time.process_time() - process_time_before


def _produce_plan(params: Params, vals: tuple[bytes, ...], count: int | None, duration_s: float | None,
                  start_at: float = 0.0) -> ProducePlan:
    return ProducePlan(values=vals, count=count, duration_s=None if count is not None else duration_s,
                       batch_bytes=params.batch_bytes, linger_s=params.linger_s, start_at=start_at,
                       partitions=params.partitions, keys=params.keys)


def _split(count: int | None, n: int) -> list[int | None]:
    if count is None:
        return [None] * n
    base, extra = divmod(count, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def _check_produced(target: Any, address: str, topic: str, outs: list[ProduceOutcome], planned: int | None) -> int:
    """Every record acknowledged, none failed, and the broker holds exactly as many: else abort."""
    sent = sum(o.records for o in outs)
    failed = sum(o.failed for o in outs)
    _require(failed == 0, f"{failed} record(s) failed to produce to {topic}: {[o.error for o in outs if o.error]}")
    _require(planned is None or sent == planned, f"{sent} records acknowledged, {planned} planned")
    held = target.topic_records(address, topic)
    kept = sum(end - start for start, end in held.values())
    _require(kept == sent, f"the broker holds {kept} records of {topic}, {sent} were acknowledged")
    return sent


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise BenchAborted(message)


def _per_record_us(cpu0: float | None, cpu1: float | None, records: int) -> float | None:
    if cpu0 is None or cpu1 is None or not records:
        return None
    return (cpu1 - cpu0) * 1e6 / records


def _read_line(proc: subprocess.Popen, timeout_s: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            return ""
    return proc.stdout.readline().strip()


# ---- N producer processes ----
_counter: Any = None


def _init_child(counter: Any) -> None:
    global _counter
    _counter = counter


def _child_produce(target_name: str, address: str, topic: str, plan: ProducePlan) -> ProduceOutcome:
    def tick(n: int) -> None:
        with _counter.get_lock():
            _counter.value += n

    return targets.get(target_name).produce(address, topic, plan, tick)


def _produce_in_processes(target: Any, address: str, topic: str, params: Params, vals: tuple[bytes, ...],
                          counts: list[int | None], progress: Progress) -> list[ProduceOutcome]:
    """One process per producer (each its own GIL), all starting at one perf_counter instant."""
    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("q", 0)
    start_at = time.perf_counter() + SPAWN_LEAD_S
    total = params.count
    with ProcessPoolExecutor(len(counts), mp_context=ctx, initializer=_init_child, initargs=(counter,)) as pool:
        futures = [pool.submit(_child_produce, target.name, address, topic,
                               _produce_plan(params, vals, c, params.duration_s, start_at)) for c in counts]
        while not all(f.done() for f in futures):
            time.sleep(0.1)
            done = counter.value
            if total:
                progress.update(done / total, f"{done:,} records")
            elif params.duration_s:
                progress.update((time.perf_counter() - start_at) / params.duration_s, f"{done:,} records")
        return [f.result() for f in futures]


def with_defaults(params: Params, **changes: Any) -> Params:
    return replace(params, **changes)


# ---- consumer groups (millpond only) ----
GROUP_MEMBERS = 3
GROUP_PARTITIONS_MIN = 6
REBALANCE_SESSION_S = 3.0  # members' session_timeout_s: a killed member is noticed this long after its death
REBALANCE_ROUNDS = 3
SETTLE_TIMEOUT_S = 30.0


def _millpond_only(target: Any, workload: str) -> None:
    _require(target.name == "millpond", f"{workload}: server-side consumer groups are millpond's only")


def group_consume(target: Any, server: Any, params: Params, progress: Progress) -> Figures:
    """Records/s and MB/s of a 3-member consumer group (one process each) reading a pre-filled topic of at least
    6 partitions from its start: from the first member's join to the last record, so the group's own joins and
    incremental rebalances are inside the span. Every record must be consumed exactly once, or the run aborts."""
    _millpond_only(target, "group_consume")
    params = replace(params, partitions=max(params.partitions, GROUP_PARTITIONS_MIN))
    progress.update(0.0, "filling the topic (not measured)", force=True)
    _, filled = produce(target, server, params, Progress(1, enabled=False))
    address = server.address
    group = bench_name("group")
    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("q", 0)
    start_at = time.perf_counter() + SPAWN_LEAD_S
    cpu0 = server.cpu_s()
    with ProcessPoolExecutor(GROUP_MEMBERS, mp_context=ctx, initializer=_init_child, initargs=(counter,)) as pool:
        futures = [pool.submit(_group_member, address, filled.topic, group, filled.records, start_at)
                   for _ in range(GROUP_MEMBERS)]
        while not all(f.done() for f in futures):
            time.sleep(0.1)
            progress.update(counter.value / filled.records, f"{counter.value:,} records")
        outs = [f.result() for f in futures]
    cpu1 = server.cpu_s()
    errors = [o["error"] for o in outs if o["error"]]
    _require(not errors, f"group_consume: {errors}")
    records = sum(o["records"] for o in outs)
    _require(records == filled.records, f"the group consumed {records} records, {filled.records} were produced")
    wall = max(o["last"] for o in outs) - min(o["first"] for o in outs)
    return {
        "records": records,
        "wall_s": wall,
        "records_per_s": records / wall,
        "mb_per_s": filled.payload_bytes / 1e6 / wall,
        **stats.latency_figures(stats.new_histogram()),
        "members": GROUP_MEMBERS,
        "records_per_member": sorted(o["records"] for o in outs),
        "server_cpu_us_per_record": _per_record_us(cpu0, cpu1, records),
        "client_cpu_s_per_wall_s": None,
        "latency_kind": None,
    }


def rebalance(target: Any, server: Any, params: Params, progress: Progress) -> Figures:
    """Seconds from a member's death (SIGKILL) and from a member's join to a settled assignment (describe_group
    polled until the group is stable, every partition owned and every member stable), for a 3-member group on a
    6-partition topic, members with ``session_timeout_s`` = REBALANCE_SESSION_S; medians of REBALANCE_ROUNDS
    rounds (each: kill one, wait, start one, wait)."""
    _millpond_only(target, "rebalance")
    from millpond.client.sync import connect

    address = server.address
    topic = bench_name("rebalance")
    partitions = max(params.partitions, GROUP_PARTITIONS_MIN)
    target.create_topic(address, topic, partitions)
    group = bench_name("rebalance")
    ctx = multiprocessing.get_context("spawn")
    deaths: list[float] = []
    joins: list[float] = []
    members: list[Any] = []

    def start() -> tuple[Any, Any]:
        joined_at = ctx.Value("d", 0.0)
        proc = ctx.Process(target=_rebalance_member, args=(address, topic, group, joined_at), daemon=True)
        proc.start()
        members.append(proc)
        return proc, joined_at

    try:
        with connect(address, client_id="bench-rebalance") as c:
            started = [start() for _ in range(GROUP_MEMBERS)]
            _settled(c, group, GROUP_MEMBERS, partitions)
            _require(all(j.value > 0 for _, j in started), "rebalance: a member did not report its join")
            for i in range(REBALANCE_ROUNDS):
                victim = members.pop(0)
                killed_at = time.perf_counter()
                victim.kill()  # SIGKILL: no leave, the broker notices only when the session lapses
                deaths.append(_settled(c, group, GROUP_MEMBERS - 1, partitions) - killed_at)
                victim.join(5)
                _, joined_at = start()
                settled_at = _settled(c, group, GROUP_MEMBERS, partitions)
                _require(joined_at.value > 0, "rebalance: the new member did not report its join")
                joins.append(settled_at - joined_at.value)
                progress.update((i + 1) / REBALANCE_ROUNDS, f"round {i + 1}: death {deaths[-1]:.2f} s, "
                                                             f"join {joins[-1]:.2f} s")
    finally:
        for proc in members:
            proc.kill()
            proc.join(5)
    return {
        "records": 0,
        "wall_s": sum(deaths) + sum(joins),
        "records_per_s": None,
        "mb_per_s": None,
        **stats.latency_figures(stats.new_histogram()),
        "session_timeout_s": REBALANCE_SESSION_S,
        "death_to_settled_s": stats_median(deaths),
        "join_to_settled_s": stats_median(joins),
        "death_to_settled_all_s": deaths,
        "join_to_settled_all_s": joins,
        "server_cpu_us_per_record": None,
        "client_cpu_s_per_wall_s": None,
        "latency_kind": None,
    }


WORKLOADS.update({"group_consume": group_consume, "rebalance": rebalance})
# workloads that only millpond can run -> why (a peer is skipped for them with this line; bench.soak adds itself)
MILLPOND_ONLY: dict[str, str] = {"group_consume": "server-side consumer groups are millpond's only",
                                 "rebalance": "server-side consumer groups are millpond's only"}


def stats_median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _settled(c: Any, group: str, members: int, partitions: int) -> float:
    """Poll describe_group until stable with ``members`` members owning ``partitions`` partitions; the
    perf_counter() time it was first seen so (aborts after SETTLE_TIMEOUT_S)."""
    give_up = time.perf_counter() + SETTLE_TIMEOUT_S
    while time.perf_counter() < give_up:
        try:
            d = c.describe_group(group)
        except Exception:  # UNKNOWN_GROUP until the first join
            d = None
        if d is not None and d.settled and len(d.members) == members and len(d.owners()) == partitions:
            return time.perf_counter()
        time.sleep(0.005)
    raise BenchAborted(f"consumer group {group} did not settle with {members} members in {SETTLE_TIMEOUT_S} s")


def _group_member(address: str, topic: str, group: str, total: int, start_at: float) -> dict[str, Any]:
    """One member process of group_consume: consume until the group as a whole has ``total`` records."""
    import trio

    from millpond.client import connect

    async def run() -> dict[str, Any]:
        perf = time.perf_counter
        await trio.sleep(max(0.0, start_at - perf()))
        n, first, last = 0, perf(), perf()
        async with connect(address, client_id="bench-group-member") as c:
            async with c.consumer(topic, group=group, auto_offset_reset="earliest",
                                  auto_commit_interval_s=1.0) as cons:
                while _counter.value < total:
                    got = await cons.getmany(timeout_s=0.1)
                    if got:
                        n += len(got)
                        last = perf()
                        with _counter.get_lock():
                            _counter.value += len(got)
        return {"records": n, "first": first, "last": last, "error": ""}

    try:
        return trio.run(run)
    except Exception as exc:  # reported to the parent, which aborts the run loudly
        return {"records": 0, "first": 0.0, "last": 0.0, "error": repr(exc)}


def _rebalance_member(address: str, topic: str, group: str, joined_at: Any) -> None:
    """One member process of rebalance: join (noting when, in perf_counter time) and consume until killed."""
    import trio

    from millpond.client import connect

    async def run() -> None:
        async with connect(address, client_id="bench-rebalance-member") as c:
            cons = c.consumer(topic, group=group, auto_offset_reset="earliest",
                              session_timeout_s=REBALANCE_SESSION_S)
            joined_at.value = time.perf_counter()
            async with cons:
                while True:
                    await cons.getmany(timeout_s=1.0)

    trio.run(run)
