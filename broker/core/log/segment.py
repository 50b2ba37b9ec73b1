# One segment of a partition log: a .log file of stored batches starting at one base offset, with its sparse offset
# index and time index kept in memory and written to .index/.timeindex when the segment closes. Owns one segment's
# file layout, its quarantined ranges (recovery.py finds them) and its byte-level reads, which step over those ranges
# and report them. Must not know about topics, retention or fsync policy; raises SegmentCorrupt / OSError and lets
# the file store turn them into wire errors. The batch layout comes from the BatchFormat it is given (only
# base_offset and batch_length, the first 12 bytes, are assumed).
from __future__ import annotations

import os
import struct
from array import array
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import Iterator

from millpond.broker.core.log import faults
from millpond.broker.core.log.batch_format import LENGTH_PREFIX_BYTES, BatchFormat
from millpond.broker.core.log.files import read_file, seal, unseal, write_file
from millpond.broker.core.log.recovery import find_damage
from millpond.broker.core.log.store import NO_TIMESTAMP, Damage, SegmentCorrupt

SCAN_CHUNK_BYTES = 1 << 20
# Index files: Kafka's entry layouts, then a trailer describing the .log they were written for (so an index older
# than its log is extended by scanning from log_bytes, the segment's recovery point), then a CRC over everything.
_OFFSET_ENTRY = struct.Struct(">II")  # offset relative to the base, position in the .log
_TIME_ENTRY = struct.Struct(">qI")  # max timestamp so far, offset relative to the base
_INDEX_TRAILER = struct.Struct(">Qqqq")  # log_bytes, next_offset, max_timestamp, rolling_ms (NO_TIMESTAMP = none)
_TIMEINDEX_TRAILER = struct.Struct(">Q")  # log_bytes
SIDE_SUFFIXES = (".index", ".timeindex", ".corrupt")  # files that belong to a .log (.corrupt: recovery.py)
_NO_DAMAGE = 1 << 62  # a position no read reaches


def segment_stem(directory: Path, base_offset: int) -> Path:
    return directory / f"{base_offset:020d}"


