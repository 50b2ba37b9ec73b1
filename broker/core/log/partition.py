# One partition's log: an ordered run of segments with dense offsets, appends, reads, lookup by timestamp,
# retention and crash recovery. Synchronous; takes now_ms, never reads a clock. Owns the partition directory's
# files. Must not know about topics' metadata, the wire protocol beyond the batch layout, or how fsync is scheduled
# (the server calls sync_fd/mark_durable).
from __future__ import annotations

import logging
import os
from bisect import bisect_right
from pathlib import Path
from typing import Any

import msgpack

from millpond.broker.core.log.files import fsync_dir
from millpond.broker.core.log.producers import ProducerStates
from millpond.broker.core.log.segment import NO_TIMESTAMP, Segment, SegmentCorrupt
from millpond.broker.core.log.topic_config import TopicConfig
from millpond.broker.wire.batch import HEADER_BYTES, BatchHeader, read_header, stamp_base_offset
from millpond.broker.wire.errors import CorruptBatchError, OffsetOutOfRangeError, StorageError

_READAHEAD_EXTRA_BYTES = 16 * 1024  # beyond max_bytes + index interval: room to finish the batch holding offset


def _segment_files(directory: Path) -> tuple[list[int], list[Path]]:
    """Base offsets of the .log files in ``directory`` (sorted), and leftover files to remove."""
    logs: set[int] = set()
    indexes: dict[int, list[Path]] = {}
    leftovers: list[Path] = []
    for entry in os.scandir(directory):
        stem, _, ext = entry.name.partition(".")
        if len(stem) == 20 and stem.isdigit() and ext in ("log", "index", "timeindex"):
            if ext == "log":
                logs.add(int(stem))
            else:
                indexes.setdefault(int(stem), []).append(Path(entry.path))
        elif entry.name.endswith(".tmp"):
            leftovers.append(Path(entry.path))
    for base, paths in indexes.items():
        if base not in logs:  # a crash between removing a .log and its indexes
            leftovers.extend(paths)
    return sorted(logs), leftovers


