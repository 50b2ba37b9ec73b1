# Telling a torn tail from damage in one segment file: the recovery scan (every batch checked: header, offset
# continuity, CRC), the resync that finds the next intact batch after a bad one by the format's sync marker and CRC
# (never by the bad batch's own length), and the sidecar file that records a segment's quarantined ranges. Only the
# active segment's tail can be torn (cut by the caller); anything else bad is a Damage whose bytes stay in the file
# and whose offsets are never reused. Must not know about topics, partitions, retention or fsync policy.
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from millpond.broker.core.log.batch_format import LENGTH_PREFIX_BYTES
from millpond.broker.core.log.files import load_record, save_record
from millpond.broker.core.log.store import Damage
from millpond.broker.wire.errors import StorageError

if TYPE_CHECKING:
    from millpond.broker.core.log.segment import Segment

_log = logging.getLogger("millpond.log")
SCAN_CHUNK_BYTES = 1 << 20
DAMAGE_SUFFIX = ".corrupt"  # <base>.corrupt: the segment's quarantined ranges (sealed msgpack)


class _Window:
    """Positional reads of one file up to ``end``, one chunk kept."""

    __slots__ = ("fd", "end", "buf", "at")

    def __init__(self, fd: int, end: int) -> None:
        self.fd = fd
        self.end = end
        self.buf = b""
        self.at = 0

    def get(self, pos: int, n: int) -> int:
        """Make bytes ``pos``..``pos + n - 1`` available in ``buf``; returns their index there, or -1 if the file
        (as far as ``end``) does not hold them."""
        if pos < 0 or pos + n > self.end:
            return -1
        if pos < self.at or pos + n > self.at + len(self.buf):
            self.buf = os.pread(self.fd, min(max(n, SCAN_CHUNK_BYTES), self.end - pos), pos)
            self.at = pos
            if len(self.buf) < n:
                return -1
        return pos - self.at


def intact_at(seg: Segment, win: _Window, pos: int) -> tuple | None:
    """The header of the whole, intact batch at ``pos`` (sane fields, CRC), whatever its base offset says, or None."""
    fmt = seg.fmt
    rel = win.get(pos, fmt.header_bytes)
    if rel < 0:
        return None
    h = fmt.unpack(win.buf, rel)
    n = h[1] + LENGTH_PREFIX_BYTES
    if h[1] < fmt.min_length or not fmt.sane(h):
        return None
    rel = win.get(pos, n)
    if rel < 0 or not fmt.crc_ok(win.buf, rel, n, h):
        return None
    return h


# A record in a v2 batch takes at least 7 bytes (length, attributes, timestamp delta, offset delta, key length, value
# length, header count: one byte each at their smallest): how many offsets a damaged byte range can have held.
RECORD_BYTES_MIN = 7
RUN_CHECK = 4  # intact batches after a resync point whose base offsets vote on where it starts


