# One segment of a partition log: a .log file of stored batches starting at one base offset, with its sparse offset
# index and time index kept in memory and written to .index/.timeindex when the segment closes. Owns one segment's
# file layout, its recovery scan and its byte-level reads. Must not know about topics, retention or fsync policy;
# raises SegmentCorrupt / OSError and lets the partition log turn them into wire errors.
from __future__ import annotations

import os
import struct
import zlib
from array import array
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import Iterator

from millpond.broker.core.log.files import read_file, seal, unseal, write_file
from millpond.broker.wire.batch import CRC_START, HEADER, HEADER_BYTES, LENGTH_PREFIX_BYTES, MAGIC, verify_crc

NO_TIMESTAMP = -(2**63)  # max_timestamp of a segment holding no batch
SCAN_CHUNK_BYTES = 1 << 20
_MIN_LENGTH = HEADER_BYTES - LENGTH_PREFIX_BYTES
_unpack_header = HEADER.unpack_from
_crc32 = zlib.crc32
# Index files: Kafka's entry layouts, then a trailer describing the .log they were written for (so an index older
# than its log is extended by scanning from log_bytes, the segment's recovery point), then a CRC over everything.
_OFFSET_ENTRY = struct.Struct(">II")  # offset relative to the base, position in the .log
_TIME_ENTRY = struct.Struct(">qI")  # max timestamp so far, offset relative to the base
_INDEX_TRAILER = struct.Struct(">Qqqq")  # log_bytes, next_offset, max_timestamp, rolling_ms (NO_TIMESTAMP = none)
_TIMEINDEX_TRAILER = struct.Struct(">Q")  # log_bytes


class SegmentCorrupt(Exception):
    """A stored batch failed a length, offset-continuity or CRC check while being read."""

    def __init__(self, offset: int, position: int, reason: str) -> None:
        super().__init__(f"{reason} at offset {offset}, position {position}")
        self.offset = offset
        self.position = position
        self.reason = reason


def segment_stem(directory: Path, base_offset: int) -> Path:
    return directory / f"{base_offset:020d}"