class PartitionLog:
    """The log of ``topic``/``partition``. Offsets: ``log_start_offset`` (first kept), ``log_end_offset`` (next to
    be written), ``high_watermark`` (end of what consumers may see; the end of what is durable under
    ``fsync_mode="always"``, else the log end). Read these attributes; never assign them.

    Built by ``LogManager``; ``open`` recovers the directory before anything else is called.
    """

    def __init__(
        self, topic: str, partition: int, directory: Path, config: TopicConfig, *, fsync_mode: str,
        dirty: set["PartitionLog"], logger: logging.Logger,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.directory = directory
        self.config = config
        self.log_start_offset = 0
        self.log_end_offset = 0
        self.high_watermark = 0
        self.size_bytes = 0
        self._always = fsync_mode == "always"
        self._durable = 0  # every offset below is on disk (fsynced)
        self._dirty = dirty  # shared with LogManager: partitions appended to since their last mark_durable
        self._log = logger
        self._segments: list[Segment] = []
        self._bases: list[int] = []  # _segments' base offsets, for bisect
        self.producers = ProducerStates()

    def __repr__(self) -> str:
        return (f"<PartitionLog {self.topic}/{self.partition} start={self.log_start_offset} "
                f"end={self.log_end_offset} hw={self.high_watermark}>")

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    # -- opening and recovery --------------------------------------------------------------------------------------

    def open(self, now_ms: int) -> None:
        """Load the segments and recover: each segment is trusted up to its index files' recovery point and scanned
        from there; at the first bad batch the file is truncated physically (logged), and any later segment is
        dropped so offsets stay dense. Never refuses to start over a torn tail. Raises ``StorageError`` on OSError.
        """
        try:
            self._open(now_ms)
        except OSError as exc:
            self.close_quietly()
            raise StorageError(f"cannot open {self.topic}/{self.partition} in {self.directory}: {exc}") from None

    def _open(self, now_ms: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        bases, leftovers = _segment_files(self.directory)
        for path in leftovers:
            path.unlink(missing_ok=True)
        interval = self.config.index_interval_bytes
        changed_dir = bool(leftovers)
        for k, base in enumerate(bases):
            prev = self._segments[-1] if self._segments else None
            if prev is not None and base != prev.next_offset:
                self._drop_from(bases[k:], f"segment {base} does not continue offset {prev.next_offset}")
                changed_dir = True
                break
            seg, file_size = Segment.open_existing(self.directory, base, interval)
            self._segments.append(seg)
            if seg.load_index_files(file_size) and seg.size == file_size:
                continue  # cleanly closed: nothing past its recovery point
            start_pos, start_offset = (seg.size, seg.next_offset) if seg.indexed_bytes >= 0 else (0, base)
            valid = seg.scan(start_pos, start_offset, file_size, now_ms)
            if valid < file_size:
                seg.truncate(valid)
                self._log.warning(
                    "%s/%s: recovery cut %d bytes at position %d of %s.log (torn or corrupt tail); log end is %d",
                    self.topic, self.partition, file_size - valid, valid, seg.stem, seg.next_offset,
                )
                if k + 1 < len(bases):
                    self._drop_from(bases[k + 1 :], f"segment {base} was truncated")
                    changed_dir = True
                    break
            else:
                seg.fsync()  # what recovery found becomes durable, so the high watermark may cover it
        if not self._segments:
            self._segments.append(Segment.create(self.directory, 0, interval))
            changed_dir = True
        if changed_dir:
            fsync_dir(self.directory)
        self._bases = [s.base_offset for s in self._segments]
        self.log_start_offset = self._segments[0].base_offset
        self.log_end_offset = self._segments[-1].next_offset
        self.high_watermark = self._durable = self.log_end_offset
        self.size_bytes = sum(s.size for s in self._segments)
        # Idempotent producers' recent sequences, from the active segment: enough to recognise the retries of a
        # producer that was writing when the broker stopped.
        for h in self._segments[-1].iter_headers():
            if h[8] >= 0:
                self.producers.record(h[8], h[9], h[10], h[11], h[0])

    def _drop_from(self, bases: list[int], why: str) -> None:
        self._log.warning("%s/%s: removing segments %s: %s", self.topic, self.partition, bases, why)
        for base in bases:
            for suffix in (".log", ".index", ".timeindex"):
                (self.directory / f"{base:020d}{suffix}").unlink(missing_ok=True)

    # -- writing ---------------------------------------------------------------------------------------------------

    def append(self, blob: bytes, header: BatchHeader, now_ms: int, *, sequence_checked: bool = False) -> int:
        """Store one batch already checked by ``broker.wire.batch.check_batch``; returns its base offset.

        ``blob``: the batch bytes (its base_offset field is replaced by the log end offset on disk). Rolls to a new
        segment first if the active one is full (``segment_bytes``) or old (``segment_ms`` since its first append).
        A batch of an idempotent producer (``producer_id >= 0``) that repeats one of its last five batches is not
        appended again: its original base offset is returned (Kafka's duplicate rule).
        ``sequence_checked``: the caller has just run ``self.producers.check`` on this batch (it answered None) and
        nothing ran since, so the check is not repeated (the engine's immediate produce path).
        Raises ``StorageError`` (the log is unchanged), ``CorruptBatchError`` if ``header`` does not fit ``blob``,
        ``OutOfOrderSequenceError`` or ``InvalidProducerEpochError`` (see ``ProducerStates.check``).
        """
        if len(blob) != header.batch_length + 12 or header.record_count < 1:
            raise CorruptBatchError(f"batch of {len(blob)} bytes does not match its header")
        pid = header.producer_id
        if pid >= 0 and not sequence_checked:
            stored_at = self.producers.check(pid, header.producer_epoch, header.base_sequence, header.record_count)
            if stored_at is not None:
                return stored_at  # a retry of a batch already in the log: same offsets, nothing appended
        seg = self._segments[-1]
        config = self.config
        if seg.size and (
            seg.size + len(blob) > config.segment_bytes
            or (seg.rolling_ms is not None and now_ms - seg.rolling_ms >= config.segment_ms)
        ):
            seg = self._roll()
        base = self.log_end_offset
        end = base + header.record_count
        try:
            seg.append(stamp_base_offset(base), memoryview(blob)[8:], base, end, header.max_timestamp_ms, now_ms)
        except OSError as exc:
            raise StorageError(f"cannot append to {self.topic}/{self.partition}: {exc.strerror or exc}") from None
        self.log_end_offset = end
        self.size_bytes += len(blob)
        if pid >= 0:
            self.producers.record(pid, header.producer_epoch, header.base_sequence, header.record_count, base)
        if not self._always:
            self.high_watermark = end
        self._dirty.add(self)
        return base

    def _roll(self) -> Segment:
        """Close the active segment (fsync inline, write its indexes) and start an empty one at the log end.

        Raises ``StorageError``; the old segment stays active then.
        """
        old = self._segments[-1]
        try:
            old.fsync()
            new = Segment.create(self.directory, self.log_end_offset, self.config.index_interval_bytes)
        except OSError as exc:
            raise StorageError(f"cannot roll a segment of {self.topic}/{self.partition}: {exc.strerror or exc}") from None
        try:
            fsync_dir(self.directory)
        except OSError as exc:
            new.delete()
            raise StorageError(f"cannot roll a segment of {self.topic}/{self.partition}: {exc.strerror or exc}") from None
        self._write_indexes(old)
        self._segments.append(new)
        self._bases.append(new.base_offset)
        # The old segment's bytes are durable now (its fd stays open for reads).
        self.mark_durable(old.next_offset)
        return new

    def _write_indexes(self, seg: Segment) -> None:
        try:
            seg.write_index_files()
        except OSError as exc:  # indexes are rebuilt from the log when missing: not worth failing for
            self._log.warning("%s/%s: cannot write index files of %s: %s", self.topic, self.partition, seg.stem, exc)

    def sync_fd(self) -> tuple[int, int]:
        """``(fd, offset)``: fsyncing ``fd`` makes every offset below ``offset`` durable (older segments were
        fsynced when they rolled). ``os.dup`` the fd before yielding to other tasks; then ``mark_durable(offset)``.
        """
        return self._segments[-1].fd, self.log_end_offset

    def mark_durable(self, offset: int) -> None:
        """Record that offsets below ``offset`` are on disk; under "always" this advances ``high_watermark``."""
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
        """Stored batches as they lie on disk: the first is the one containing ``offset`` (returned whole even if
        larger than ``max_bytes``), then following ones while the total stays <= ``max_bytes`` and their base
        offsets stay below ``upto`` (default and cap: the log end; pass ``high_watermark`` for consumers).

        ``b""`` when ``offset`` is at the log end or ``upto``. Raises ``OffsetOutOfRangeError`` (details
        ``log_start_offset``, ``log_end_offset``), ``CorruptBatchError`` (a batch failed its CRC: never served),
        ``StorageError``.
        """
        self._check_offset(offset)
        end = self.log_end_offset
        if upto is None or upto > end:
            upto = end
        if offset >= upto:
            return b""
        i = bisect_right(self._bases, offset) - 1
        segments = self._segments
        readahead = max(max_bytes, 0) + self.config.index_interval_bytes + _READAHEAD_EXTRA_BYTES
        try:
            last = len(segments) - 1
            data, at_end = segments[i].read_batches(offset, max_bytes, upto, True, readahead, i < last)
            if not at_end or i + 1 >= len(segments) or len(data) >= max_bytes:
                return data
            pieces = [data]
            total = len(data)
            for k in range(i + 1, last + 1):
                seg = segments[k]
                if seg.base_offset >= upto:
                    break
                more, at_end = seg.read_batches(seg.base_offset, max_bytes - total, upto, False, max_bytes - total,
                                                k < last)
                pieces.append(more)
                total += len(more)
                if not at_end:
                    break
            return b"".join(pieces)
        except SegmentCorrupt as exc:
            raise self._corrupt(exc) from None
        except OSError as exc:
            raise StorageError(f"cannot read {self.topic}/{self.partition}: {exc.strerror or exc}") from None

    def _corrupt(self, exc: SegmentCorrupt) -> CorruptBatchError:
        self._log.error("%s/%s: %s", self.topic, self.partition, exc)
        return CorruptBatchError(
            f"stored batch of {self.topic}/{self.partition} at offset {exc.offset} (position {exc.position}): "
            f"{exc.reason}",
            topic=self.topic, partition=self.partition, offset=exc.offset,
        )

    def offset_for_timestamp(self, timestamp_ms: int, upto: int | None = None) -> tuple[int, int] | None:
        """Kafka's ListOffsets rule: ``(offset, timestamp_ms)`` of the first record in offset order whose timestamp
        is >= ``timestamp_ms``, or None if there is none below ``upto`` (default: the log end).

        Raises ``CorruptBatchError``, ``StorageError``.
        """
        if upto is None or upto > self.log_end_offset:
            upto = self.log_end_offset
        try:
            for seg in self._segments:
                if seg.max_timestamp < timestamp_ms or seg.max_timestamp == NO_TIMESTAMP:
                    continue
                for batch in seg.batches_from_time(timestamp_ms):
                    h = read_header(batch)
                    if h.base_offset >= upto:
                        return None
                    for od, ts in _record_times(batch, h):
                        if ts >= timestamp_ms:
                            offset = h.base_offset + od
                            return (offset, ts) if offset < upto else None
            return None
        except SegmentCorrupt as exc:
            raise self._corrupt(exc) from None
        except OSError as exc:
            raise StorageError(f"cannot read {self.topic}/{self.partition}: {exc.strerror or exc}") from None

    # -- retention -------------------------------------------------------------------------------------------------

    def enforce_retention(self, now_ms: int) -> int:
        """Delete whole segments by Kafka's rules; returns how many. Only segments entirely below the high
        watermark go. Time: oldest first while ``now_ms`` - largest timestamp > ``retention_ms``. Size: oldest
        first while total - segment >= ``retention_bytes``. If the active segment goes, an empty one is rolled
        first so offsets keep counting: the log start moves up, the log end stays. Raises ``StorageError``.
        """
        config = self.config
        segments = self._segments
        hw = self.high_watermark
        doomed = 0
        if config.retention_ms >= 0:
            while doomed < len(segments):
                seg = segments[doomed]
                if not (seg.size and seg.next_offset <= hw and now_ms - seg.max_timestamp > config.retention_ms):
                    break
                doomed += 1
        if config.retention_bytes >= 0:
            total = self.size_bytes - sum(s.size for s in segments[:doomed])
            while doomed < len(segments):
                seg = segments[doomed]
                if not (seg.size and seg.next_offset <= hw and total - seg.size >= config.retention_bytes):
                    break
                total -= seg.size
                doomed += 1
        if not doomed:
            return 0
        if doomed == len(segments):
            self._roll()
        for seg in segments[:doomed]:
            try:
                seg.delete()
            except OSError as exc:
                self._log.warning("%s/%s: cannot remove %s: %s", self.topic, self.partition, seg.stem, exc)
        del segments[:doomed]
        del self._bases[:doomed]
        self.log_start_offset = segments[0].base_offset
        self.producers.forget_below(self.log_start_offset)
        self.size_bytes = sum(s.size for s in segments)
        self._log.info(
            "%s/%s: retention deleted %d segment(s); log start is now %d",
            self.topic, self.partition, doomed, self.log_start_offset,
        )
        return doomed

    # -- closing ---------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Fsync the active segment, write its index files, close every fd. Idempotent. Raises ``StorageError``."""
        if not self._segments or self._segments[-1].fd < 0:
            return
        active = self._segments[-1]
        error: OSError | None = None
        try:
            active.fsync()
            self.mark_durable(self.log_end_offset)
            self._write_indexes(active)
        except OSError as exc:
            error = exc
        self.close_quietly()
        if error is not None:
            raise StorageError(f"cannot close {self.topic}/{self.partition}: {error.strerror or error}")

    def close_quietly(self) -> None:
        """Close every fd without fsync (used on error paths and before a topic's files are removed)."""
        for seg in self._segments:
            try:
                seg.close()
            except OSError:
                pass
        self._dirty.discard(self)


def _record_times(batch: bytes, h: BatchHeader) -> list[tuple[int, int]]:
    """(offset delta, timestamp ms) of each record of one CRC-checked batch, in order."""
    try:
        rows: Any = msgpack.unpackb(memoryview(batch)[HEADER_BYTES:], use_list=False)
        first = h.first_timestamp_ms
        return [(row[0], first + row[1]) for row in rows]
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
        raise SegmentCorrupt(h.base_offset, -1, f"records section does not decode ({exc})") from None
