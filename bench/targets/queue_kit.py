# What every target of `millpond bench queues` shares: the plan of one run, its outcome, the message bodies (a
# sequence number in front, so the receiving side can tell each message apart), the exactly-once check on the
# receiving side, the send side's claim on the next sequence numbers (count or time bounded), and the registry of
# queue targets. Pure bookkeeping: must not know a client library, an event loop or how figures are summarised.
from __future__ import annotations

import importlib
import os
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable

SEQ = struct.Struct(">q")  # a body's first 8 bytes: its sequence number, from 0 in each queue
BODY_BYTES_MIN = 16  # a wake-up body holds a send stamp and a sequence number
TICK_EVERY = 1000  # messages between progress ticks

# queue target name -> module defining QUEUE_TARGET (or "module:ATTRIBUTE"), imported when asked for, so a peer's
# client library is only needed when that peer runs. The names are those of bench.targets.TARGETS: the same
# server is started the same way.
QUEUE_TARGETS = {
    "millpond": "millpond.bench.targets.millpond_queues",
    "redis": "millpond.bench.targets.redis_queues:DEFAULT",
    "redis-aof": "millpond.bench.targets.redis_queues:AOF",
    "redis-aof-always": "millpond.bench.targets.redis_queues:AOF_ALWAYS",
    "rabbitmq": "millpond.bench.targets.rabbitmq_queues",
}


def get(name: str) -> Any:
    """The queue target ``name`` (KeyError if there is none)."""
    module, _, attr = QUEUE_TARGETS[name].partition(":")
    return getattr(importlib.import_module(module), attr or "QUEUE_TARGET")


@dataclass(frozen=True)
class QueuePlan:
    """One run against one queue. ``batch``: messages per request (1-10, SQS's batch limit); ``in_flight``:
    requests outstanding at once (for a peer: its pipeline depth or unconfirmed window, counted in requests of
    ``batch``). A send runs until ``count`` messages or, without a count, ``duration_s`` seconds; a receive or a
    push runs until ``count`` messages (what the queue was filled with) or fails after ``timeout_s``.
    ``prefetch``: the push window in messages. ``body_bytes``: at least 16 (a wake-up body's stamp and sequence
    number). A send without a count stops at ``count_max`` messages even before ``duration_s``."""

    body_bytes: int
    batch: int = 1
    in_flight: int = 32
    count: int | None = None
    duration_s: float | None = None
    prefetch: int = 100
    timeout_s: float = 60.0
    count_max: int = 500_000  # a time-bounded send stops here too (millpond's default queue bound is 1,000,000)


@dataclass
class QueueOutcome:
    """``messages`` sent and acknowledged (or received and deleted); ``first``/``last``: ``perf_counter()`` at the
    first request and at the last acknowledgement; ``latency_hdr``: encoded HDR histogram of µs per request (send:
    call to ack; receive: receive call to its delete's ack), or b"" where the target has none; ``error``: the
    first failure (the workload then aborts)."""

    messages: int
    first: float
    last: float
    latency_hdr: bytes = b""
    error: str = ""


class Bodies:
    """``body(seq)``: ``body_bytes`` bytes, the sequence number in front of random filler (one filler per run)."""

    def __init__(self, body_bytes: int) -> None:
        if body_bytes < BODY_BYTES_MIN:
            raise ValueError(f"a queue benchmark message needs at least {BODY_BYTES_MIN} bytes")
        self.filler = os.urandom(body_bytes - SEQ.size)
        self.pack = SEQ.pack

    def body(self, seq: int) -> bytes:
        return self.pack(seq) + self.filler


class Claims:
    """The send side's sequence numbers, handed out ``batch`` at a time to however many concurrent senders: an
    empty range once ``count`` are claimed or, without a count, once ``duration_s`` has passed since the first
    claim or ``count_max`` are claimed."""

    def __init__(self, plan: QueuePlan) -> None:
        self.count = plan.count if plan.count is not None else plan.count_max
        self.duration_s = None if plan.count is not None else plan.duration_s
        self.next = 0
        self.first = 0.0

    def claim(self, n: int) -> range:
        now = time.perf_counter()
        if not self.next:
            self.first = now
        elif self.duration_s is not None and now - self.first >= self.duration_s:
            return range(0)
        stop = min(self.count, self.next + n)
        got = range(self.next, stop)
        self.next = max(self.next, stop)
        return got


class Seen:
    """The receiving side's check: each of the ``expected`` sequence numbers exactly once. ``add(body)`` returns ''
    or what is wrong (a repeat, a number never sent)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.bits = bytearray(expected)
        self.count = 0

    def add(self, body: bytes) -> str:
        seq = SEQ.unpack_from(body)[0]
        if not 0 <= seq < self.expected:
            return f"message {seq} was never sent (expected 0-{self.expected - 1})"
        if self.bits[seq]:
            return f"message {seq} received twice"
        self.bits[seq] = 1
        self.count += 1
        return ""


class Ticker:
    """Calls ``tick(n)`` every TICK_EVERY messages counted (and the rest at ``flush``), for the progress line."""

    def __init__(self, tick: Callable[[int], None]) -> None:
        self.tick = tick
        self.pending = 0

    def __call__(self, n: int) -> None:
        self.pending += n
        if self.pending >= TICK_EVERY:
            self.tick(self.pending)
            self.pending = 0

    def flush(self) -> None:
        if self.pending:
            self.tick(self.pending)
            self.pending = 0


def wake_body(seq: int, body_bytes: int) -> bytes:
    """A wake-up round's body: ``time.monotonic_ns()`` now, then the sequence number, padded to ``body_bytes``."""
    head = struct.pack(">qq", time.monotonic_ns(), seq)
    return head + bytes(max(0, body_bytes - len(head)))


def wake_latency_us(body: bytes) -> tuple[float, int]:
    """The µs since a wake-up body was made (``monotonic_ns`` is one clock for every process) and its number."""
    stamp, seq = struct.unpack_from(">qq", body)
    return (time.monotonic_ns() - stamp) / 1000, seq
