# The storage contract, as NATS's StreamStore: what the partition log asks of the place its batches live (a
# PartitionStore per partition) and what the log manager asks of the place topics live (a Storage). Two
# implementations: file (file_store.py, file_topics.py: segments, indexes, recovery) and memory (memory_store.py).
# One test suite runs over both (tests/core/log). Must not know about producers, high watermarks, fsync policy,
# the wire protocol or the batch layout (that is the BatchFormat the stores are given).
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, NamedTuple, Protocol, Sequence

from millpond.broker.core.log.topic_config import TopicConfig

NO_TIMESTAMP = -(2**63)  # max_timestamp of a segment holding no batch


class Damage(NamedTuple):
    """A quarantined range of a segment file: offsets ``first``..``end - 1`` cannot be served (none when
    ``first == end``: bytes that hold no offset, such as garbage after a closed segment's last batch), and bytes
    ``position``..``position + nbytes - 1`` of the .log are kept as they are and skipped by every read."""

    first: int
    end: int
    position: int
    nbytes: int
    reason: str


class SegmentCorrupt(Exception):
    """Stored offsets ``offset``..``end - 1`` are damaged (a length, offset-continuity or CRC check failed); ``end``
    is the next offset a read may ask for. ``data``: the intact batches a read returned before the damage."""

    def __init__(self, offset: int, position: int, reason: str, end: int | None = None,
                 data: bytes | memoryview = b"") -> None:
        super().__init__(f"{reason} at offset {offset}, position {position}")
        self.offset = offset
        self.position = position
        self.reason = reason
        self.end = offset + 1 if end is None else end
        self.data = data


class SegmentView(Protocol):
    """What the partition log reads of a segment (Kafka's unit of rolling and retention)."""

    base_offset: int
    next_offset: int  # one past the last stored record
    size: int  # bytes of stored batches
    max_timestamp: int  # largest batch max-timestamp; NO_TIMESTAMP when empty
    rolling_ms: int | None  # wall-clock ms of the first append (or of the first batch, after recovery)


class SyncPart(Protocol):
    """One partition's share of a sync plan, built on the event loop, run in a worker thread. Owns dup'ed fds."""

    end: int  # once ``run`` succeeded, every offset below ``end`` is durable
    device: int  # st_dev of the filesystem its files are on

    def run(self, data_synced: bool = False) -> None:
        """Blocking: fsync (skipped with ``data_synced``: a syncfs of its filesystem made after the part was built
        already did it), write rolled segments' index files, fsync the directory. Raises OSError. Touches only
        what it holds (its fds, immutable rolled segments), never the store."""

    def close(self) -> None:
        """Release the fds (``run`` or not). Idempotent."""


class PartitionStore(Protocol):
    """The stored batches of one partition, in segments; offsets are dense from the first segment's base.

    Blocking methods (worker thread or startup only): ``open``, ``flush``, ``close``. Every other method is
    called on the event loop and does no blocking I/O beyond a positional read or write of batch bytes (file
    store: ``pread``/``pwritev``) and, in ``roll``, one rename or create of the new segment's file. Errors: OSError
    (the store is unchanged) and SegmentCorrupt; the partition log turns them into wire errors.
    """

    durable_at_once: bool  # True: an append is as durable as it will ever be (memory); no sync plans
    segments: Sequence[SegmentView]  # oldest first; the last takes appends; never empty once open
    retired: bool  # set on the loop while the topic is being deleted: background completions attach nothing

    def open(self, now_ms: int) -> None:
        """Load and recover. File store: only the active segment's tail can be torn and is cut; a bad batch anywhere
        else is damage, quarantined (its bytes kept, its offsets never reused) and skipped; missing or stale
        indexes are rebuilt by scanning and written back. Logs one summary line."""

    def headers(self, since: int | None = None) -> Iterable[tuple]:
        """Raw headers (the format's field order) of the last segment's batches, or with ``since`` of every batch
        from the segment holding that offset on (it may start below ``since``): producer state after a restart."""

    def append(self, stamp: bytes, body: memoryview, base: int, end: int, max_ts: int, now_ms: int) -> None:
        """Store one batch at the log end (``stamp`` = its first bytes as the log stamps them, ``body`` = the
        rest)."""

    def roll(self) -> None:
        """Start a new empty segment at the log end. Never fsyncs: the old segment's fsync, its index files and
        the directory fsync are left to the next sync part."""

    def read(self, offset: int, max_bytes: int, upto: int) -> bytes | memoryview:
        """Whole stored batches from the one holding ``offset`` (taken whatever its size), then while the total
        stays <= ``max_bytes`` and their base offsets stay below ``upto``. ``offset`` is in range and < ``upto``.
        Raises ``SegmentCorrupt`` on reaching damaged offsets below ``upto``, carrying the intact batches before
        them in ``data`` (damage found here for the first time is quarantined as at start)."""

    def batches_from_time(self, timestamp_ms: int) -> Iterator[bytes]:
        """CRC-checked batches in offset order, from one at or before the first whose max timestamp is
        >= ``timestamp_ms``; batches whose max timestamp is below it may be skipped."""

    def drop_oldest(self, count: int) -> None:
        """Forget the ``count`` oldest segments now (reads below stop at once); their files go in background
        jobs. Never the last segment."""

    def sync_part(self, data: bool, covered: int | None = None) -> SyncPart | None:
        """What makes this partition durable now (rolled segments, the directory, and with ``data`` the last
        segment too), with fds dup'ed, none if its files are on the filesystem of st_dev ``covered`` (the plan
        syncs that filesystem whole); None if nothing is to do."""

    def synced(self, part: SyncPart) -> bool:
        """``part`` ran without error: record what it made durable. True if nothing is left for a later part but
        the last segment's new bytes."""

    def flush(self) -> None:
        """Blocking: make everything durable now (what ``sync_part(True)`` then ``synced`` would)."""

    def close(self) -> None:
        """Blocking: flush, write index files, release everything. Idempotent."""

    def close_quietly(self) -> None:
        """Release everything without flushing (error paths, crash simulation, a deleted topic). Blocking only in
        that closing a file may free its blocks; called from a worker thread once the loop no longer reaches it."""


