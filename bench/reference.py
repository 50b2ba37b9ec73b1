# Reference figures copied from ../shared/reference/peers.md: what peer brokers measured on the project's 2-core
# machine type. Printed beside results as reference figures, never as figures measured in the run at hand. And the
# issues' goals a run is checked against. Must not know how millpond is driven.
from __future__ import annotations

from typing import NamedTuple

SOURCE = "peers.md, measured 2026-11-29 on a 2-vCPU AMD EPYC KVM guest, CPython 3.11.7"

# (peer, workload, record_bytes) -> figures, median of 3 runs
FIGURES: dict[tuple[str, str, int], dict[str, float]] = {
    ("Redis Streams", "produce", 100): {"records_per_s": 86_484},
    ("Redis Streams", "produce", 1024): {"records_per_s": 67_426},
    ("Redis Streams", "consume", 100): {"records_per_s": 176_464},
    ("Redis Streams", "consume", 1024): {"records_per_s": 130_242},
    ("Redis Streams", "e2e", 100): {"p50_ms": 0.452, "p99_ms": 1.35},
    ("Redis Streams", "e2e", 1024): {"p50_ms": 0.458, "p99_ms": 1.10},
}

class Goal(NamedTuple):
    """A figure of this tree's millpond rows against a threshold: ``workload`` at ``record_bytes`` (None: any) and
    ``fsync``, at ``rate_per_s`` for the fixed-rate workloads (None: any)."""

    workload: str
    record_bytes: int | None
    fsync: str
    figure: str
    op: str  # ">=", "<" or "<="
    threshold: float
    text: str
    rate_per_s: int | None = None


# The goals issues 2, 5 and 8 set, against which a run is reported.
GOALS = (
    Goal("produce", 100, "always", "records_per_s", ">=", 3 * 86_484, "3x Redis Streams produce"),
    Goal("consume", 100, "always", "records_per_s", ">=", 3 * 176_464, "3x Redis Streams consume"),
    Goal("e2e", None, "always", "p99_ms", "<", 3.0, "e2e p99 < 3 ms at 5k rec/s, fsync=always", 5000),
    Goal("produce", 100, "never", "records_per_s", ">=", 1_000_000, ">= 1M rec/s produce, fsync=never"),
    Goal("send_await", 100, "never", "records_per_s", ">=", 5_000, "awaited send >= 5,000 rec/s, fsync=never"),
    Goal("send_await", 100, "always", "records_per_s", ">=", 1_000, "awaited send >= 1,000 rec/s, fsync=always"),
    Goal("e2e", 100, "never", "p50_ms", "<=", 0.35, "e2e p50 <= 0.35 ms at 5k rec/s, fsync=never", 5000),
    Goal("e2e", 100, "never", "p99_ms", "<=", 1.5, "e2e p99 <= 1.5 ms at 5k rec/s, fsync=never", 5000),
    Goal("e2e", 100, "always", "p50_ms", "<=", 1.0, "e2e p50 <= 1.0 ms at 5k rec/s, fsync=always", 5000),
)

# Issue 8: throughput no worse than the previous main's, judged on the ratio this tree / revision of rows measured
# side by side in one run (`--against REV`), at each fsync mode both ran: (workload, record_bytes, figure, op,
# threshold on the ratio, text).
REVISION_GOALS = tuple(
    (workload, size, "records_per_s", ">=", 0.95, f"{workload} {size:,} B within 5% of the revision or better")
    for workload in ("produce", "consume") for size in (100, 1024))