def resync(seg: Segment, win: _Window, start: int, low: int, high: int | None) -> tuple[int, tuple, int] | None:
    """``(position, header, base offset)`` of the first intact batch at or after byte ``start`` whose offsets lie in
    ``low``..``high - 1``, found by the format's sync marker then checked whole (CRC), or None.

    The base offset field lies outside the CRC (the broker stamps it), so one damaged field must not place a batch:
    the base offset returned is the one most of the next ``RUN_CHECK`` contiguous intact batches agree on (each
    votes with its own field minus the records before it; a run reaching the end of a closed segment also votes
    with ``high``), among those the bytes skipped could have held (``RECORD_BYTES_MIN``); a batch no plausible
    vote places is skipped."""
    fmt = seg.fmt
    marker, at = fmt.sync_marker, fmt.sync_at
    pos = start
    skipped_from = start - 1
    while pos + fmt.header_bytes <= win.end:
        chunk = os.pread(seg.fd, min(SCAN_CHUNK_BYTES, win.end - pos - at), pos + at)
        if len(chunk) < len(marker):
            return None
        i = chunk.find(marker)
        while i >= 0:
            q = pos + i
            h = intact_at(seg, win, q)
            if h is not None:
                base = _placed(seg, win, q, h, low, high, low + max(0, q - skipped_from) // RECORD_BYTES_MIN)
                if base is not None:
                    return q, h, base
            i = chunk.find(marker, i + 1)
        pos += len(chunk) - len(marker) + 1  # overlap: a marker across the chunk boundary is still found
    return None


def _placed(seg: Segment, win: _Window, q: int, h: tuple, low: int, high: int | None, most: int) -> int | None:
    """Where the run of intact batches from ``q`` starts by the vote ``resync`` describes, or None."""
    count_at = seg.fmt.COUNT_AT
    votes: dict[int, int] = {}
    before, pos, run = 0, q, h
    for _ in range(RUN_CHECK):
        start = run[0] - before
        votes[start] = votes.get(start, 0) + 1
        before += run[count_at]
        pos += run[1] + LENGTH_PREFIX_BYTES
        run = intact_at(seg, win, pos)
        if run is None:
            break
    if run is None and pos == win.end and high is not None:
        votes[high - before] = votes.get(high - before, 0) + 1
    fits = [(n, -start) for start, n in votes.items()
            if low <= start <= most and (high is None or start + h[count_at] <= high)]
    return -max(fits)[1] if fits else None


def scan(seg: Segment, start_pos: int, start_offset: int, file_size: int, bound: int | None,
         now_ms: int) -> list[Damage]:
    """Check every batch of ``seg`` from ``start_pos`` (a batch boundary holding ``start_offset``) to
    ``file_size``, indexing the intact ones. ``bound``: the next segment's base offset (a closed segment: its
    offsets end exactly there) or None (the active segment).

    A bad batch followed by an intact one (found by ``resync``) is damage: its offsets run up to the intact one's
    base. In a closed segment whatever is bad up to the file end is damage too, its offsets running to ``bound``.
    In the active segment a bad tail is torn (left past ``seg.size`` for the caller to cut) unless its header is
    whole and stamped as the next batch (base offset, sane fields, length inside the file): then only its bytes
    fail, it may have been acknowledged, and its offsets are quarantined rather than given out again.
    Sets ``size`` (valid and quarantined bytes) and ``next_offset``; returns the damage found. Raises OSError.
    """
    fmt = seg.fmt
    count_at, max_ts_at = fmt.COUNT_AT, fmt.MAX_TS_AT
    win = _Window(seg.fd, file_size)
    pos, expect = start_pos, start_offset
    found: list[Damage] = []
    first_ts: int | None = None
    while pos < file_size:
        h = intact_at(seg, win, pos)
        if h is not None and bound is not None and expect + h[count_at] > bound:
            h = None
        elif h is not None and h[0] != expect:
            # Intact where the previous batch ended but stamped with another base offset: only that field (outside
            # the CRC) is damaged, as offsets are dense in a segment; it is written back as it was.
            _restamp(seg, pos, h, expect)
        if h is not None:
            n = h[1] + LENGTH_PREFIX_BYTES
            if pos == 0:
                first_ts = h[max_ts_at]
            seg.note(expect, pos, n, h[max_ts_at])
            expect += h[count_at]
            pos += n
            continue
        nxt = resync(seg, win, pos + 1, expect, bound)
        if nxt is not None:
            q, h, base = nxt
            found.append(Damage(expect, base, pos, q - pos, "batch failed its header or CRC check"))
            seg.since_index = seg.interval  # index the batch after the damage: lookups past it start there
            expect, pos = base, q  # the batch at q is taken next (its field restamped if it was the damaged one)
            continue
        if bound is not None:
            found.append(Damage(expect, bound, pos, file_size - pos,
                                "no intact batch up to the segment's end" if expect < bound
                                else "bytes after the segment's last batch"))
            expect, pos = bound, file_size
            break
        rel = win.get(pos, fmt.header_bytes)
        h = fmt.unpack(win.buf, rel) if rel >= 0 else None
        if h is not None and h[0] == expect and h[1] >= fmt.min_length and fmt.sane(h) and \
                pos + h[1] + LENGTH_PREFIX_BYTES <= file_size:
            n = h[1] + LENGTH_PREFIX_BYTES
            found.append(Damage(expect, expect + h[count_at], pos, n, "batch failed its CRC check"))
            expect += h[count_at]
            pos += n
            seg.since_index = seg.interval
            continue
        break  # torn: nothing intact follows in the active segment
    if bound is not None and expect < bound:  # ends early at a batch boundary (cut short, or a missing file)
        found.append(Damage(expect, bound, pos, 0, "segment ends before the next segment's base offset"))
        expect = bound
    seg.size = pos
    seg.next_offset = expect
    if first_ts is not None:
        # Kafka's rule after a restart: age counts from the first batch's timestamp (clamped: never future).
        seg.rolling_ms = min(first_ts, now_ms)
    return found


def _restamp(seg: Segment, pos: int, h: tuple, base: int) -> None:
    """Write back the base offset field of the intact batch at ``pos`` (it read ``h[0]``), as the log stamped it."""
    _log.warning("%s: batch at byte %d is intact but its base offset field read %d where %d belongs: rewritten",
                 seg.stem, pos, h[0], base)
    os.pwrite(seg.fd, seg.fmt.stamp(base, h[1]), pos)


def find_damage(seg: Segment, pos: int, expect: int, reason: str) -> Damage:
    """A read met a bad batch at ``pos`` (holding ``expect``) inside ``seg``'s checked size: the damage up to the
    next intact batch, or to the segment's end (its offsets up to ``next_offset``). Blocking reads; once per
    damage (the segment remembers it)."""
    win = _Window(seg.fd, seg.size)
    nxt = resync(seg, win, pos + 1, expect, seg.next_offset)
    if nxt is not None:
        q, _, base = nxt
        return Damage(expect, base, pos, q - pos, reason)
    return Damage(expect, seg.next_offset, pos, seg.size - pos, reason)


def load_damage(stem: Path) -> list[Damage] | None:
    """The quarantined ranges recorded for segment ``stem`` ([] if none are), or None if the record is unreadable
    (then the segment is scanned again)."""
    try:
        raw = load_record(stem.with_suffix(DAMAGE_SUFFIX))
    except (StorageError, ValueError):
        return None
    if raw is None:
        return []
    try:
        return sorted(Damage(int(a), int(b), int(c), int(d), str(e)) for a, b, c, d, e in raw)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None


def save_damage(stem: Path, damage: list[Damage]) -> None:
    """Durably record ``damage`` as segment ``stem``'s quarantined ranges (before any index that relies on it).
    Raises ``StorageError``."""
    save_record(stem.with_suffix(DAMAGE_SUFFIX), [list(d) for d in damage])


__all__ = ["DAMAGE_SUFFIX", "find_damage", "load_damage", "resync", "save_damage", "scan"]
