# The `soak` workload (issue 5): a mixed load held for a while, to see whether throughput and the broker's memory
# stay flat. Producer processes send at a steady, open-loop rate (the target's e2e sender) while a consumer group
# (one process per member) reads; once a second the parent samples what was sent, what was consumed and the
# broker subprocess's resident memory (VmRSS), and shows the line. Every record must be consumed exactly once, or
# the run aborts. millpond only: it drives a server-side consumer group. Registers itself in
# bench.workloads.WORKLOADS; must not know how the producer loop sends or how figures are summarised.
from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

from millpond.bench import payload, stats, targets, workloads
from millpond.bench.plans import E2EPlan, Params
from millpond.bench.progress import Progress
from millpond.bench.workloads import BenchAborted, Figures, _check_produced, _require, _settled, bench_name

MEMBERS = 3
PARTITIONS_MIN = 6
DURATION_S_MAX = 3600.0  # one sample a second: the series in the JSON stays bounded
DRAIN_TIMEOUT_S = 30.0  # after the producers stop, how long the group may take to read the rest
SAMPLE_S = 1.0
MB = 1e6  # rss_mb: MB = 10^6 B, as in mb_per_s
REASON = "soak drives a server-side consumer group, which is millpond's only"

_sent: Any = None
_consumed: Any = None
_stop: Any = None


def soak(target: Any, server: Any, params: Params, progress: Progress) -> Figures:
    """For ``params.duration_s`` seconds, ``params.producers`` processes send ``params.rate_per_s`` records/s in
    all (open loop) to a topic of at least 6 partitions, read by a 3-member group that settled before the first
    send. Figures: records_per_s and mb_per_s consumed (first send to last record consumed), rss_mb_start (group
    settled, nothing sent), rss_mb_end (last record consumed), rss_mb_max, and ``series``: one entry a second with
    ``t_s``, ``sent_per_s``, ``consumed_per_s``, ``lag_records`` and ``rss_mb``."""
    _require(target.name == "millpond", REASON)
    duration = params.duration_s or 20.0
    _require(0 < duration <= DURATION_S_MAX, f"soak: --duration-s must be in (0, {DURATION_S_MAX:g}]")
    params = replace(params, partitions=max(params.partitions, PARTITIONS_MIN))
    address = server.address
    topic = bench_name("soak")
    group = workloads.bench_name("soak")
    target.create_topic(address, topic, params.partitions)
    vals = payload.values(params.record_bytes, params.payload_file, stamped=True)
    rates = [len(r) for r in _split_range(params.rate_per_s, params.producers)]
    rss = getattr(server, "rss_bytes", lambda: None)
    ctx = multiprocessing.get_context("spawn")
    sent, consumed, stop = ctx.Value("q", 0), ctx.Value("q", 0), ctx.Value("b", 0)
    series: list[dict[str, Any]] = []
    with ProcessPoolExecutor(MEMBERS + len(rates), mp_context=ctx, initializer=_init,
                             initargs=(sent, consumed, stop)) as pool:
        members = [pool.submit(_member, address, topic, group) for _ in range(MEMBERS)]
        try:
            from millpond.client.sync import connect

            with connect(address, client_id="bench-soak") as c:
                _settled(c, group, MEMBERS, params.partitions)
            rss_start = _mb(rss())
            cpu0 = server.cpu_s()
            plans = [E2EPlan(count=max(1, int(r * duration)), warmup=0, rate_per_s=r, values=vals,
                             batch_bytes=params.batch_bytes, linger_s=params.linger_s) for r in rates if r > 0]
            producers = [pool.submit(_producer, address, topic, plan) for plan in plans]
            _first_send(sent, producers)
            t0 = time.perf_counter()  # the series starts at the first send (not at the producers' spawn)
            last_sent = last_consumed = 0
            last_t = t0
            next_sample = t0 + SAMPLE_S
            total: int | None = None
            give_up = float("inf")
            while True:
                now = time.perf_counter()
                if total is None and all(f.done() for f in producers):
                    outs = [f.result() for f in producers]
                    total = _check_produced(target, address, topic, outs, None)
                    payload_bytes = sum(o.payload_bytes for o in outs)
                    first = min(o.first_send for o in outs)
                    give_up = now + DRAIN_TIMEOUT_S
                if total is not None and consumed.value >= total:
                    t_end = now
                    break
                if now >= give_up:
                    raise BenchAborted(f"soak: the group consumed {consumed.value:,} of {total:,} records "
                                       f"{DRAIN_TIMEOUT_S:g} s after the producers stopped")
                if any(f.done() for f in members):
                    raise BenchAborted(f"soak: a member stopped: {_member_errors(members)}")
                if now >= next_sample:
                    s, n, dt = sent.value, consumed.value, now - last_t
                    point = {"t_s": round(now - t0, 3), "sent_per_s": (s - last_sent) / dt,
                             "consumed_per_s": (n - last_consumed) / dt, "lag_records": s - n,
                             "rss_mb": _mb(rss())}
                    series.append(point)
                    last_sent, last_consumed, last_t = s, n, now
                    next_sample += SAMPLE_S
                    progress.line(series_line(point))
                    progress.update((now - t0) / duration, f"{n:,} records consumed")
                time.sleep(min(0.02, max(0.0, next_sample - time.perf_counter())))
            rss_end = _mb(rss())
            cpu1 = server.cpu_s()
        finally:
            stop.value = 1
        results = [f.result() for f in members]
    errors = [r["error"] for r in results if r["error"]]
    _require(not errors, f"soak: {errors}")
    records = sum(r["records"] for r in results)
    _require(records == total, f"soak: the group consumed {records:,} records, {total:,} were produced")
    wall = t_end - first
    known = [x for x in [rss_start, rss_end] + [p["rss_mb"] for p in series] if x is not None]
    return {
        "records": records,
        "wall_s": wall,
        "records_per_s": records / wall,
        "mb_per_s": payload_bytes / 1e6 / wall,
        **stats.latency_figures(stats.new_histogram()),
        "duration_s": duration,
        "rate_per_s": params.rate_per_s,
        "members": MEMBERS,
        "records_per_member": sorted(r["records"] for r in results),
        "rss_mb_start": rss_start,
        "rss_mb_end": rss_end,
        "rss_mb_max": max(known) if known else None,
        "series": series,
        "server_cpu_us_per_record": workloads._per_record_us(cpu0, cpu1, records),
        "client_cpu_s_per_wall_s": None,
        "latency_kind": None,
    }