class Segment:
    """One ``<base>.log`` file. Offsets are absolute; positions are byte offsets into the file.

    ``size`` is the byte length of the valid batches (never trust the file length: recovery and failed writes
    leave it behind). ``next_offset`` is one past the last stored record. ``rolling_ms`` is the wall-clock ms of
    the first append (segment age for ``segment_ms``), or None while the segment is empty.
    """

    __slots__ = (
        "base_offset", "stem", "fd", "size", "next_offset", "max_timestamp", "rolling_ms", "interval", "fmt",
        "idx_off", "idx_pos", "ts_max", "ts_off", "since_index", "indexed_bytes", "damage", "damage_at",
        "unverified", "new_damage",
    )

    def __init__(self, directory: Path, base_offset: int, fd: int, interval: int, fmt: BatchFormat) -> None:
        self.fmt = fmt
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
        self.damage: list[Damage] = []  # quarantined ranges, by position: reads step over them
        self.damage_at: list[int] = []  # their positions, for bisect
        self.unverified = 0  # bytes below this were taken from disk unchecked (an index): reads check their CRC
        self.new_damage: list[Damage] = []  # found by a read, not yet logged and recorded by the store

    # -- lifecycle -------------------------------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, base_offset: int, interval: int, fmt: BatchFormat) -> "Segment":
        """A new empty segment; stale files of the same base (left by a crash) are replaced. Raises OSError."""
        stem = segment_stem(directory, base_offset)
        for suffix in SIDE_SUFFIXES:
            _unlink_quiet(stem.with_suffix(suffix))
        fd = os.open(stem.with_suffix(".log"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        return cls(directory, base_offset, fd, interval, fmt)

    @classmethod
    def adopt(cls, directory: Path, base_offset: int, interval: int, fmt: BatchFormat, spare: Path,
              spare_fd: int) -> "Segment":
        """A new empty segment made of a pre-created empty file (``spare``, open as ``spare_fd``): one rename, no
        file creation. Index files of this base cannot exist (bases are never reused). Raises OSError."""
        os.rename(spare, segment_stem(directory, base_offset).with_suffix(".log"))
        return cls(directory, base_offset, spare_fd, interval, fmt)

    @classmethod
    def open_existing(cls, directory: Path, base_offset: int, interval: int, fmt: BatchFormat) -> tuple["Segment", int]:
        """Open an existing segment without reading it; returns it and the .log file's length. Raises OSError."""
        fd = os.open(segment_stem(directory, base_offset).with_suffix(".log"), os.O_RDWR)
        return cls(directory, base_offset, fd, interval, fmt), os.fstat(fd).st_size

    def fsync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1  # a stale fd number may be reused by another file: never touch it again
            os.close(fd)

    def delete(self) -> None:
        """Close and remove the .log and its index files (the .log first: an index without its log is an orphan)."""
        self.close()
        for suffix in (".log", *SIDE_SUFFIXES):
            _unlink_quiet(self.stem.with_suffix(suffix))

    # -- writing ---------------------------------------------------------------------------------------------------

    def append(self, stamp: bytes, body: memoryview, base: int, next_offset: int, max_ts: int, now_ms: int) -> None:
        """Write one batch (``stamp`` = its first bytes as the log stamps them, ``body`` = the rest) at ``size``.

        Positional writes: a failed write that could not be cut back is overwritten by the next one and never read.
        Raises OSError after truncating back to the old size.
        """
        pos = self.size
        k = len(stamp)
        n = k + len(body)
        fd = self.fd
        try:
            written = os.pwritev(fd, (stamp, body), pos)
            while written < n:  # short write (signal, full disk): continue where it stopped
                bufs = (stamp[written:], body) if written < k else (body[written - k :],)
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
        self.note(base, pos, n, max_ts)

    def note(self, base: int, pos: int, n: int, max_ts: int) -> None:
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

    # -- quarantined ranges ------------------------------------------------------------------------------------------

    def add_damage(self, found: list[Damage]) -> None:
        """Quarantine ``found`` (reads step over those bytes and report those offsets)."""
        merged = sorted(set(self.damage) | set(found), key=lambda d: (d.position, d.first))
        self.damage[:] = merged  # in place: a read in progress holds these lists
        self.damage_at[:] = [d.position for d in merged]

    def _damage_from(self, pos: int) -> int:
        """Index in ``damage`` of the first range at or after ``pos``."""
        return bisect_left(self.damage_at, pos)

    def _found(self, pos: int, expect: int, reason: str) -> int:
        """A read met a bad batch at ``pos``: quarantine it (once) and return its index in ``damage``."""
        d = find_damage(self, pos, expect, reason)
        self.add_damage([d])
        self.new_damage.append(d)
        return self._damage_from(pos)

    def iter_headers(self) -> Iterator[tuple]:
        """Every intact batch header in the segment as a raw tuple (the format's field order), in order, stepping
        over quarantined ranges. Raises OSError."""
        header_bytes, min_length, unpack = self.fmt.header_bytes, self.fmt.min_length, self.fmt.unpack
        pos = 0
        size = self.size
        k = 0
        damage = self.damage
        while size - pos >= header_bytes:
            buf = os.pread(self.fd, min(SCAN_CHUNK_BYTES, size - pos), pos)
            at = pos
            while pos + header_bytes <= at + len(buf):
                while k < len(damage) and damage[k].position < pos:
                    k += 1
                if k < len(damage) and damage[k].position == pos:
                    pos += damage[k].nbytes
                    k += 1
                    break  # read again from after the quarantined bytes
                h = unpack(buf, pos - at)
                if h[1] < min_length:  # recovery left only whole batches; never loop on damage
                    return
                yield h
                pos += h[1] + LENGTH_PREFIX_BYTES
            if len(buf) < header_bytes:
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

    def reset(self) -> None:
        """Forget what a load of index files set (they did not agree with the .log): the scan starts afresh."""
        self.size = 0
        self.next_offset = self.base_offset
        self.max_timestamp = NO_TIMESTAMP
        self.rolling_ms = None
        self.idx_off, self.idx_pos, self.ts_max, self.ts_off = array("q"), array("q"), array("q"), array("q")
        self.since_index = 0
        self.indexed_bytes = -1
        self.damage, self.damage_at = [], []

    def index_agrees(self, bound: int | None) -> bool:
        """After ``load_index_files``: a cheap check that the index describes this .log (indexes carry no
        checksum of the log): the batch at the last entry starts with that entry's offset, and a closed segment's
        offsets end at ``bound``, the next segment's base. Raises OSError."""
        if bound is not None and self.next_offset != bound:
            return False
        if not self.size:
            return self.next_offset == self.base_offset
        off, pos = (self.idx_off[-1], self.idx_pos[-1]) if self.idx_off else (self.base_offset, 0)
        if pos in self.damage_at:
            return True
        raw = os.pread(self.fd, self.fmt.header_bytes, pos)
        if len(raw) < self.fmt.header_bytes:
            return False
        h = self.fmt.unpack(raw, 0)
        return h[0] == off and self.fmt.sane(h)

    def write_index_files(self) -> None:
        """Write .index/.timeindex for the current contents (callers fsync the .log first). Raises OSError.

        Not fsynced and not renamed: a torn index fails its CRC, an old one describes a prefix; both are safe.
        """
        if self.indexed_bytes == self.size:
            return
        write_index_contents(self.stem, self.index_contents())
        self.indexed_bytes = self.size

    def index_contents(self) -> tuple[int, bytes, bytes]:
        """``(log_bytes, .index bytes, .timeindex bytes)`` describing the current contents. Reads the segment only:
        safe from a worker thread once the segment no longer takes appends (rolled)."""
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
        return self.size, seal(body), seal(tbody)

    # -- reading ---------------------------------------------------------------------------------------------------

    def lookup(self, offset: int) -> tuple[int, int]:
        """(base offset, position) of the last indexed batch starting at or before ``offset``."""
        i = bisect_right(self.idx_off, offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self.idx_off[i], self.idx_pos[i]

    def read_batches(
        self, offset: int, budget: int, upto: int, take_first: bool, readahead: int, verify_end: int = _NO_DAMAGE
    ) -> tuple[bytes | memoryview, bool]:
        """Whole batches from the one containing ``offset`` while their total stays <= ``budget`` bytes and their
        base offsets stay below ``upto``; the first is taken whatever its size if ``take_first`` (KIP-74).

        Batches at positions below ``verify_end`` have their CRC checked (closed segments: all; the active one:
        what was taken unchecked at start, see ``unverified``). The active segment's other batches were checked on
        the way in (produce, or the scan at start) and consumers check the CRC again. Quarantined ranges are
        stepped over before ``offset``; reaching one holding offsets to return raises ``SegmentCorrupt`` with the
        batches before it in ``data``; a bad batch found here is quarantined first (``new_damage``). Returns
        ``(data, reached_segment_end)``. Raises SegmentCorrupt, OSError.
        """
        fmt = self.fmt
        header_bytes, min_length, unpack = fmt.header_bytes, fmt.min_length, fmt.unpack
        crc, crc_start, crc_at, last_at = fmt.crc, fmt.crc_start, fmt.CRC_AT, fmt.LAST_DELTA_AT
        expect, pos = self.lookup(offset)
        size = self.size
        fd = self.fd
        damage = self.damage
        k = self._damage_from(pos)
        next_damage = damage[k].position if k < len(damage) else _NO_DAMAGE
        buf = os.pread(fd, min(size - pos, readahead), pos)
        view = memoryview(buf)
        buf_at = pos
        buf_end = pos + len(buf)
        start = -1
        p = pos
        while True:
            # the batch loop runs up to the next quarantined range (or the end) with one comparison a batch
            stop = next_damage if next_damage < size else size
            while p < stop:
                if p + header_bytes > buf_end:
                    keep = start if start >= 0 else p
                    buf = os.pread(fd, max(p + header_bytes, min(size, p + readahead)) - keep, keep)
                    view = memoryview(buf)
                    buf_at = keep
                    buf_end = keep + len(buf)
                    if p + header_bytes > buf_end:
                        k = self._found(p, expect, "segment file shorter than its size")
                        next_damage = stop = p
                        continue
                h = unpack(buf, p - buf_at)
                n = h[1] + LENGTH_PREFIX_BYTES
                if h[0] != expect or h[1] < min_length or p + n > size:
                    k = self._found(p, expect, "batch header breaks offset continuity or length")
                    next_damage = stop = p
                    continue
                last = expect + h[last_at]
                if start < 0:
                    if last < offset:
                        if p >= verify_end:
                            expect = last + 1
                            p += n
                            continue
                        # below the offset asked, but its last offset delta decides where the walk goes: check it
                    elif not take_first and (expect >= upto or n > budget):
                        return b"", False
                    else:
                        start = p
                elif expect >= upto or p + n - start > budget:
                    return view[start - buf_at : p - buf_at], False  # a view: the fetch path copies no data
                if p + n > buf_end:
                    keep = start if start >= 0 else p
                    buf = os.pread(fd, max(p + n, min(size, p + readahead)) - keep, keep)
                    view = memoryview(buf)
                    buf_at = keep
                    buf_end = keep + len(buf)
                    if p + n > buf_end:
                        k = self._found(p, expect, "segment file shorter than its size")
                        next_damage = stop = p
                        if start == p:
                            start = -1
                        continue
                q = p - buf_at
                if p < verify_end and crc(view[q + crc_start : q + n]) != h[crc_at]:  # crc_ok inlined: the hot path
                    k = self._found(p, expect, "batch failed its CRC check")
                    next_damage = stop = p
                    if start == p:
                        start = -1
                    continue
                expect = last + 1
                p += n
            if p != next_damage:
                if p >= size:
                    break
                k = self._damage_from(p)  # not reached on a range's own position: take the next one after p
                next_damage = damage[k].position if k < len(damage) else _NO_DAMAGE
                continue
            d = damage[k]
            if start >= 0 and (d.first == d.end or d.first >= upto):
                return view[start - buf_at : p - buf_at], False  # contiguous bytes only; the next read steps on
            if d.first == d.end or d.end <= offset:
                p += d.nbytes  # before what was asked (or no offsets): step over
                expect = d.end
                k += 1
                next_damage = damage[k].position if k < len(damage) else _NO_DAMAGE
                continue
            data = view[start - buf_at : p - buf_at] if start >= 0 else b""
            raise SegmentCorrupt(d.first, d.position, d.reason, d.end, data)
        if start < 0:
            return b"", True
        if start == buf_at and p == buf_end:
            return buf, True
        return view[start - buf_at : p - buf_at], True

    def batches_from_time(self, timestamp_ms: int) -> Iterator[bytes]:
        """CRC-checked batches, in offset order, from the first whose max timestamp is >= ``timestamp_ms``,
        stepping over quarantined ranges (a bad batch found here is quarantined first, as by ``read_batches``).

        The time index holds max-timestamp-so-far, so every batch before the entry preceding the first entry >= t
        is older than t; the scan starts there. Raises OSError.
        """
        fmt = self.fmt
        header_bytes, min_length, unpack = fmt.header_bytes, fmt.min_length, fmt.unpack
        i = bisect_left(self.ts_max, timestamp_ms)
        expect, pos = self.lookup(self.ts_off[i - 1]) if i > 0 else (self.base_offset, 0)
        size = self.size
        damage = self.damage
        k = self._damage_from(pos)
        buf = b""
        buf_at = pos
        while pos < size:
            if k < len(damage) and damage[k].position == pos:
                pos += damage[k].nbytes
                expect = damage[k].end
                k += 1
                continue
            if pos + header_bytes > buf_at + len(buf):
                buf = os.pread(self.fd, min(size - pos, SCAN_CHUNK_BYTES), pos)
                buf_at = pos
            h = unpack(buf, pos - buf_at) if pos + header_bytes <= buf_at + len(buf) else None
            if h is None or h[0] != expect or h[1] < min_length or pos + h[1] + LENGTH_PREFIX_BYTES > size:
                k = self._found(pos, expect, "batch header breaks offset continuity or length")
                continue
            n = h[1] + LENGTH_PREFIX_BYTES
            # every batch walked is checked, the ones skipped too: a damaged offset delta would misplace the walk
            if pos + n > buf_at + len(buf):
                buf = os.pread(self.fd, max(n, min(size - pos, SCAN_CHUNK_BYTES)), pos)
                buf_at = pos
            if len(buf) - (pos - buf_at) < n or not fmt.crc_ok(buf, pos - buf_at, n, h):
                k = self._found(pos, expect, "batch failed its CRC check")
                continue
            if h[fmt.MAX_TS_AT] >= timestamp_ms:
                yield buf[pos - buf_at : pos - buf_at + n]
            expect += h[fmt.LAST_DELTA_AT] + 1
            pos += n


def write_index_contents(stem: Path, contents: tuple[int, bytes, bytes]) -> None:
    """Write what ``Segment.index_contents`` gave as ``stem``'s .index/.timeindex. Raises OSError."""
    _, index, timeindex = contents
    write_file(stem.with_suffix(".index"), index, fsync=False)
    if faults.armed:
        faults.hit("index")
    write_file(stem.with_suffix(".timeindex"), timeindex, fsync=False)


def _increasing(values: array) -> bool:
    return all(a < b for a, b in zip(values, values[1:]))


def _unlink_quiet(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
