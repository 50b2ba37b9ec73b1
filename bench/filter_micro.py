# Micro-benchmark of compiled filter policies (broker.core.fanout): records checked per second by
# FilterPolicy.matches for a few typical policies, half of the records passing. In-process and synchronous: it
# measures the core's own cost, so it imports the core directly; it must not know about the server, the client or
# any target.
# Run: python -m millpond.bench.filter_micro [--json]
"""Filter policy matching throughput: records per second through one compiled policy."""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from typing import Any

from millpond.broker.core.fanout import compile_policy

Record = tuple[list[tuple[str, bytes]], bytes]


def _headers(**values: str) -> list[tuple[str, bytes]]:
    return [(name, value.encode()) for name, value in values.items()]


_ORDER = {"store": "example_corp", "event": "order_placed", "price_usd": "210.75", "customer_interests": "soccer",
          "source_ip": "10.0.0.17", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}
_BODY = {"store": "example_corp", "event": "order_placed", "price_usd": 210.75,
         "customer": {"id": 4711, "interests": ["soccer", "rugby", "hockey"], "tier": "gold"},
         "lines": [{"sku": "A-100", "qty": 2}, {"sku": "B-200", "qty": 1}]}

# name -> (policy, scope, a passing record, a failing record)
CASES: dict[str, tuple[dict[str, Any], str, Record, Record]] = {
    "exact string, 1 key": (
        {"event": ["order_placed", "order_cancelled"]}, "MessageAttributes",
        (_headers(**_ORDER), b""), (_headers(**{**_ORDER, "event": "order_shipped"}), b"")),
    "prefix + numeric range + anything-but": (
        {"store": [{"prefix": "example_"}], "price_usd": [{"numeric": [">=", 100, "<", 500]}],
         "customer_interests": [{"anything-but": ["rugby", "tennis"]}]}, "MessageAttributes",
        (_headers(**_ORDER), b""), (_headers(**{**_ORDER, "price_usd": "99.5"}), b"")),
    "$or of two branches": (
        {"store": ["example_corp"], "$or": [{"event": ["order_cancelled"]}, {"price_usd": [{"numeric": [">", 200]}]}]},
        "MessageAttributes",
        (_headers(**_ORDER), b""), (_headers(**{**_ORDER, "price_usd": "150"}), b"")),
    "cidr": (
        {"source_ip": [{"cidr": "10.0.0.0/24"}]}, "MessageAttributes",
        (_headers(**_ORDER), b""), (_headers(**{**_ORDER, "source_ip": "10.0.1.17"}), b"")),
    "body: nested keys, arrays (json parse included)": (
        {"event": ["order_placed"], "customer": {"interests": ["rugby"], "tier": [{"anything-but": "bronze"}]}},
        "MessageBody",
        ([], json.dumps(_BODY).encode()),
        ([], json.dumps({**_BODY, "customer": {**_BODY["customer"], "tier": "bronze"}}).encode())),
}


def matches_per_s(policy: dict[str, Any], scope: str, passing: Record, failing: Record, *, records: int,
                  repeat: int) -> float:
    """The best of ``repeat`` runs of ``records`` calls, alternating the passing and the failing record."""
    matches = compile_policy(policy, scope).matches
    if not matches(*passing) or matches(*failing):
        raise RuntimeError(f"the sample records do not pass and fail {policy}: the figure would be meaningless")
    plan = [passing, failing] * (records // 2)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for headers, value in plan:
            matches(headers, value)
        best = min(best, time.perf_counter_ns() - start)
    return len(plan) / (best / 1e9)


def run(*, records: int = 20_000, repeat: int = 5) -> dict[str, Any]:
    """All figures, as plain data for reports."""
    return {"python": platform.python_version(), "machine": platform.machine(), "records": records,
            "matches_per_s": {name: matches_per_s(*case, records=records, repeat=repeat)
                              for name, case in CASES.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m millpond.bench.filter_micro", description=__doc__)
    parser.add_argument("--records", type=int, default=20_000, help="records per timed run")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs; the fastest is reported")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = run(records=args.records, repeat=args.repeat)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"filter policies, Python {figures['python']} ({figures['machine']}), {args.records:,} records, "
          f"best of {args.repeat}")
    for name, rate in figures["matches_per_s"].items():
        print(f"{name:<50}{rate:>12,.0f} records/s{1e9 / rate:>9,.0f} ns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