class Segment:
    """One ``<base>.log`` file. Offsets are absolute; positions are byte offsets into the file.

    ``size`` is the byte length of the valid batches (never trust the file length: recovery and failed writes
    leave it behind). ``next_offset`` is one past the last stored record. ``rolling_ms`` is the wall-clock ms of
    the first append (segment age for ``segment_ms``), or None while the segment is empty.
    """

    __slots__ = (
        "base_offset", "stem", "fd", "size", "next_offset", "max_timestamp", "rolling_ms", "interval",
        "idx_off", "idx_pos", "ts_max", "ts_off", "since_index", "indexed_bytes",
    )

    def __init__(self, directory: Path, base_offset: int, fd: int, interval: int) -> None:
        self.base_offset = base_offset
        self.stem = segment_stem(directory, base_offset)
        self.fd = fd
        self.size = 0
        self.next_offset = base_offset
        self.max_timestamp = NO_TIMESTAMP
        self.rolling_ms: int | None = None
        self.interval = interval
        # Sparse offset index: absolute base offset and position of every indexed batch (bisect on arrays).
        self.idx_off = array("q")
        self.idx_pos = array("q")
        # Time index: max timestamp so far (strictly increasing) and the offset-index entry where it was reached.
        self.ts_max = array("q")
        self.ts_off = array("q")
        self.since_index = 0  # bytes appended since the last offset-index entry, as Kafka counts them
        self.indexed_bytes = -1  # log size the on-disk index files describe; -1 = none written by us

    # -- lifecycle -------------------------------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, base_offset: int, interval: int) -> "Segment":
        """A new empty segment; stale files of the same base (left by a crash) are replaced. Raises OSError."""
        stem = segment_stem(directory, base_offset)
        for suffix in (".index", ".timeindex"):
            _unlink_quiet(stem.with_suffix(suffix))
        fd = os.open(stem.with_suffix(".log"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        return cls(directory, base_offset, fd, interval)

    @classmethod
    def open_existing(cls, directory: Path, base_offset: int, interval: int) -> tuple["Segment", int]:
        """Open an existing segment without reading it; returns it and the .log file's length. Raises OSError."""
        fd = os.open(segment_stem(directory, base_offset).with_suffix(".log"), os.O_RDWR)
        return cls(directory, base_offset, fd, interval), os.fstat(fd).st_size

    def fsync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1  # a stale fd number may be reused by another file: never touch it again
            os.close(fd)

    def delete(self) -> None:
        """Close and remove the .log and its index files (the .log first: an index without its log is an orphan)."""
        self.close()
        for suffix in (".log", ".index", ".timeindex"):
            _unlink_quiet(self.stem.with_suffix(suffix))

    # -- writing ---------------------------------------------------------------------------------------------------

    def append(self, stamp: bytes, body: memoryview, base: int, next_offset: int, max_ts: int, now_ms: int) -> None:
        """Write one batch (``stamp`` = its 8 offset bytes, ``body`` = the rest) at ``size``.

        Positional writes: a failed write that could not be cut back is overwritten by the next one and never read.
        Raises OSError after truncating back to the old size.
        """
        pos = self.size
        n = 8 + len(body)
        fd = self.fd
        try:
            written = os.pwritev(fd, (stamp, body), pos)
            while written < n:  # short write (signal, full disk): continue where it stopped
                bufs = (stamp[written:], body) if written < 8 else (body[written - 8 :],)
                more = os.pwritev(fd, bufs, pos + written)
                if more <= 0:
                    raise OSError(28, "no progress writing batch")
                written += more
        except OSError:
            try:
                os.ftruncate(fd, pos)
            except OSError:
                pass
            raise
        self.size = pos + n
        self.next_offset = next_offset
        if self.rolling_ms is None:
            self.rolling_ms = now_ms
        self._note(base, pos, n, max_ts)

    def _note(self, base: int, pos: int, n: int, max_ts: int) -> None:
        """Index a batch just stored at ``pos`` (``n`` bytes), the way Kafka's LogSegment.append does."""
        if max_ts > self.max_timestamp:
            self.max_timestamp = max_ts
        if self.since_index >= self.interval:
            self.idx_off.append(base)
            self.idx_pos.append(pos)
            self.since_index = 0
            ts_max = self.ts_max
            if not ts_max or self.max_timestamp > ts_max[-1]:
                ts_max.append(self.max_timestamp)
                self.ts_off.append(base)
        self.since_index += n

    def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes physically and durably; index files describing more are removed."""
        os.ftruncate(self.fd, size)
        os.fsync(self.fd)
        for suffix in (".index", ".timeindex"):
            _unlink_quiet(self.stem.with_suffix(suffix))
        self.indexed_bytes = -1

    # -- recovery --------------------------------------------------------------------------------------------------

    def scan(self, start_pos: int, start_offset: int, file_size: int, now_ms: int) -> int:
        """Check batches from ``start_pos`` (a known batch boundary holding ``start_offset``) to ``file_size``.

        Each batch must fit in the file, have a sane header, continue the offsets and match its CRC; stops at the
        first that does not (torn write, zero fill, garbage). Indexes the good ones. Returns the valid length,
        which becomes ``size``; the caller truncates the rest. Raises OSError.
        """
        pos = start_pos
        expect = start_offset
        buf = b""
        buf_at = pos
        first_ts: int | None = None
        while file_size - pos >= HEADER_BYTES:
            if pos + HEADER_BYTES > buf_at + len(buf):
                buf = os.pread(self.fd, SCAN_CHUNK_BYTES, pos)
                buf_at = pos
                if len(buf) < HEADER_BYTES:
                    break
            h = _unpack_header(buf, pos - buf_at)
            length = h[1]
            n = length + LENGTH_PREFIX_BYTES
            if (h[0] != expect or length < _MIN_LENGTH or pos + n > file_size or h[3] != MAGIC or h[4] != 0
                    or h[11] < 1 or h[5] != h[11] - 1):
                break
            if pos + n > buf_at + len(buf):
                buf = os.pread(self.fd, max(SCAN_CHUNK_BYTES, n), pos)
                buf_at = pos
                if len(buf) < n:
                    break
            if not verify_crc(buf, pos - buf_at):
                break
            if pos == 0:
                first_ts = h[7]
            self._note(expect, pos, n, h[7])
            expect += h[11]
            pos += n
        self.size = pos
        self.next_offset = expect
        if first_ts is not None:
            # Kafka's rule after a restart: age counts from the first batch's timestamp (clamped: never future).
            self.rolling_ms = min(first_ts, now_ms)
        return pos

    def iter_headers(self) -> Iterator[tuple]:
        """Every batch header in the segment as a raw tuple (``HEADER`` field order), in order. Raises OSError."""
        pos = 0
        size = self.size
        while size - pos >= HEADER_BYTES:
            buf = os.pread(self.fd, min(SCAN_CHUNK_BYTES, size - pos), pos)
            at = pos
            while pos + HEADER_BYTES <= at + len(buf):
                h = _unpack_header(buf, pos - at)
                if h[1] < _MIN_LENGTH:  # recovery left only whole batches; never loop on damage
                    return
                yield h
                pos += h[1] + LENGTH_PREFIX_BYTES
            if len(buf) < HEADER_BYTES:
                return

    def load_index_files(self, file_size: int) -> bool:
        """Adopt the on-disk indexes if both are intact and describe at most ``file_size`` bytes of this .log.

        On success ``size``/``next_offset``/``max_timestamp`` describe the prefix they cover (the recovery point);
        anything past it must still be scanned. Returns False (and changes nothing) otherwise.
        """
        raw = read_file(self.stem.with_suffix(".index"))
        traw = read_file(self.stem.with_suffix(".timeindex"))
        body = unseal(raw) if raw is not None else None
        tbody = unseal(traw) if traw is not None else None
        if body is None or tbody is None:
            return False
        n_idx, rem = divmod(len(body) - _INDEX_TRAILER.size, _OFFSET_ENTRY.size)
        n_ts, trem = divmod(len(tbody) - _TIMEINDEX_TRAILER.size, _TIME_ENTRY.size)
        if n_idx < 0 or rem or n_ts < 0 or trem:
            return False
        log_bytes, next_offset, max_ts, rolling = _INDEX_TRAILER.unpack_from(body, len(body) - _INDEX_TRAILER.size)
        (t_log_bytes,) = _TIMEINDEX_TRAILER.unpack_from(tbody, len(tbody) - _TIMEINDEX_TRAILER.size)
        base = self.base_offset
        if log_bytes != t_log_bytes or log_bytes > file_size or next_offset < base:
            return False
        flat = struct.unpack_from(f">{2 * n_idx}I", body)
        idx_off = array("q", (base + r for r in flat[0::2]))
        idx_pos = array("q", flat[1::2])
        tflat = struct.unpack_from(">" + "qI" * n_ts, tbody)
        ts_max = array("q", tflat[0::2])
        ts_off = array("q", (base + r for r in tflat[1::2]))
        if not (_increasing(idx_off) and _increasing(idx_pos) and _increasing(ts_max) and _increasing(ts_off)):
            return False
        if (idx_pos and idx_pos[-1] >= log_bytes) or (idx_off and idx_off[-1] >= next_offset):
            return False
        if ts_off and (ts_off[-1] >= next_offset or ts_max[-1] > max_ts):
            return False
        self.idx_off, self.idx_pos, self.ts_max, self.ts_off = idx_off, idx_pos, ts_max, ts_off
        self.size = log_bytes
        self.next_offset = next_offset
        self.max_timestamp = max_ts
        self.rolling_ms = None if rolling == NO_TIMESTAMP else rolling
        self.since_index = log_bytes - (idx_pos[-1] if idx_pos else 0)
        self.indexed_bytes = log_bytes
        return True

    def write_index_files(self) -> None:
        """Write .index/.timeindex for the current contents (callers fsync the .log first). Raises OSError.

        Not fsynced and not renamed: a torn index fails its CRC, an old one describes a prefix; both are safe.
        """
        if self.indexed_bytes == self.size:
            return
        base = self.base_offset
        flat = [0] * (2 * len(self.idx_off))
        flat[0::2] = [o - base for o in self.idx_off]
        flat[1::2] = self.idx_pos
        rolling = NO_TIMESTAMP if self.rolling_ms is None else self.rolling_ms
        body = struct.pack(f">{len(flat)}I", *flat) + _INDEX_TRAILER.pack(
            self.size, self.next_offset, self.max_timestamp, rolling
        )
        tflat: list[int] = [0] * (2 * len(self.ts_max))
        tflat[0::2] = self.ts_max
        tflat[1::2] = [o - base for o in self.ts_off]
        tbody = struct.pack(">" + "qI" * len(self.ts_max), *tflat) + _TIMEINDEX_TRAILER.pack(self.size)
        write_file(self.stem.with_suffix(".index"), seal(body), fsync=False)
        write_file(self.stem.with_suffix(".timeindex"), seal(tbody), fsync=False)
        self.indexed_bytes = self.size

    # -- reading ---------------------------------------------------------------------------------------------------

    def lookup(self, offset: int) -> tuple[int, int]:
        """(base offset, position) of the last indexed batch starting at or before ``offset``."""
        i = bisect_right(self.idx_off, offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self.idx_off[i], self.idx_pos[i]

    def read_batches(
        self, offset: int, budget: int, upto: int, take_first: bool, readahead: int, verify: bool = True
    ) -> tuple[bytes | memoryview, bool]:
        """Whole batches from the one containing ``offset`` while their total stays <= ``budget`` bytes and their
        base offsets stay below ``upto``; the first is taken whatever its size if ``take_first`` (KIP-74).

        With ``verify`` every returned batch's CRC is checked (closed segments: bytes at rest). The active segment
        skips it: its batches were checked on the way in (produce, or recovery at start) and consumers check the
        CRC again. Returns ``(data, reached_segment_end)``. Raises SegmentCorrupt, OSError.
        """
        expect, pos = self.lookup(offset)
        size = self.size
        fd = self.fd
        buf = os.pread(fd, min(size - pos, readahead), pos)
        view = memoryview(buf)
        buf_at = pos
        buf_end = pos + len(buf)
        start = -1
        p = pos
        while p < size:
            if p + HEADER_BYTES > buf_end:
                keep = start if start >= 0 else p
                buf = os.pread(fd, max(p + HEADER_BYTES, min(size, p + readahead)) - keep, keep)
                view = memoryview(buf)
                buf_at = keep
                buf_end = keep + len(buf)
                if p + HEADER_BYTES > buf_end:
                    raise SegmentCorrupt(expect, p, "segment file shorter than its index says")
            h = _unpack_header(buf, p - buf_at)
            n = h[1] + LENGTH_PREFIX_BYTES
            if h[0] != expect or h[1] < _MIN_LENGTH or p + n > size:
                raise SegmentCorrupt(expect, p, "batch header breaks offset continuity or length")
            last = expect + h[5]
            if start < 0:
                if last < offset:
                    expect = last + 1
                    p += n
                    continue
                if not take_first and (expect >= upto or n > budget):
                    return b"", False
                start = p
            elif expect >= upto or p + n - start > budget:
                return view[start - buf_at : p - buf_at], False  # a view: the fetch path copies no data
            if p + n > buf_end:
                buf = os.pread(fd, max(p + n, min(size, p + readahead)) - start, start)
                view = memoryview(buf)
                buf_at = start
                buf_end = start + len(buf)
                if p + n > buf_end:
                    raise SegmentCorrupt(expect, p, "segment file shorter than its index says")
            q = p - buf_at
            if verify and _crc32(view[q + CRC_START : q + n]) != h[2]:  # verify_crc inlined: the fetch hot path
                raise SegmentCorrupt(expect, p, "batch failed its CRC check")
            expect = last + 1
            p += n
        if start < 0:
            return b"", True
        if start == buf_at and p == buf_end:
            return buf, True
        return view[start - buf_at : p - buf_at], True

    def batches_from_time(self, timestamp_ms: int) -> Iterator[bytes]:
        """CRC-checked batches, in offset order, from the first whose max timestamp is >= ``timestamp_ms``.

        The time index holds max-timestamp-so-far, so every batch before the entry preceding the first entry >= t
        is older than t; the scan starts there. Raises SegmentCorrupt, OSError.
        """
        i = bisect_left(self.ts_max, timestamp_ms)
        expect, pos = self.lookup(self.ts_off[i - 1]) if i > 0 else (self.base_offset, 0)
        size = self.size
        buf = b""
        buf_at = pos
        while pos < size:
            if pos + HEADER_BYTES > buf_at + len(buf):
                buf = os.pread(self.fd, min(size - pos, SCAN_CHUNK_BYTES), pos)
                buf_at = pos
            h = _unpack_header(buf, pos - buf_at) if pos + HEADER_BYTES <= buf_at + len(buf) else None
            if h is None or h[0] != expect or h[1] < _MIN_LENGTH or pos + h[1] + LENGTH_PREFIX_BYTES > size:
                raise SegmentCorrupt(expect, pos, "batch header breaks offset continuity or length")
            n = h[1] + LENGTH_PREFIX_BYTES
            if h[7] >= timestamp_ms:
                if pos + n > buf_at + len(buf):
                    buf = os.pread(self.fd, max(n, min(size - pos, SCAN_CHUNK_BYTES)), pos)
                    buf_at = pos
                if len(buf) - (pos - buf_at) < n or not verify_crc(buf, pos - buf_at):
                    raise SegmentCorrupt(expect, pos, "batch failed its CRC check")
                yield buf[pos - buf_at : pos - buf_at + n]
            expect += h[5] + 1
            pos += n


def _increasing(values: array) -> bool:
    return all(a < b for a, b in zip(values, values[1:]))


def _unlink_quiet(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
