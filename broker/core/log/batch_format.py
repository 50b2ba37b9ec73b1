# The stored batch format as the storage layer sees it: the few operations a store needs on a batch (check it, stamp
# its base offset, read its header fields, verify its CRC, list its record timestamps), behind one small object the
# stores take. Switching the stored format (to Kafka's record batch v2) means writing another instance, not editing
# a store. Must not know about files, segments, topics or the server.
from __future__ import annotations

import struct
import zlib
from typing import Any, Callable

import msgpack

from millpond.broker.wire import batch as native

# Every format this layer can hold starts like Kafka's: base_offset (int64, outside the CRC, so the broker stamps it
# in place) then batch_length (int32, counting every byte after itself).
LENGTH_PREFIX_BYTES = 12


class BatchFormat:
    """Operations on one stored batch layout. ``unpack(buf, pos)`` gives a raw header tuple; the ``*_AT`` attributes
    say where each field sits in it (read them into locals on hot paths). Stateless: share one instance."""

    __slots__ = (
        "name", "header_bytes", "unpack", "crc", "crc_start", "BASE_AT", "LENGTH_AT", "CRC_AT", "LAST_DELTA_AT",
        "MAX_TS_AT", "PID_AT", "EPOCH_AT", "SEQ_AT", "COUNT_AT", "_sane", "_record_times", "_check",
    )

    def __init__(
        self, *, name: str, header: struct.Struct, crc: Callable[[Any], int], crc_start: int,
        fields: dict[str, int], sane: Callable[[tuple], bool], record_times: Callable[[bytes, tuple], list],
        check: Callable[[Any, int], Any],
    ) -> None:
        self.name = name
        self.header_bytes = header.size
        self.unpack = header.unpack_from
        self.crc = crc
        self.crc_start = crc_start
        for key in ("BASE", "LENGTH", "CRC", "LAST_DELTA", "MAX_TS", "PID", "EPOCH", "SEQ", "COUNT"):
            setattr(self, f"{key}_AT", fields[key])
        self._sane = sane
        self._record_times = record_times
        self._check = check

    @property
    def min_length(self) -> int:
        """The smallest batch_length a whole batch can have (a header and nothing else)."""
        return self.header_bytes - LENGTH_PREFIX_BYTES

    def check(self, blob: Any, batch_bytes_max: int) -> Any:
        """Validate a batch a producer sent; returns its header (``batch_length``, ``record_count``,
        ``max_timestamp_ms``, ``producer_id``, ``producer_epoch``, ``base_sequence``). Raises the wire errors."""
        return self._check(blob, batch_bytes_max)

    @staticmethod
    def stamp(base_offset: int) -> bytes:
        """The 8 bytes that replace a batch's first 8 when the log assigns its offsets."""
        return _OFFSET.pack(base_offset)

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


_OFFSET = struct.Struct(">q")


def _native_sane(h: tuple) -> bool:
    return h[3] == native.MAGIC and h[4] == 0 and h[11] >= 1 and h[5] == h[11] - 1


def _native_record_times(batch: bytes, h: tuple) -> list[tuple[int, int]]:
    try:
        rows: Any = msgpack.unpackb(memoryview(batch)[native.HEADER_BYTES :], use_list=False)
        first = h[6]
        return [(row[0], first + row[1]) for row in rows]
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
        raise ValueError(f"records section does not decode ({exc})") from None


# millpond's own batch (broker/wire/batch.py): a 56-byte header, CRC-32 from byte 16, msgpack rows.
NATIVE = BatchFormat(
    name="millpond-1",
    header=native.HEADER,
    crc=zlib.crc32,
    crc_start=native.CRC_START,
    fields=dict(BASE=0, LENGTH=1, CRC=2, LAST_DELTA=5, MAX_TS=7, PID=8, EPOCH=9, SEQ=10, COUNT=11),
    sane=_native_sane,
    record_times=_native_record_times,
    check=native.check_batch,
)

__all__ = ["BatchFormat", "LENGTH_PREFIX_BYTES", "NATIVE"]