class Storage(Protocol):
    """Where topics live. Every method is blocking (startup, or a worker thread) and raises OSError or
    StorageError; none is called on the event loop. Names reaching it are validated and reserved by the manager."""

    needs_thread: bool  # False: every method returns at once (memory): the two-phase work may run inline

    def open(self) -> list[tuple[str, int, Any]]:
        """Take the data directory (lock), finish or abandon what a crash interrupted, and list the stored topics
        as ``(name, partition count, config as stored)``; an unreadable topic is logged and left out."""

    def create_topic(self, name: str, partitions: int, config: TopicConfig, ticket: int) -> None:
        """Store a new topic durably and atomically (``ticket``: a number unique in this process, for scratch
        names)."""

    def created(self, name: str) -> None:
        """The new topic's partitions are open: make its creation final (until then a start removes it, and a
        creation that fails removes it with ``remove_topic``)."""

    def add_partitions(self, name: str, current: int, total: int, config: TopicConfig) -> None:
        """Store partitions ``current..total-1`` of ``name`` and then its new count, atomically."""

    def remove_partitions(self, name: str, current: int, total: int, config: TopicConfig) -> None:
        """Undo ``add_partitions`` whose partitions could not be opened: the count back to ``current`` first,
        then partitions ``current..total-1`` removed."""

    def remove_topic(self, name: str, ticket: int) -> Callable[[], None]:
        """Make the topic's removal durable (it never comes back after a crash); returns the blocking rest of the
        clean-up, whose failures are only logged."""

    def partition_store(self, topic: str, partition: int, config: TopicConfig, jobs: list) -> PartitionStore:
        """A store for one partition (not yet open). ``jobs`` is where it queues background work (``Job``s)."""

    def producer_snapshots(self, topic: str, partition: int) -> Any:
        """Where one partition's producer state snapshots live (``producer_snapshots.FileSnapshots``), or None if
        its store never outlives the process."""

    def close(self) -> None:
        """Let go of the data directory (the lock)."""


def doomed_segments(segments: Sequence[SegmentView], config: TopicConfig, high_watermark: int, size_bytes: int,
                    now_ms: int) -> int:
    """How many of the oldest segments Kafka's retention rules delete. Only segments entirely below the high
    watermark go. Time: oldest first while ``now_ms`` - largest timestamp > ``retention_ms``. Size: oldest first
    while total - segment >= ``retention_bytes``. Empty segments never go."""
    doomed = 0
    if config.retention_ms >= 0:
        while doomed < len(segments):
            seg = segments[doomed]
            if not (seg.size and seg.next_offset <= high_watermark and now_ms - seg.max_timestamp > config.retention_ms):
                break
            doomed += 1
    if config.retention_bytes >= 0:
        total = size_bytes - sum(s.size for s in segments[:doomed])
        while doomed < len(segments):
            seg = segments[doomed]
            if not (seg.size and seg.next_offset <= high_watermark and total - seg.size >= config.retention_bytes):
                break
            total -= seg.size
            doomed += 1
    return doomed


__all__ = ["Damage", "NO_TIMESTAMP", "PartitionStore", "SegmentCorrupt", "SegmentView", "Storage", "SyncPart", "doomed_segments"]
