# The stored batch format as the storage layer sees it: the few operations a store needs on a batch (check it, stamp
# its base offset, read its header fields, verify its CRC, list its record timestamps), behind one small object the
# stores take. The format is Kafka's record batch v2 (broker/wire/batch.py owns its bytes); nothing else in the cores
# parses a batch. Must not know about files, segments, topics or the server.
from __future__ import annotations

import struct
from typing import Any, Callable

from millpond.broker.wire import batch as v2

# Every format this layer can hold starts like Kafka's: base_offset (int64, outside the CRC, so the broker stamps it
# in place) then batch_length (int32, counting every byte after itself).
LENGTH_PREFIX_BYTES = 12


class BatchFormat:
    """Operations on one stored batch layout. ``unpack(buf, pos)`` gives a raw header tuple; the ``*_AT`` attributes
    say where each field sits in it (read them into locals on hot paths). Stateless: share one instance."""

    __slots__ = (
        "name", "header_bytes", "unpack", "crc", "crc_start", "stamp_bytes", "BASE_AT", "LENGTH_AT", "CRC_AT",
        "LAST_DELTA_AT", "MAX_TS_AT", "PID_AT", "EPOCH_AT", "SEQ_AT", "COUNT_AT", "_sane", "_record_times", "_check",
        "_stamp", "sync_marker", "sync_at",
    )

    def __init__(
        self, *, name: str, header: struct.Struct, crc: Callable[[Any], int], crc_start: int,
        fields: dict[str, int], sane: Callable[[tuple], bool], record_times: Callable[[bytes, tuple], list],
        check: Callable[[Any, int], Any], stamp: Callable[[int, int], bytes], stamp_bytes: int,
        sync_marker: bytes, sync_at: int,
    ) -> None:
        self.name = name
        self.header_bytes = header.size
        self.unpack = header.unpack_from
        self.crc = crc
        self.crc_start = crc_start
        self.stamp_bytes = stamp_bytes
        for key in ("BASE", "LENGTH", "CRC", "LAST_DELTA", "MAX_TS", "PID", "EPOCH", "SEQ", "COUNT"):
            setattr(self, f"{key}_AT", fields[key])
        self._sane = sane
        self._record_times = record_times
        self._check = check
        self._stamp = stamp
        # Bytes every stored batch has at ``sync_at`` (what the broker stamps): recovery looks for them to find the
        # next batch after damage without trusting the damaged batch's length.
        self.sync_marker = sync_marker
        self.sync_at = sync_at

    @property
    def min_length(self) -> int:
        """The smallest batch_length a whole batch can have (a header and nothing else)."""
        return self.header_bytes - LENGTH_PREFIX_BYTES

    def check(self, blob: Any, batch_bytes_max: int) -> Any:
        """Validate a batch a producer sent; returns its header (``batch_length``, ``record_count``,
        ``max_timestamp_ms``, ``producer_id``, ``producer_epoch``, ``base_sequence``). Raises the wire errors."""
        return self._check(blob, batch_bytes_max)

    def stamp(self, base_offset: int, batch_length: int) -> bytes:
        """The ``stamp_bytes`` bytes (all outside the CRC) that replace a batch's first ones when the log assigns
        its offsets: the base offset, and whatever else the format has the broker write (v2: leader epoch 0)."""
        return self._stamp(base_offset, batch_length)

    def sane(self, h: tuple) -> bool:
        """True if a stored header's own fields are plausible (magic, attributes, record count): recovery stops at
        the first batch that is not."""
        return self._sane(h)

    def crc_ok(self, buf: Any, pos: int, n: int, h: tuple) -> bool:
        """True if the ``n``-byte batch at ``buf[pos:]`` (header ``h``) matches its CRC."""
        return self.crc(memoryview(buf)[pos + self.crc_start : pos + n]) == h[self.CRC_AT]

    def record_times(self, batch: bytes, h: tuple) -> list[tuple[int, int]]:
        """``(offset delta, timestamp ms)`` of each record of one CRC-checked batch, in order. Raises ValueError."""
        return self._record_times(batch, h)

    def producer(self, h: tuple) -> tuple[int, int, int, int]:
        """``(producer_id, producer_epoch, base_sequence, record_count)`` of a stored header."""
        return h[self.PID_AT], h[self.EPOCH_AT], h[self.SEQ_AT], h[self.COUNT_AT]


def _v2_sane(h: tuple) -> bool:
    return h[3] == v2.MAGIC and not h[5] & v2.UNSUPPORTED_ATTRIBUTES and h[12] >= 1 and h[6] == h[12] - 1


# Kafka's record batch v2 (broker/wire/batch.py): the 61-byte header, CRC-32C from byte 21, varint records.
V2 = BatchFormat(
    name="kafka-v2",
    header=v2.HEADER,
    crc=v2.crc32c,
    crc_start=v2.CRC_START,
    fields=dict(BASE=0, LENGTH=1, CRC=4, LAST_DELTA=6, MAX_TS=8, PID=9, EPOCH=10, SEQ=11, COUNT=12),
    sane=_v2_sane,
    record_times=v2.record_times,
    check=v2.check_batch,
    stamp=v2.stamp,
    stamp_bytes=v2.STAMP_BYTES,
    sync_marker=b"\0\0\0\0" + bytes([v2.MAGIC]),  # partition leader epoch 0, magic 2 (bytes 12-16)
    sync_at=12,
)

__all__ = ["BatchFormat", "LENGTH_PREFIX_BYTES", "V2"]
