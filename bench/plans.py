# What a workload asks a target to do (plans) and what the target hands back (outcomes): plain values that cross
# process boundaries (pickled to a producer process, JSON to the e2e consumer). Must not know any broker or client.
from __future__ import annotations

from dataclasses import dataclass, field

FSYNC_MODES = ("always", "interval", "never")


def spread_label(workload: str, keys: int, partitions: int) -> str:
    """How a step's records are spread, for its name: `` keys=1,000 partitions=64`` for keyed produce,
    `` partitions=N`` when N is not 1, else nothing (so the runs of ``--partitions 1,64`` are rows of their own)."""
    if keys and workload == "produce":
        return f" keys={keys:,} partitions={partitions}"
    return f" partitions={partitions}" if partitions != 1 else ""


@dataclass(frozen=True)
class Params:
    """Everything a benchmark step is parametrised by. Sizes in bytes, durations in seconds, rates per second.

    ``count`` wins over ``duration_s`` when both are set. ``linger_s``/``batch_bytes`` of None mean the client's
    defaults (e2e defaults to ``linger_s=0``: a latency run must not wait for a batch to fill).
    """

    record_bytes: int = 100
    count: int | None = None
    duration_s: float | None = 3.0
    partitions: int = 1
    producers: int = 1
    batch_bytes: int | None = None
    linger_s: float | None = None
    fsync: str = "always"
    payload_file: str | None = None
    rate_per_s: int = 5000
    warmup_s: float = 0.5
    broker: str | None = None  # HOST:PORT of a running broker; None = start one per fsync mode
    keys: int = 0  # produce: records carry one of this many keys (b"key-0" ...), cycled; 0: no keys (sticky)


@dataclass(frozen=True)
class ProducePlan:
    """One producer's job: send ``count`` records (or until ``duration_s`` has passed) cycling ``values``.

    ``start_at`` is a ``time.perf_counter()`` instant (CLOCK_MONOTONIC, system-wide on Linux) at which every
    producer process begins, so N producers start together; 0 means at once.
    """

    values: tuple[bytes, ...]
    count: int | None
    duration_s: float | None
    batch_bytes: int | None
    linger_s: float | None
    start_at: float = 0.0
    partitions: int = 1  # bounds how many records are buffered ahead of the acks
    keys: int = 0  # records carry keys b"key-0" .. b"key-{keys-1}", cycled (Kafka's partitioner spreads them)
    sample_every: int = 64  # one ack latency sample per this many records (the oldest of each group)

    def next_batch(self, sent: int, size: int, elapsed_s: float) -> int:
        """How many records to send next, at most ``size``, with ``sent`` sent ``elapsed_s`` after the first send:
        0 once ``count`` are sent or, without a count, once ``duration_s`` has passed."""
        if self.count is not None:
            return max(0, min(size, self.count - sent))
        return size if self.duration_s is None or elapsed_s < self.duration_s else 0


@dataclass
class ProduceOutcome:
    """Times are ``time.perf_counter()`` seconds; ``latency_hdr`` is an encoded HDR histogram of µs."""

    records: int
    payload_bytes: int
    first_send: float
    last_ack: float
    latency_hdr: bytes
    failed: int = 0
    error: str = ""


@dataclass(frozen=True)
class ConsumePlan:
    """Read ``expected`` records from offset 0 of every partition; abort if more, fewer or out of order."""

    expected: int
    timeout_s: float = 60.0


@dataclass
class ConsumeOutcome:
    records: int
    first_record: float  # perf_counter() when the consumer was opened (the measured span starts at the request)
    last_record: float
    error: str = ""


@dataclass(frozen=True)
class E2EPlan:
    """Open-loop produce at ``rate_per_s`` for ``count`` records, the first ``warmup`` not measured.

    Each value carries ``time.monotonic_ns()`` at send (bytes 0-8, big-endian) and its sequence number (8-16).
    """

    count: int
    warmup: int
    rate_per_s: int
    values: tuple[bytes, ...]
    batch_bytes: int | None
    linger_s: float | None
    timeout_s: float = 60.0


@dataclass
class E2EProduceOutcome:
    records: int
    payload_bytes: int
    first_send: float
    last_send: float
    last_ack: float
    lag_max_s: float  # how far the sender ever fell behind its schedule (open loop: should stay near 0)
    failed: int = 0
    error: str = ""


@dataclass
class E2EConsumeOutcome:
    records: int
    latency_hdr: bytes  # encoded HDR histogram of µs, warm-up records excluded
    error: str = ""
    extra: dict = field(default_factory=dict)
