# Micro-benchmark of the pure limiter core (broker.core.limits): nanoseconds per admission check for each
# algorithm and for the policy layer the server calls, and memory per 100,000 tracked keys (tracemalloc).
# In-process and synchronous, unlike the other workloads: it measures the core's own cost, so it imports the core
# directly; it must not know about the server, the client or any target.
# Run: python -m millpond.bench.limits_micro [--json]
from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
import tracemalloc
from typing import Any, Callable

from millpond.broker.core.limits import FixedWindow, LeakyBucket, PolicySet, SlidingLog, SlidingWindow, TokenBucket

S = 1_000_000_000

# name -> factory(max_keys). Limits generous enough that the "admit" runs below are admitted throughout.
ALGORITHMS: dict[str, Callable[[int], Any]] = {
    "leaky_bucket": lambda k: LeakyBucket(rate=1_000_000, burst=1000, max_keys=k),
    "leaky_bucket_shape": lambda k: LeakyBucket(rate=1_000_000, burst=1000, queue=1000, mode="shape", max_keys=k),
    "token_bucket": lambda k: TokenBucket(rate=1_000_000, burst=1000, max_keys=k),
    "token_bucket_debt": lambda k: TokenBucket(rate=1_000_000, burst=1000, debt=True, max_keys=k),
    "fixed_window": lambda k: FixedWindow(limit=1_000_000, window_s=1, max_keys=k),
    "sliding_log": lambda k: SlidingLog(limit=1_000_000, window_s=1, max_keys=k),
    "sliding_window": lambda k: SlidingWindow(limit=1_000_000, window_s=1, max_keys=k),
}


def _best_of(repeat: int, run: Callable[[], int]) -> float:
    """The fastest of ``repeat`` runs, in ns per call (the minimum is the least disturbed by the machine)."""
    return min(run() for _ in range(repeat))


def check_ns(make: Callable[[int], Any], *, checks: int = 50_000, keys: int = 1000,
             repeat: int = 15) -> dict[str, float]:
    """ns per ``acquire`` call: ``admit`` cycles over ``keys`` keys, 1 us apart, all admitted; ``refuse`` hammers
    one exhausted key at one instant; ``peek`` is the non-charging check. Loop overhead included (~15 ns)."""
    names = [f"client-{i:08d}" for i in range(keys)]
    plan = [(names[i % keys], 10 * S + i * 1000) for i in range(checks)]

    def admit() -> int:
        lim = make(keys * 2)
        acquire = lim.acquire
        start = time.perf_counter_ns()
        for key, now in plan:
            acquire(key, 1, now)
        elapsed = time.perf_counter_ns() - start
        if not lim.peek(names[0], 1, plan[-1][1] + S).allowed:
            raise RuntimeError("the admit run was throttled: the figures would mix paths")
        return elapsed / checks

    def refuse() -> int:
        lim = make(16)
        while lim.acquire("hot", 1000, 10 * S).allowed:
            pass
        acquire = lim.acquire
        start = time.perf_counter_ns()
        for _ in range(checks):
            acquire("hot", 1000, 10 * S)
        return (time.perf_counter_ns() - start) / checks

    def peek() -> int:
        lim = make(16)
        lim.acquire("hot", 1, 10 * S)
        look = lim.peek
        start = time.perf_counter_ns()
        for _ in range(checks):
            look("hot", 1, 10 * S)
        return (time.perf_counter_ns() - start) / checks

    return {"admit_ns": _best_of(repeat, admit), "refuse_ns": _best_of(repeat, refuse),
            "peek_ns": _best_of(repeat, peek)}


def policy_ns(*, policies: int = 1, checks: int = 50_000, repeat: int = 15) -> float:
    """ns per ``PolicySet.admit`` with ``policies`` default leaky-bucket policies matching each request (one per
    client on records, then global ones on requests), 100 clients, all admitted: the server's whole per-request
    limits cost."""
    specs = [{"name": "per-client", "scope": "client", "unit": "records", "params": {"rate": 10**7, "burst": 1000}}]
    specs += [{"name": f"global-{i}", "scope": "global", "unit": "requests", "params": {"rate": 10**7, "burst": 1000}}
              for i in range(policies - 1)]
    clients = [f"client-{i}" for i in range(100)]
    plan = [(clients[i % 100], 10 * S + i * 1000) for i in range(checks)]

    def run() -> float:
        ps = PolicySet(specs)
        admit = ps.admit
        start = time.perf_counter_ns()
        for client, now in plan:
            admit(now, client_id=client, topic="orders", records=10, nbytes=1000)
        elapsed = time.perf_counter_ns() - start
        if ps.statistics()["per-client"].throttled:
            raise RuntimeError("the policy run was throttled: the figures would mix paths")
        return elapsed / checks

    return _best_of(repeat, run)


def bytes_per_key(make: Callable[[int], Any], *, keys: int = 100_000) -> float:
    """Memory for ``keys`` tracked keys after one admitted check each (state + dict slot; the key strings are the
    caller's and are excluded), in bytes per key."""
    names = [f"client-{i:08d}" for i in range(keys)]
    lim = make(keys)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key in names:  # one instant: no key turns fresh (and is dropped) while the others arrive
            lim.acquire(key, 1, 10 * S)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    if len(lim) != keys:
        raise RuntimeError(f"{len(lim)} keys tracked, expected {keys}")
    return (after - before) / keys


def run(*, checks: int = 50_000, keys: int = 100_000, repeat: int = 15) -> dict[str, Any]:
    """All figures, as plain data for the bench framework and reports."""
    figures: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                               "checks": checks, "keys_for_memory": keys, "algorithms": {}}
    for name, make in ALGORITHMS.items():
        row = check_ns(make, checks=checks, repeat=repeat)
        row["bytes_per_key"] = bytes_per_key(make, keys=keys)
        figures["algorithms"][name] = row
    figures["policy_set_admit_ns"] = {str(n): policy_ns(policies=n, checks=checks, repeat=repeat) for n in (1, 2, 3)}
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m millpond.bench.limits_micro", description=__doc__)
    parser.add_argument("--checks", type=int, default=50_000, help="checks per timed run")
    parser.add_argument("--keys", type=int, default=100_000, help="tracked keys for the memory figure")
    parser.add_argument("--repeat", type=int, default=15, help="timed runs; the fastest is reported")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = run(checks=args.checks, keys=args.keys, repeat=args.repeat)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"limiter core, Python {figures['python']} ({figures['machine']}), best of {args.repeat}")
    print(f"{'algorithm':<20}{'admit ns':>10}{'refuse ns':>11}{'peek ns':>9}{'B/key':>8}")
    for name, row in figures["algorithms"].items():
        print(f"{name:<20}{row['admit_ns']:>10.0f}{row['refuse_ns']:>11.0f}{row['peek_ns']:>9.0f}"
              f"{row['bytes_per_key']:>8.0f}")
    for n, ns in figures["policy_set_admit_ns"].items():
        print(f"PolicySet.admit, {n} matching polic{'y' if n == '1' else 'ies'}: {ns:.0f} ns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
