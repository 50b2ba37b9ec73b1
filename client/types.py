# Plain value records the client returns: broker limits, topic descriptions, delivery metadata, statistics.
# Frozen dataclasses only; must not know sockets, event loops or the wire encoding.
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.wire.batch import Record

__all__ = [
    "BrokerLimits",
    "PartitionDescription",
    "ProducerStatistics",
    "Record",
    "RecordMetadata",
    "TopicDescription",
]


@dataclass(frozen=True, slots=True)
class BrokerLimits:
    """What the broker announced in ``hello``. Sizes in bytes, counts in requests/partitions."""

    frame_bytes_max: int
    batch_bytes_max: int
    requests_in_flight_max: int
    partitions_max: int


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """Where an acknowledged record landed. ``timestamp_ms``: the record's own timestamp (epoch milliseconds)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class PartitionDescription:
    """One partition's offsets (records) and size (bytes). Consumers can read up to ``high_watermark``."""

    partition: int
    log_start_offset: int
    log_end_offset: int
    high_watermark: int
    size_bytes: int
    segments: int


@dataclass(frozen=True, slots=True)
class TopicDescription:
    """``describe_topic`` answer. ``config`` is the wire config (``retention_ms``, ``segment_bytes``...; -1 = unlimited)."""

    name: str
    config: dict[str, Any]
    partitions: tuple[PartitionDescription, ...]

    @property
    def size_bytes(self) -> int:
        return sum(p.size_bytes for p in self.partitions)

    @property
    def records(self) -> int:
        """Records currently kept (end minus start offset, summed over partitions)."""
        return sum(p.log_end_offset - p.log_start_offset for p in self.partitions)


@dataclass(frozen=True, slots=True)
class ProducerStatistics:
    """Counters since the producer opened. ``last_error`` is the most recent delivery failure, if any."""

    records_sent: int
    records_failed: int
    batches_sent: int
    retries: int
    records_buffered: int
    last_error: BaseException | None
