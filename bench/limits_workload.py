# `millpond bench limits`: what limit policies cost (issue 4). Three figures: ns per admission check per algorithm
# and memory per 100,000 tracked keys (the core, in-process: bench.limits_micro), and produce throughput through a
# broker subprocess with the built-in default policy on vs off, measured side by side in one run on one broker
# (the policy deleted and set again between runs, A B A B, so drift hits both alike). Owns the on/off runs and their
# report; must not know how the producer loop measures (the millpond target does) or the limiter's internals.
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any, Callable

from millpond.bench import limits_micro, machine, payload, targets
from millpond.bench.plans import ProducePlan
from millpond.bench.workloads import BenchAborted, _check_produced, bench_name

DEFAULT_DURATION_S = 2.0
DEFAULT_PAIRS = 3


def produce_on_off(address: str, *, pairs: int, duration_s: float, record_bytes: int, warmup_s: float,
                   server: Any, batch_bytes: int | None = None, linger_s: float | None = None) -> dict[str, Any]:
    """``pairs`` x (policy off, policy on) produce runs of ``duration_s`` seconds each against ``address``, one
    fresh topic per run (``batch_bytes``/``linger_s``: the producer's, None = the client's defaults; small
    batches make the per-request check weigh more). Returns per-run figures and the medians; overhead in %
    = (off - on) / off x 100 on the median records/s (> 0: the policy costs throughput), and the same on the
    server's CPU us per record (on - off, > 0: the policy costs CPU).
    Leaves the default policy set. Raises ``BenchAborted`` if the broker has other policies."""
    from millpond.broker.config import load_config
    from millpond.client.sync import connect

    target = targets.get("millpond")
    default = load_config(None).default_limit_policy()
    if default is None:
        raise BenchAborted("default_limit_records_per_s is 0 in the default config: nothing to compare")
    vals = payload.values(record_bytes, None)

    def set_policy(on: bool) -> None:
        with connect(address, client_id="bench-admin") as c:
            names = {p.name for p in c.list_limits()}
            if on and "default" not in names:
                c.set_limit("default", scope=f"{default['scope']}:{default['pattern']}", unit=default["unit"],
                            algorithm=default["algorithm"], mode=default["mode"], **default["params"])
            if not on and "default" in names:
                c.delete_limit("default")
            others = sorted(n for n in names if n != "default")
            if others:
                raise BenchAborted(f"the broker has other limit policies ({', '.join(others)}): the figures would "
                                   "mix them in")

    def one_run(duration: float) -> dict[str, float]:
        topic = bench_name("limits")
        target.create_topic(address, topic, 1)
        cpu0 = server.cpu_s()
        out = target.produce(address, topic, ProducePlan(values=vals, count=None, duration_s=duration,
                                                         batch_bytes=batch_bytes, linger_s=linger_s),
                             lambda n: None)
        cpu1 = server.cpu_s()
        records = _check_produced(target, address, topic, [out], None)
        wall = out.last_ack - out.first_send
        cpu = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) * 1e6 / records
        return {"records": records, "records_per_s": records / wall, "server_cpu_us_per_record": cpu}

    def admitted_requests() -> int:
        with connect(address, client_id="bench-admin") as c:
            stats = {p.name: p.stats for p in c.list_limits()}["default"]
        return stats.admitted if stats is not None else 0

    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    try:
        if warmup_s > 0:
            set_policy(True)
            one_run(warmup_s)
        for _ in range(pairs):
            for label in ("off", "on"):
                set_policy(label == "on")  # set afresh: its counters start at 0
                runs[label].append(one_run(duration_s))
                if label == "on":
                    runs[label][-1]["records_per_request"] = runs[label][-1]["records"] / max(1, admitted_requests())
    finally:
        set_policy(True)
    med = {label: statistics.median(r["records_per_s"] for r in rs) for label, rs in runs.items()}
    cpu = {label: _median([r["server_cpu_us_per_record"] for r in rs]) for label, rs in runs.items()}
    return {
        "runs": runs,
        "records_per_request": statistics.median(r["records_per_request"] for r in runs["on"]),
        "records_per_s_off": med["off"],
        "records_per_s_on": med["on"],
        "overhead_pct": (med["off"] - med["on"]) / med["off"] * 100,
        "server_cpu_us_per_record_off": cpu["off"],
        "server_cpu_us_per_record_on": cpu["on"],
        "server_cpu_overhead_pct": None if not cpu["off"] or cpu["on"] is None
        else (cpu["on"] - cpu["off"]) / cpu["off"] * 100,
        "policy": default,
    }


