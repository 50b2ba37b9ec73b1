# Plain value records the client returns: broker limits, topic descriptions, delivery metadata, statistics.
# Frozen dataclasses only; must not know sockets, event loops or the wire encoding.
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from millpond.broker.wire.batch import Record

__all__ = [
    "BrokerLimits",
    "GroupDescription",
    "GroupListing",
    "GroupMemberDescription",
    "GroupPartitionOffsets",
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
    queue_batch_entries_max: int = 10  # entries of a queue batch request; a broker that does not say: SQS's 10


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
    """``describe_topic`` answer. ``config``: ``retention_s``, ``segment_s`` (seconds), ``retention_bytes``,
    ``segment_bytes``, ``index_interval_bytes`` (bytes); -1 = unlimited."""

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
    throttled: int = 0  # THROTTLED answers received (each batch waited retry_after_s and was sent again)
    throttle_wait_s: float = 0.0  # seconds waited on THROTTLED answers, summed over batches
    throttle_time_s: float = 0.0  # seconds in which some batch waited on a THROTTLED answer (wall clock)
    batches_split: int = 0  # batches split to fit a limit policy's max cost (COST_EXCEEDS_LIMIT)
    throttle_policy: str | None = None  # the limit policy of the most recent THROTTLED answer


TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class GroupListing:
    """One consumer group of ``list_groups``: ``state`` is ``empty``, ``reconciling`` or ``stable``."""

    group: str
    state: str
    members: int


@dataclass(frozen=True, slots=True)
class GroupMemberDescription:
    """A member of a described consumer group. ``member_epoch``: the group epoch it has reached (KIP-848); ``state``: its
    reconciliation state (KIP-848: ``stable``, ``unrevoked_partitions``, ``unreleased_partitions``,
    ``left_temporarily``); ``assignment``: partitions it owns now; ``revoking``: told to give up, not yet confirmed."""

    member_id: str
    group_instance_id: str | None
    client_id: str
    host: str
    member_epoch: int
    state: str
    topics: tuple[str, ...]
    assignment: tuple[TopicPartition, ...]
    revoking: tuple[TopicPartition, ...]


@dataclass(frozen=True, slots=True)
class GroupPartitionOffsets:
    """Committed offset (next offset the group reads; -1 = none), end offset (high watermark) and lag (end minus
    committed, records; None when either is unknown) of one partition of a consumer group."""

    topic: str
    partition: int
    committed_offset: int
    metadata: str
    end_offset: int | None
    lag: int | None


@dataclass(frozen=True, slots=True)
class GroupDescription:
    """``describe_group`` answer. ``group_epoch`` (KIP-848's term; the classic protocol's generation): bumped on
    every change of members, subscriptions or partition counts. ``state``: ``empty``, ``reconciling`` or ``stable``."""

    group: str
    state: str
    group_epoch: int
    assignor: str
    members: tuple[GroupMemberDescription, ...]
    offsets: tuple[GroupPartitionOffsets, ...]

    def owners(self) -> dict[TopicPartition, str]:
        """``{(topic, partition): member_id}`` of every owned partition."""
        return {tp: m.member_id for m in self.members for tp in m.assignment}

    @property
    def lag(self) -> int:
        """Total lag over the partitions whose lag is known, in records."""
        return sum(o.lag for o in self.offsets if o.lag is not None)

    @property
    def settled(self) -> bool:
        """True when the group is stable: every member owns exactly its target and nothing is being revoked."""
        return self.state == "stable" and all(m.state in ("stable", "left_temporarily") for m in self.members)
