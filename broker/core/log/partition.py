# One partition's log over any PartitionStore (store.py): dense offsets, appends with Kafka's idempotent-producer
# rules, segment rolls, reads, lookup by timestamp, retention, the high watermark and what is durable. Synchronous;
# takes now_ms, never reads a clock. Every method but open/close/release runs on the event loop and never fsyncs:
# durability comes from sync parts the manager gathers into plans. Must not know about files (the store's),
# topics' metadata, the wire protocol beyond the checked batch header, or how the server schedules work.
from __future__ import annotations

import errno
import logging
from typing import Any, Iterator

from millpond.broker.core.log import producer_snapshots
from millpond.broker.core.log.batch_format import LENGTH_PREFIX_BYTES, BatchFormat
from millpond.broker.core.log.producers import ProducerStates
from millpond.broker.core.log.store import NO_TIMESTAMP, PartitionStore, SegmentCorrupt, SyncPart, doomed_segments
from millpond.broker.core.log.topic_config import TopicConfig
from millpond.broker.core.outcomes import Job
from millpond.broker.wire.errors import CorruptBatchError, CorruptRangeError, OffsetOutOfRangeError, StorageError


class PartitionLog:
    """The log of ``topic``/``partition``. Offsets: ``log_start_offset`` (first kept), ``log_end_offset`` (next to
    be written), ``high_watermark`` (end of what consumers may see; the end of what is durable under
    ``fsync_mode="always"``, else the log end). ``sync_failures`` counts failed syncs of this partition (a waiter
    parked before a failure answers STORAGE_ERROR). Read these attributes; never assign them.

    Built by ``LogManager``; ``open`` recovers the store before anything else is called. ``snapshots``: where the
    idempotent producers' state is snapshotted at each roll (``producer_snapshots.FileSnapshots``;
    None for a store that never restarts), written by ``Job``s queued on ``jobs``.
    """

    def __init__(
        self, topic: str, partition: int, store: PartitionStore, config: TopicConfig, *, fsync_mode: str,
        dirty: set["PartitionLog"], rolled: set["PartitionLog"], fmt: BatchFormat, logger: logging.Logger,
        snapshots: Any = None, jobs: list[Job] | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.store = store
        self.config = config
        self.fmt = fmt
        self.log_start_offset = 0
        self.log_end_offset = 0
        self.high_watermark = 0
        self.size_bytes = 0
        self.sync_failures = 0
        self._tracked = not store.durable_at_once  # durability comes from sync plans
        self._always = fsync_mode == "always" and self._tracked
        self._durable = 0  # every offset below is durable
        self._dirty = dirty  # shared with LogManager: appended to since durable reached the log end
        self._rolled = rolled  # shared with LogManager: rolled segments (or a directory) not yet synced
        self._suspended: PartitionStore | None = None
        self._log = logger
        self.producers = ProducerStates()
        self._failures = 0  # storage failures in a row: an episode's first is logged, and its end
        self._snapshots = snapshots
        self._jobs = jobs if jobs is not None else []

    def __repr__(self) -> str:
        return (f"<PartitionLog {self.topic}/{self.partition} start={self.log_start_offset} "
                f"end={self.log_end_offset} hw={self.high_watermark}>")

    @property
    def segment_count(self) -> int:
        return len(self.store.segments)

    def _storage_error(self, what: str, exc: OSError) -> StorageError:
        """The error to answer, logged when it starts an episode (a full disk fails every produce: one line, not
        one per request; the first success logs how many there were)."""
        error = StorageError(f"cannot {what} {self.topic}/{self.partition}: {exc.strerror or exc}")
        self._failures += 1
        if self._failures == 1:
            self._log.error("%s (further failures here are counted until one succeeds)", error.message)
        return error

    # -- opening ---------------------------------------------------------------------------------------------------

    def open(self, now_ms: int) -> None:
        """Blocking: load and recover the store (see its ``open``), then rebuild idempotent producers' recent
        batches: the newest producer state snapshot at or below the log end, then every batch after it (Kafka's
        snapshot plus log tail), so a retry of any of a producer's last five batches is recognised however many
        segments rolled since. Raises ``StorageError`` (the store is closed again)."""
        try:
            self.store.open(now_ms)
            segments = self.store.segments
            self.log_start_offset = segments[0].base_offset
            self.log_end_offset = segments[-1].next_offset
            self.high_watermark = self._durable = self.log_end_offset
            self.size_bytes = sum(s.size for s in segments)
            since = self._restore_producers()
            producer = self.fmt.producer
            for h in self.store.headers(since):
                if h[0] >= since:
                    pid, epoch, seq, count = producer(h)
                    if pid >= 0:
                        self.producers.record(pid, epoch, seq, count, h[0])
            self.producers.forget_below(self.log_start_offset)
        except OSError as exc:
            self.store.close_quietly()
            raise self._storage_error("open", exc) from None

    def _restore_producers(self) -> int:
        """Blocking: load the newest intact snapshot at or below the log end and return its offset (the batches
        from there on are replayed); snapshots beyond the log end (a cut tail) are removed. With none, the state
        is rebuilt from every batch (memory: the store starts empty). Raises OSError."""
        snapshots = self._snapshots
        if snapshots is None:
            return self.log_start_offset
        for offset in snapshots.offsets():
            if offset > self.log_end_offset:
                snapshots.remove(offset)  # of batches that are gone: it would describe offsets given to others
                continue
            plain = snapshots.load(offset)
            if plain is not None:
                try:
                    self.producers.restore(plain)
                    return offset
                except ValueError:
                    pass
            self._log.warning("%s/%s: producer state snapshot at offset %d is unreadable; using an older one",
                              self.topic, self.partition, offset)
        return self.log_start_offset

    def _snapshot(self) -> None:
        """On the loop: snapshot the producer state as of the log end, written by a background job."""
        snapshots = self._snapshots
        if snapshots is None:
            return
        offset = self.log_end_offset
        contents = producer_snapshots.encode(offset, self.producers.to_plain())
        where = f"{self.topic}/{self.partition}"
        log = self._log

        def done(result: object) -> None:
            if isinstance(result, BaseException):  # the next roll or close writes another; a restart replays more
                log.warning("%s: cannot write the producer state snapshot at offset %d: %s", where, offset, result)

        self._jobs.append(Job(lambda: snapshots.save(offset, contents), done))

    # -- writing ---------------------------------------------------------------------------------------------------

    def append(self, blob: bytes, header: Any, now_ms: int, *, sequence_checked: bool = False) -> int:
        """Store one batch already checked by the format's ``check`` (``broker.wire.batch.check_batch``); returns
        its base offset. Never fsyncs.

        ``blob``: the batch bytes (its base_offset field is replaced by the log end offset when stored, and what else
        the format stamps: v2's partition leader epoch 0). Rolls to a
        new segment first if the active one is full (``segment_bytes``) or old (``segment_ms`` since its first
        append). A batch of an idempotent producer (``producer_id >= 0``) that repeats one of its last five
        batches is not appended again: its original base offset is returned (Kafka's duplicate rule).
        ``sequence_checked``: the caller has just run ``self.producers.check`` on this batch (it answered None) and
        nothing ran since, so the check is not repeated (the engine's immediate produce path).
        Raises ``StorageError`` (the log is unchanged), ``CorruptBatchError`` if ``header`` does not fit ``blob``,
        ``OutOfOrderSequenceError`` or ``InvalidProducerEpochError`` (see ``ProducerStates.check``).
        """
        if len(blob) != header.batch_length + LENGTH_PREFIX_BYTES or header.record_count < 1:
            raise CorruptBatchError(f"batch of {len(blob)} bytes does not match its header")
        pid = header.producer_id
        if pid >= 0 and not sequence_checked:
            stored_at = self.producers.check(pid, header.producer_epoch, header.base_sequence, header.record_count)
            if stored_at is not None:
                return stored_at  # a retry of a batch already in the log: same offsets, nothing appended
        store = self.store
        seg = store.segments[-1]
        config = self.config
        if seg.size and (
            seg.size + len(blob) > config.segment_bytes
            or (seg.rolling_ms is not None and now_ms - seg.rolling_ms >= config.segment_ms)
        ):
            self._roll()
        base = self.log_end_offset
        end = base + header.record_count
        try:
            fmt = self.fmt
            store.append(fmt.stamp(base, header.batch_length), memoryview(blob)[fmt.stamp_bytes:], base, end,
                         header.max_timestamp_ms, now_ms)
        except OSError as exc:
            raise self._storage_error("append to", exc) from None
        self.log_end_offset = end
        if self._failures:
            self._log.warning("%s/%s: appends succeed again after %d storage failure(s)", self.topic, self.partition,
                              self._failures)
            self._failures = 0
        self.size_bytes += len(blob)
        if pid >= 0:
            self.producers.record(pid, header.producer_epoch, header.base_sequence, header.record_count, base)
        if self._tracked:
            self._dirty.add(self)
            if not self._always:
                self.high_watermark = end
        else:
            self.high_watermark = self._durable = end
        return base

    def _roll(self) -> None:
        """Start an empty segment at the log end; the old one is synced by the next plan. Raises ``StorageError``
        (the old segment stays active)."""
        try:
            self.store.roll()
        except OSError as exc:
            raise self._storage_error("roll a segment of", exc) from None
        if self._tracked:
            self._rolled.add(self)
        self._snapshot()

    # -- durability ------------------------------------------------------------------------------------------------

    def sync_part(self, data: bool, covered: int | None = None) -> SyncPart | None:
        """On the loop: this partition's share of a sync plan (see ``LogManager.sync_plan``; ``covered``: the
        st_dev a syncfs of the plan makes durable). Raises OSError."""
        return self.store.sync_part(data, covered)

    def synced(self, part: SyncPart) -> bool:
        """On the loop: ``part`` ran without error. Returns True if the high watermark moved."""
        if self._suspended is not None:
            return False  # the topic is being deleted
        if self.store.synced(part):
            self._rolled.discard(self)
        before = self.high_watermark
        self.mark_durable(part.end)
        return self.high_watermark != before

    def mark_durable(self, offset: int) -> None:
        """Record that offsets below ``offset`` are durable; under "always" this advances ``high_watermark``."""
        if offset > self._durable:
            self._durable = min(offset, self.log_end_offset)
        if self._always and self._durable > self.high_watermark:
            self.high_watermark = self._durable
        if self._durable >= self.log_end_offset:
            self._dirty.discard(self)

    # -- reading ---------------------------------------------------------------------------------------------------

    def _check_offset(self, offset: int) -> None:
        if type(offset) is not int or not self.log_start_offset <= offset <= self.log_end_offset:
            raise OffsetOutOfRangeError(
                f"offset {offset!r} is outside {self.topic}/{self.partition}'s range "
                f"{self.log_start_offset}..{self.log_end_offset}",
                log_start_offset=self.log_start_offset,
                log_end_offset=self.log_end_offset,
            )

    def read(self, offset: int, max_bytes: int, upto: int | None = None) -> bytes | memoryview:
        """Stored batches as they lie in the store: the first is the one containing ``offset`` (returned whole even
        if larger than ``max_bytes``), then following ones while the total stays <= ``max_bytes`` and their base
        offsets stay below ``upto`` (default and cap: the log end; pass ``high_watermark`` for consumers).

        ``b""`` when ``offset`` is at the log end or ``upto``. Raises ``OffsetOutOfRangeError`` (details
        ``log_start_offset``, ``log_end_offset``), ``CorruptRangeError`` on reaching damaged offsets (never served;
        details ``first_offset``, ``last_offset``, ``next_offset``; its ``data`` attribute holds the intact batches
        before them, which a fetch returns), ``StorageError``.
        """
        self._check_offset(offset)
        end = self.log_end_offset
        if upto is None or upto > end:
            upto = end
        if offset >= upto:
            return b""
        try:
            return self.store.read(offset, max_bytes, upto)
        except SegmentCorrupt as exc:
            raise self._corrupt(exc) from None
        except OSError as exc:
            raise self._storage_error("read", exc) from None

    def _corrupt(self, exc: SegmentCorrupt) -> CorruptRangeError:
        # The store logged the damage when it found it; a read that meets it again only reports it.
        error = CorruptRangeError(
            f"{self.topic}/{self.partition}: offsets {exc.offset}-{exc.end - 1} are damaged on disk ({exc.reason}, "
            f"position {exc.position}) and quarantined; the next readable offset is {exc.end}",
            topic=self.topic, partition=self.partition, first_offset=exc.offset, last_offset=exc.end - 1,
            next_offset=exc.end,
        )
        error.data = exc.data  # type: ignore[attr-defined]
        return error

    def read_intact(self, offset: int, max_bytes: int, upto: int | None = None) -> tuple[bytes | memoryview, Any]:
        """``read`` for the broker's own readers (journal replays), stepping over damage: ``(data, damaged)``, where
        ``damaged`` is None or the ``CorruptRangeError`` the read stopped at (``data`` then holds the intact batches
        before it; continue at its ``details["next_offset"]``). Raises as ``read`` does otherwise."""
        try:
            return self.read(offset, max_bytes, upto), None
        except CorruptRangeError as exc:
            return exc.data, exc  # type: ignore[attr-defined]

    def offset_for_timestamp(self, timestamp_ms: int, upto: int | None = None) -> tuple[int, int] | None:
        """Kafka's ListOffsets rule: ``(offset, timestamp_ms)`` of the first record in offset order whose timestamp
        is >= ``timestamp_ms``, or None if there is none below ``upto`` (default: the log end).

        Quarantined ranges are stepped over. Raises ``CorruptRangeError`` (a batch whose CRC holds but whose
        records do not decode), ``StorageError``.
        """
        if upto is None or upto > self.log_end_offset:
            upto = self.log_end_offset
        fmt = self.fmt
        try:
            for batch in self._batches_from_time(timestamp_ms):
                h = fmt.unpack(batch, 0)
                if h[0] >= upto:
                    return None
                try:
                    times = fmt.record_times(batch, h)
                except ValueError as exc:
                    raise SegmentCorrupt(h[0], -1, str(exc), h[0] + h[fmt.LAST_DELTA_AT] + 1) from None
                for od, ts in times:
                    if ts >= timestamp_ms:
                        offset = h[0] + od
                        return (offset, ts) if offset < upto else None
            return None
        except SegmentCorrupt as exc:
            raise self._corrupt(exc) from None
        except OSError as exc:
            raise self._storage_error("read", exc) from None

    def _batches_from_time(self, timestamp_ms: int) -> Iterator[bytes]:
        if all(s.max_timestamp == NO_TIMESTAMP for s in self.store.segments):
            return iter(())
        return self.store.batches_from_time(timestamp_ms)

    # -- retention -------------------------------------------------------------------------------------------------

    def enforce_retention(self, now_ms: int) -> int:
        """Forget whole segments by Kafka's rules (see ``store.doomed_segments``); returns how many. Their files go
        in background jobs. If the active segment goes, an empty one is rolled first so offsets keep counting: the
        log start moves up, the log end stays. Raises ``StorageError`` (nothing changed)."""
        segments = self.store.segments
        doomed = doomed_segments(segments, self.config, self.high_watermark, self.size_bytes, now_ms)
        if not doomed:
            return 0
        if doomed == len(segments):
            self._roll()
        self._drop_oldest(doomed, "retention")
        return doomed

    def roll(self) -> None:
        """Start a new segment at the log end unless the active one is empty, so the next offset is a segment's
        first (internal topics' checkpoints, internal.py, begin there so the segments before them can go whole).
        Raises ``StorageError`` (nothing changed)."""
        if self.store.segments[-1].size:
            self._roll()

    def delete_segments_below(self, offset: int) -> int:
        """Forget the oldest whole segments holding only offsets below ``offset`` (capped at the high watermark;
        the active segment always stays); returns how many. The log start moves up to the first kept segment's
        base, as Kafka's DeleteRecords moves it; the files go in background jobs."""
        offset = min(offset, self.high_watermark)
        segments = self.store.segments
        doomed = 0
        while doomed < len(segments) - 1 and segments[doomed].next_offset <= offset:
            doomed += 1
        if doomed:
            self._drop_oldest(doomed, "a checkpoint")
        return doomed

    def _drop_oldest(self, doomed: int, why: str) -> None:
        self.store.drop_oldest(doomed)
        segments = self.store.segments
        self.log_start_offset = segments[0].base_offset
        self.producers.forget_below(self.log_start_offset)
        self.size_bytes = sum(s.size for s in segments)
        self._log.info(
            "%s/%s: %s deleted %d segment(s); log start is now %d",
            self.topic, self.partition, why, doomed, self.log_start_offset,
        )

    # -- deleting and closing --------------------------------------------------------------------------------------

    def suspend(self) -> None:
        """On the loop, as its topic's deletion begins: every later call fails with ``StorageError`` and no sync
        plan includes this partition; ``release`` (worker thread) or ``resume`` (the deletion failed) follows."""
        if self._suspended is None:
            self._suspended, self.store = self.store, _GONE
            self._suspended.retired = True
            self._dirty.discard(self)
            self._rolled.discard(self)

    def resume(self) -> None:
        """On the loop: undo ``suspend`` (the topic's files could not be removed, so it stays)."""
        if self._suspended is not None:
            self.store, self._suspended = self._suspended, None
            self.store.retired = False
            if self._tracked:
                self._dirty.add(self)
                self._rolled.add(self)

    def release(self) -> None:
        """Blocking (worker thread), after ``suspend``: close the store's files without syncing them."""
        if self._suspended is not None:
            self._suspended.close_quietly()

    def close(self) -> None:
        """Blocking: sync everything, write index files, close the store. Idempotent. Raises ``StorageError``.
        (No producer state snapshot here: the next start replays the active segment after the last roll's one,
        which keeps a shutdown of many partitions free of two fsyncs each.)"""
        try:
            self.store.close()
        except OSError as exc:
            self._dirty.discard(self)
            self._rolled.discard(self)
            raise self._storage_error("close", exc) from None
        self.mark_durable(self.log_end_offset)
        self._rolled.discard(self)

    def close_quietly(self) -> None:
        """Close the store without syncing (used on error paths and to simulate a crash)."""
        (self._suspended or self.store).close_quietly()
        self._dirty.discard(self)
        self._rolled.discard(self)


class _GoneSegment:
    base_offset = next_offset = size = 0
    max_timestamp = NO_TIMESTAMP
    rolling_ms = None


class _GoneStore:
    """What a partition of a topic being deleted answers with: nothing."""

    durable_at_once = False
    segments = (_GoneSegment(),)
    retired = True

    def __getattr__(self, name: str) -> Any:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise OSError(errno.EBADF, "the topic is being deleted")

        return refuse

    def sync_part(self, data: bool, covered: int | None = None) -> None:
        return None

    def close(self) -> None:
        pass

    def close_quietly(self) -> None:
        pass


_GONE: Any = _GoneStore()
