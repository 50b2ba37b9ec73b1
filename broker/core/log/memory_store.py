# The memory implementation of the storage contract (store.py), as NATS's memstore: each partition's batches in
# lists, in segments that roll and expire by the same rules as the file store's; no files, durable at once (as
# durable as it will ever be), nothing left after the process ends. Must not know about files, producers, high
# watermarks, fsync policy or the wire protocol.
from __future__ import annotations

import errno
from bisect import bisect_right
from typing import Any, Callable, Iterable, Iterator

from millpond.broker.core.log.batch_format import BatchFormat
from millpond.broker.core.log.store import NO_TIMESTAMP
from millpond.broker.core.log.topic_config import TopicConfig


class MemorySegment:
    """Batches (stamped, as a read returns them) with their base offsets and max timestamps."""

    __slots__ = ("base_offset", "next_offset", "size", "max_timestamp", "rolling_ms", "batches", "bases", "max_ts")

    def __init__(self, base_offset: int) -> None:
        self.base_offset = base_offset
        self.next_offset = base_offset
        self.size = 0
        self.max_timestamp = NO_TIMESTAMP
        self.rolling_ms: int | None = None
        self.batches: list[bytes] = []
        self.bases: list[int] = []
        self.max_ts: list[int] = []


def _closed() -> OSError:
    return OSError(errno.EBADF, "the partition is closed")


class MemoryPartitionStore:
    """One partition's batches in memory. See ``store.PartitionStore`` for the contract."""

    durable_at_once = True

    def __init__(self, fmt: BatchFormat) -> None:
        self.fmt = fmt
        self.segments: list[MemorySegment] = []
        self._bases: list[int] = []
        self._closed = False
        self.retired = False

    def open(self, now_ms: int) -> None:
        self.segments = [MemorySegment(0)]
        self._bases = [0]

    def headers(self, since: int | None = None) -> Iterable[tuple]:
        unpack = self.fmt.unpack
        first = len(self.segments) - 1 if since is None else max(bisect_right(self._bases, since) - 1, 0)
        return [unpack(b, 0) for seg in self.segments[first:] for b in seg.batches]

    def append(self, stamp: bytes, body: memoryview, base: int, end: int, max_ts: int, now_ms: int) -> None:
        if self._closed:
            raise _closed()
        seg = self.segments[-1]
        data = b"".join((stamp, body))
        seg.batches.append(data)
        seg.bases.append(base)
        seg.max_ts.append(max_ts)
        seg.size += len(data)
        seg.next_offset = end
        if max_ts > seg.max_timestamp:
            seg.max_timestamp = max_ts
        if seg.rolling_ms is None:
            seg.rolling_ms = now_ms

    def roll(self) -> None:
        if self._closed:
            raise _closed()
        base = self.segments[-1].next_offset
        self.segments.append(MemorySegment(base))
        self._bases.append(base)

    def read(self, offset: int, max_bytes: int, upto: int) -> bytes | memoryview:
        if self._closed:
            raise _closed()
        segments = self.segments
        i = bisect_right(self._bases, offset) - 1
        seg = segments[i]
        j = bisect_right(seg.bases, offset) - 1
        first = seg.batches[j]
        pieces = [first]
        total = len(first)
        j += 1
        while True:
            if j == len(seg.batches):
                i += 1
                if i == len(segments):
                    break
                seg, j = segments[i], 0
                continue
            batch = seg.batches[j]
            if seg.bases[j] >= upto or total + len(batch) > max_bytes:
                break
            pieces.append(batch)
            total += len(batch)
            j += 1
        return first if len(pieces) == 1 else b"".join(pieces)

    def batches_from_time(self, timestamp_ms: int) -> Iterator[bytes]:
        if self._closed:
            raise _closed()
        for seg in self.segments:
            if seg.max_timestamp >= timestamp_ms:
                for batch, max_ts in zip(seg.batches, seg.max_ts):
                    if max_ts >= timestamp_ms:
                        yield batch

    def drop_oldest(self, count: int) -> None:
        del self.segments[:count]
        del self._bases[:count]

    def sync_part(self, data: bool, covered: int | None = None) -> None:
        return None

    def synced(self, part: Any) -> bool:
        return True

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._closed = True

    def close_quietly(self) -> None:
        self._closed = True


def _nothing() -> None:
    pass


class MemoryStorage:
    """Topics that live as long as the process. See ``store.Storage``: every method returns at once."""

    needs_thread = False

    def __init__(self, fmt: BatchFormat) -> None:
        self.fmt = fmt

    def open(self) -> list[tuple[str, int, Any]]:
        return []

    def create_topic(self, name: str, partitions: int, config: TopicConfig, ticket: int) -> None:
        pass

    def created(self, name: str) -> None:
        pass

    def add_partitions(self, name: str, current: int, total: int, config: TopicConfig) -> None:
        pass

    def remove_partitions(self, name: str, current: int, total: int, config: TopicConfig) -> None:
        pass

    def remove_topic(self, name: str, ticket: int) -> Callable[[], None]:
        return _nothing

    def partition_store(self, topic: str, partition: int, config: TopicConfig, jobs: list) -> MemoryPartitionStore:
        return MemoryPartitionStore(self.fmt)

    def producer_snapshots(self, topic: str, partition: int) -> None:
        return None  # nothing outlives the process: the producer state never needs rebuilding

    def close(self) -> None:
        pass


__all__ = ["MemoryPartitionStore", "MemorySegment", "MemoryStorage"]