def run(args: argparse.Namespace) -> int:
    """The `limits` workload from the bench command line (``--duration-s``, ``--repeat`` = on/off pairs,
    ``--record-bytes``, ``--batch-bytes``, ``--linger-s``, ``--fsync`` default never, ``--broker``,
    ``--warmup-s``, ``--json``)."""
    note = (lambda text: None) if args.no_progress else (lambda text: print(text, file=sys.stderr, flush=True))
    try:
        doc = measure(args, note)
    except BenchAborted as exc:
        print(f"\nmillpond bench: ABORTED, no figures reported: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
    else:
        print(table(doc))
    return 0


def measure(args: argparse.Namespace, note: Callable[[str], None]) -> dict[str, Any]:
    """The limits document (what ``--json`` prints) for these options; `full` and `results` call this too.
    Raises ``BenchAborted``."""
    pairs = args.repeat or DEFAULT_PAIRS
    duration = args.duration_s or DEFAULT_DURATION_S
    record_bytes = args.record_bytes or 100
    fsync = args.fsync or "never"
    note("limits: admission checks per algorithm and memory per 100,000 keys (in-process)...")
    started = time.perf_counter()
    micro = limits_micro.run(checks=20_000, keys=100_000, repeat=5)
    note(f"limits: produce with the default policy off/on, {pairs} pair(s) of {duration:g} s, fsync={fsync}...")
    target = targets.get("millpond")
    with target.server(fsync, args.broker) as server:
        produce = produce_on_off(server.address, pairs=pairs, duration_s=duration, record_bytes=record_bytes,
                                 warmup_s=args.warmup_s, server=server, batch_bytes=args.batch_bytes,
                                 linger_s=args.linger_s)
        fsync = server.fsync
    return {"workload": "limits", "machine": machine.describe(), "fsync": fsync, "record_bytes": record_bytes,
            "batch_bytes": args.batch_bytes, "linger_s": args.linger_s,
            "duration_s": duration, "pairs": pairs, "elapsed_s": time.perf_counter() - started, "micro": micro,
            "produce": produce}


def table(doc: dict[str, Any]) -> str:
    micro, prod = doc["micro"], doc["produce"]
    lines = [f"millpond bench limits: {machine.one_line(doc['machine'])}",
             "", "admission check, ns per call (best of 5; includes ~15 ns loop overhead)",
             f"{'algorithm':<20}{'admit ns':>10}{'refuse ns':>11}{'peek ns':>9}{'B/key':>7}{'MB/100k keys':>14}"]
    for name, row in micro["algorithms"].items():
        lines.append(f"{name:<20}{row['admit_ns']:>10.0f}{row['refuse_ns']:>11.0f}{row['peek_ns']:>9.0f}"
                     f"{row['bytes_per_key']:>7.0f}{row['bytes_per_key'] * 100_000 / 1e6:>14.1f}")
    for n, ns in micro["policy_set_admit_ns"].items():
        lines.append(f"PolicySet.admit (what the server calls), {n} matching polic{'y' if n == '1' else 'ies'}: "
                     f"{ns:.0f} ns")
    lines.append("memory: tracemalloc of 100,000 keys' state and dict slots (the key strings excluded)")
    batching = "client default batching" if doc["batch_bytes"] is None else f"batch_bytes={doc['batch_bytes']}"
    lines += ["", f"produce, {doc['record_bytes']} B records, {batching}, fsync={doc['fsync']}, one producer, "
                  f"{doc['pairs']} x (off, on) runs of {doc['duration_s']:g} s, interleaved",
              f"{'default policy':<16}{'records/s (median)':>20}{'runs':>32}{'server CPU us/record':>22}"]
    for label in ("off", "on"):
        each = " ".join(f"{r['records_per_s']:,.0f}" for r in prod["runs"][label])
        cpu = prod[f"server_cpu_us_per_record_{label}"]
        cpu_text = "-" if cpu is None else f"{cpu:.2f}"
        lines.append(f"{label:<16}{prod['records_per_s_' + label]:>20,.0f}{each:>32}{cpu_text:>22}")
    cpu_over = prod["server_cpu_overhead_pct"]
    lines.append(f"overhead of the default policy: {prod['overhead_pct']:+.1f} % throughput"
                 + ("" if cpu_over is None else f", {cpu_over:+.1f} % server CPU per record"))
    lines.append(f"(policy: {prod['policy']['algorithm']} {prod['policy']['params']} per {prod['policy']['scope']}"
                 f", {prod['policy']['unit']}; one check per produce request, {prod['records_per_request']:,.0f} "
                 "records per request here)")
    return "\n".join(lines)


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None
