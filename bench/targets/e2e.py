# The e2e workload's client-side bookkeeping, the same for every target: the stamp at the front of each value, the
# open-loop schedule the producer sends by, and the consumer's exactly-once check and latency histogram. Pure
# bookkeeping: must not know a client library, an event loop or how figures are summarised.
from __future__ import annotations

import struct
import time
from typing import Any

from millpond.bench import payload, stats
from millpond.bench.plans import E2EConsumeOutcome, E2EPlan

STAMP = struct.Struct(">qq")  # monotonic_ns at send, sequence number: the first payload.STAMP_BYTES of a value
assert STAMP.size == payload.STAMP_BYTES


class Schedule:
    """Open loop: record ``i`` is due at ``t0 + i / rate``, ``t0`` being when the schedule was made. The caller
    sends ``due()``, stamping each record with ``value(j)`` as it hands it over, then sets ``sent`` to the range's
    stop; ``lag_max_s`` is how far the sender ever fell behind."""

    def __init__(self, plan: E2EPlan) -> None:
        self.rate, self.count = plan.rate_per_s, plan.count
        self.tails = [v[STAMP.size:] for v in plan.values]
        self.payload_bytes = payload.cycled_bytes(plan.values, plan.count)  # stamped values: 16 bytes and more
        self.sent = 0
        self.lag_max_s = 0.0
        self.t0 = time.perf_counter()

    def due(self) -> range:
        """The records due by now and not yet sent (empty if none)."""
        now = time.perf_counter()
        due = min(self.count, int((now - self.t0) * self.rate) + 1)
        if due <= self.sent:
            return range(0)
        self.lag_max_s = max(self.lag_max_s, now - (self.t0 + self.sent / self.rate))
        return range(self.sent, due)

    def value(self, j: int) -> bytes:
        """Record ``j``'s value, stamped with ``monotonic_ns()`` now."""
        return STAMP.pack(time.monotonic_ns(), j) + self.tails[j % len(self.tails)]

    def wait_s(self) -> float:
        """Seconds until the next record is due (0 if it is due already)."""
        return max(0.0, self.t0 + self.sent / self.rate - time.perf_counter())


class Arrivals:
    """The consumer's side: each sequence number exactly once, and ``now - stamp`` recorded for all but the first
    ``plan.warmup``."""

    def __init__(self, plan: E2EPlan) -> None:
        self.count, self.warmup = plan.count, plan.warmup
        self.seen = bytearray(plan.count)
        self.hist = stats.new_histogram()

    def check(self, value: Any, now_ns: int) -> str:
        """Take one value received at ``now_ns`` (monotonic); '' if its sequence number was new and in range."""
        sent, seq = STAMP.unpack_from(value)
        if not 0 <= seq < self.count or self.seen[seq]:
            return f"sequence {seq} unexpected or repeated"
        self.seen[seq] = 1
        if seq >= self.warmup:
            stats.record_us(self.hist, (now_ns - sent) / 1000)
        return ""

    def outcome(self, records: int, error: str = "") -> E2EConsumeOutcome:
        return E2EConsumeOutcome(records, stats.encode(self.hist), error)