def series_line(p: dict[str, Any]) -> str:
    """The per-second line shown while a soak runs."""
    rss = "-" if p["rss_mb"] is None else f"{p['rss_mb']:,.1f} MB"
    return (f"  soak t={p['t_s']:>5.0f} s  sent {p['sent_per_s']:>9,.0f}/s  consumed {p['consumed_per_s']:>9,.0f}/s"
            f"  lag {p['lag_records']:>8,} records  broker RSS {rss}")


def _first_send(sent: Any, producers: list[Any]) -> None:
    give_up = time.perf_counter() + workloads.READY_TIMEOUT_S
    while not sent.value:
        if any(f.done() for f in producers) or time.perf_counter() > give_up:
            errors = [repr(f.exception()) for f in producers if f.done() and f.exception() is not None]
            raise BenchAborted(f"soak: no producer sent a record {errors or ''}")
        time.sleep(0.005)


def _mb(n: int | None) -> float | None:
    return None if n is None else n / MB


def _split_range(total: int, n: int) -> list[range]:
    base, extra = divmod(total, n)
    return [range(base + (1 if i < extra else 0)) for i in range(n)]


def _member_errors(members: list[Any]) -> list[str]:
    return [f.result()["error"] if f.exception() is None else repr(f.exception()) for f in members if f.done()]


def _init(sent: Any, consumed: Any, stop: Any) -> None:
    global _sent, _consumed, _stop
    _sent, _consumed, _stop = sent, consumed, stop


def _producer(address: str, topic: str, plan: E2EPlan) -> Any:
    """One producer process: the target's open-loop sender, counting sends into the shared counter."""
    def tick(n: int) -> None:
        with _sent.get_lock():
            _sent.value += n

    return targets.get("millpond").e2e_produce(address, topic, plan, tick)


def _member(address: str, topic: str, group: str) -> dict[str, Any]:
    """One group member process: consume, counting into the shared counter, until the parent says stop."""
    import trio

    from millpond.client import connect

    async def run() -> dict[str, Any]:
        n = 0
        async with connect(address, client_id="bench-soak-member") as c:
            async with c.consumer(topic, group=group, auto_offset_reset="earliest",
                                  auto_commit_interval_s=1.0) as cons:
                while not _stop.value:
                    got = await cons.getmany(timeout_s=0.1)
                    if got:
                        n += len(got)
                        with _consumed.get_lock():
                            _consumed.value += len(got)
        return {"records": n, "error": ""}

    try:
        return trio.run(run)
    except Exception as exc:  # reported to the parent, which aborts the run loudly
        return {"records": 0, "error": repr(exc)}


workloads.WORKLOADS["soak"] = soak
workloads.MILLPOND_ONLY["soak"] = REASON
