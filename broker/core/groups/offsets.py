# Committed offsets, durable through the log: every commit is appended as keyed records to the internal topic
# __millpond_offsets (as Kafka's __consumer_offsets: the latest record per key wins, a group tombstone erases a
# group), and the in-memory table is rebuilt by replaying that topic on start; checkpoints (broker/core/log/internal.py)
# restate the table as the same keyed records, so the topic holds about the live table rather than every commit
# ever made. Owns the record layout of that topic.
# Must not know about members, epochs, the wire protocol, clocks or trio; its only IO is through the LogManager.
from __future__ import annotations

import logging
from typing import Any, Iterable, Iterator, Mapping

import msgpack

from millpond.broker.core.groups.types import AtTimestamp, Committed, TopicPartition
from millpond.broker.core.log import LogManager, PartitionLog
from millpond.broker.core.log.internal import Checkpoints, RecordsWriter, open_internal
from millpond.broker.wire.batch import Record, encode_batch, read_header
from millpond.broker.wire.errors import InvalidRequestError, UnknownTopicOrPartitionError

OFFSETS_TOPIC = "__millpond_offsets"
# One partition: every commit of every group in one total order, so replay is a single pass. No time or size
# retention (the latest record per key is what counts): only checkpoints delete its segments.
OFFSETS_TOPIC_CONFIG = {"retention_ms": -1, "retention_bytes": -1}
_OFFSET_KEY = "o"  # key ["o", group, topic, partition] -> value {"offset", "metadata", "ts"}
_GROUP_KEY = "g"  # key ["g", group] -> empty value: a tombstone erasing every earlier record of the group
_TOPIC_KEY = "t"  # a deleted topic: its offsets are dropped from every group (as Kafka does)
_TOMBSTONE = b""


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


class OffsetStore:
    """Committed offsets per (consumer group, topic, partition).

    ``log=None`` keeps them in memory only (tests of the coordinator's state machine). Otherwise call ``open``
    once before anything else. Writes return the offset the offsets partition's ``high_watermark`` must reach
    before the write may be acknowledged (under ``fsync="always"`` the server's grouped fsync moves it).
    """

    def __init__(self, log: LogManager | None = None, *, logger: logging.Logger | None = None,
                 checkpoint: dict[str, Any] | None = None) -> None:
        self._logman = log
        self._plog: PartitionLog | None = None
        self.checkpoints: Checkpoints | None = None
        self._checkpoint = checkpoint or {}  # keyword arguments of Checkpoints
        self._log = logger or logging.getLogger("millpond.groups")
        self._offsets: dict[str, dict[TopicPartition, Committed]] = {}
        self._memory_end = 0

    @property
    def partition_log(self) -> PartitionLog | None:
        """The partition holding the records (None in memory mode)."""
        return self._plog

    def open(self, now_ms: int) -> None:
        """Create the internal topic if it is missing, then replay it. ``now_ms``: wall clock, ms since the epoch.

        Undecodable records (which only a bug or a hand-made write could produce) are skipped and logged; a stored
        damaged range of the topic (docs/data-safety.md) is skipped and logged: only the commits stored there are lost.
        """
        if self._logman is None:
            return
        self._plog = open_internal(self._logman, OFFSETS_TOPIC, OFFSETS_TOPIC_CONFIG, now_ms)
        self.checkpoints = Checkpoints(self._plog, lambda: RecordsWriter(_table_records(self._offsets)),
                                       logger=self._log, **self._checkpoint)

        def apply(rec: Record) -> None:
            self._apply(rec.key, rec.value, rec.offset)

        applied = self.checkpoints.replay(apply, apply)  # a checkpoint's records are commits of the live table
        self._log.info("replayed %d record(s) of %s: %d consumer group(s)", applied, OFFSETS_TOPIC, len(self._offsets))

    def _apply(self, key: bytes | None, value: bytes, at: int) -> None:
        try:
            k = msgpack.unpackb(key) if key is not None else None
            if isinstance(k, list) and len(k) == 2 and k[0] == _GROUP_KEY and isinstance(k[1], str):
                if value == _TOMBSTONE:
                    self._offsets.pop(k[1], None)
                return
            if isinstance(k, list) and len(k) == 2 and k[0] == _TOPIC_KEY and isinstance(k[1], str):
                if value == _TOMBSTONE:
                    self._forget_topic(k[1])
                return
            if not (isinstance(k, list) and len(k) == 4 and k[0] == _OFFSET_KEY):
                raise ValueError(f"unknown key {k!r}")
            _, group, topic, partition = k
            v = msgpack.unpackb(value)
            committed = Committed(int(v["offset"]), str(v.get("metadata", "")), int(v.get("ts", -1)))
            self._offsets.setdefault(group, {})[TopicPartition(topic, partition)] = committed
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            self._log.warning("%s: skipping undecodable record at offset %d: %s", OFFSETS_TOPIC, at, exc)

    # -- reading ---------------------------------------------------------------------------------------------------

    def groups(self) -> list[str]:
        """Groups holding at least one committed offset, sorted."""
        return sorted(g for g, table in self._offsets.items() if table)

    def committed(self, group: str) -> dict[TopicPartition, Committed]:
        """A copy of the group's committed offsets (empty if none)."""
        return dict(self._offsets.get(group, {}))

    def get(self, group: str, tp: TopicPartition) -> Committed | None:
        return self._offsets.get(group, {}).get(tp)

    # -- writing ---------------------------------------------------------------------------------------------------

    def commit(self, group: str, entries: Mapping[TopicPartition, Committed], now_ms: int) -> int:
        """Store ``entries`` as one batch (all or nothing), then update the table. Returns the offset to wait for.

        Raises ``StorageError`` and then changes nothing.
        """
        if not entries:
            return self._end()
        records = [(now_ms, *_commit_record(group, tp, c), None) for tp, c in sorted(entries.items())]
        end = self._append(records, now_ms)
        self._offsets.setdefault(group, {}).update(entries)
        self._step(now_ms)
        return end

    def delete_group(self, group: str, now_ms: int) -> int:
        """Write the group's tombstone, then forget its offsets. Returns the offset to wait for.

        Raises ``StorageError`` and then changes nothing.
        """
        end = self._append([(now_ms, _pack([_GROUP_KEY, group]), _TOMBSTONE, None)], now_ms)
        self._offsets.pop(group, None)
        self._step(now_ms)
        return end

    def delete_topic(self, topic: str, now_ms: int) -> int | None:
        """A topic was deleted: write its tombstone and drop its committed offsets from every group, so a topic
        created again under that name starts from nothing. Returns the offset to wait for, or None if no group had
        committed on it. Raises ``StorageError`` and then changes nothing."""
        if not any(tp.topic == topic for table in self._offsets.values() for tp in table):
            return None
        end = self._append([(now_ms, _pack([_TOPIC_KEY, topic]), _TOMBSTONE, None)], now_ms)
        self._forget_topic(topic)
        self._step(now_ms)
        return end

    def _step(self, now_ms: int) -> None:
        """Checkpoint work, once the table holds what was just appended (internal.py)."""
        if self.checkpoints is not None:
            self.checkpoints.step(now_ms)

    def background_step(self, now_ms: int, now: float) -> None:
        """A background step of the checkpoint being written, if any (internal.py)."""
        if self.checkpoints is not None:
            self.checkpoints.step(now_ms, background=True)

    def _forget_topic(self, topic: str) -> None:
        for group in list(self._offsets):
            table = self._offsets[group]
            for tp in [tp for tp in table if tp.topic == topic]:
                del table[tp]
            if not table:
                del self._offsets[group]

    def _end(self) -> int:
        return self._plog.log_end_offset if self._plog is not None else self._memory_end

    def _append(self, records: list[tuple[int, bytes | None, bytes, None]], now_ms: int) -> int:
        if self._plog is None:
            if self._logman is not None:
                raise RuntimeError("OffsetStore.open was not called")
            self._memory_end += len(records)
            return self._memory_end
        blob = encode_batch(records)
        header = read_header(blob)
        base = self._plog.append(blob, header, now_ms)
        return base + header.record_count


