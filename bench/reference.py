# Reference figures copied from ../shared/reference/peers.md: what peer brokers measured on the project's 2-core
# machine type. Printed beside results as reference figures, never as figures measured in the run at hand.
# Must not know how millpond is driven.
from __future__ import annotations

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

# The goals issue 2 and issue 5 set, against which a run is reported.
GOALS = (
    ("produce", 100, "always", "records_per_s", ">=", 3 * 86_484, "3x Redis Streams produce"),
    ("consume", 100, "always", "records_per_s", ">=", 3 * 176_464, "3x Redis Streams consume"),
    ("e2e", None, "always", "p99_ms", "<", 3.0, "e2e p99 < 3 ms at 5k rec/s, fsync=always"),
    ("produce", 100, "never", "records_per_s", ">=", 1_000_000, ">= 1M rec/s produce, fsync=never"),
)