def _commit_record(group: str, tp: TopicPartition, c: Committed) -> tuple[bytes, bytes]:
    return (_pack([_OFFSET_KEY, group, tp.topic, tp.partition]),
            _pack({"offset": c.offset, "metadata": c.metadata, "ts": c.commit_timestamp_ms}))


def _table_records(table: dict[str, dict[TopicPartition, Committed]]) -> Iterator[tuple[bytes, bytes]]:
    """The committed offsets table as commits, for a checkpoint: each key present at the start, read again when
    written (a key erased meanwhile is skipped; one committed meanwhile is in the events)."""
    for group, tp in [(group, tp) for group, mine in table.items() for tp in mine]:
        c = table.get(group, {}).get(tp)
        if c is not None:
            yield _commit_record(group, tp, c)


def resolve_reset(
    log: LogManager, topic: str, to: str | int | AtTimestamp, partitions: Iterable[int] | None = None
) -> dict[TopicPartition, int]:
    """Offsets for a group reset of ``topic`` (all partitions, or ``partitions``), as kafka-consumer-groups
    --reset-offsets: ``"earliest"`` (log start), ``"latest"`` (high watermark), ``AtTimestamp(ms)`` (first record
    at or after it, else the high watermark), or an explicit offset clamped into [log start, high watermark].
    Raises ``UnknownTopicOrPartitionError``, ``InvalidRequestError``, ``StorageError``, ``CorruptBatchError``.
    """
    found_topic = log.topics.get(topic)
    if found_topic is None:
        raise UnknownTopicOrPartitionError(f"unknown topic {topic!r}", topic=topic)
    numbers = range(len(found_topic.partitions)) if partitions is None else partitions
    out = {}
    for p in numbers:
        plog = log.partition(topic, p)
        start, hw = plog.log_start_offset, plog.high_watermark
        if to == "earliest":
            offset = start
        elif to == "latest":
            offset = hw
        elif isinstance(to, AtTimestamp):
            found = plog.offset_for_timestamp(to.timestamp_ms, hw)
            offset = found[0] if found is not None else hw
        elif type(to) is int:
            offset = min(max(to, start), hw)
        else:
            raise InvalidRequestError(f"reset to must be 'earliest', 'latest', a timestamp or an offset, got {to!r}")
        out[TopicPartition(topic, p)] = offset
    return out
