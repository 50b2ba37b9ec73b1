# The record batch: the unit of storage, CRC checking and transfer. The client encodes a batch once; the broker
# checks its header and CRC, stamps the base offset and stores the bytes verbatim; fetch serves them verbatim.
# Owns the byte layout (docs/protocol.md, "Record batch"); knows nothing of files or sockets.
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple, Sequence

import msgpack

from millpond.broker.wire.errors import CorruptBatchError, RecordTooLargeError

MAGIC = 1
# base_offset, batch_length, crc, magic, attributes, last_offset_delta, first_timestamp_ms, max_timestamp_ms,
# producer_id, producer_epoch, base_sequence, record_count. Big-endian like Kafka's record batch; base_offset and
# batch_length lie outside the CRC so the broker can stamp the offset without recomputing it.
HEADER = struct.Struct(">qiIbbiqqqhii")
HEADER_BYTES = HEADER.size  # 56
LENGTH_PREFIX_BYTES = 12  # base_offset + batch_length: what batch_length does not count
CRC_START = 16  # the CRC covers bytes [16, end): magic onwards
_TAIL = struct.Struct(">bbiqqqhii")  # the CRC-covered part of the header
_OFFSET = struct.Struct(">q")
_LEN = struct.Struct(">i")
_HEADER_PREFIX = struct.Struct(">qi")
_unpack_header = HEADER.unpack_from
_crc32 = zlib.crc32
_packb = msgpack.Packer(use_bin_type=True).pack
_unpackb = msgpack.unpackb


class Record(NamedTuple):
    """One record as a consumer sees it. ``timestamp_ms`` is wall-clock milliseconds since the epoch."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes] | None


@dataclass(frozen=True, slots=True)
class BatchHeader:
    base_offset: int
    batch_length: int
    crc: int
    magic: int
    attributes: int
    last_offset_delta: int
    first_timestamp_ms: int
    max_timestamp_ms: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Whole batch size in bytes, header included."""
        return self.batch_length + LENGTH_PREFIX_BYTES

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta


def read_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Parse the header at ``buf[pos:]``; raises ``CorruptBatchError`` if fewer than 56 bytes remain."""
    if len(buf) - pos < HEADER_BYTES:
        raise CorruptBatchError(f"batch header needs {HEADER_BYTES} bytes, {len(buf) - pos} given")
    return BatchHeader(*_unpack_header(buf, pos))


def encode_batch(
    records: Sequence[tuple[int, bytes | None, bytes, dict[str, bytes] | None]],
    *,
    base_offset: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytes:
    """Encode ``[(timestamp_ms, key, value, headers), ...]`` (at least one) into one batch.

    Records are stored as a msgpack array of ``[offset_delta, timestamp_delta_ms, key, value, headers]``.
    """
    n = len(records)
    if n == 0:
        raise ValueError("a batch holds at least one record")
    first_ts = records[0][0]
    max_ts = first_ts
    rows = []
    append = rows.append
    for i, (ts, key, value, headers) in enumerate(records):
        if ts > max_ts:
            max_ts = ts
        append((i, ts - first_ts, key, value, headers or None))
    return encode_rows(rows, first_ts, max_ts, base_offset, producer_id, producer_epoch, base_sequence)


def encode_rows(
    rows: list[Any],
    first_timestamp_ms: int,
    max_timestamp_ms: int,
    base_offset: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytes:
    """Encode pre-built rows ``(offset_delta, timestamp_delta_ms, key, value, headers)``: the producer's fast path."""
    n = len(rows)
    body = _packb(rows)
    tail = _TAIL.pack(MAGIC, 0, n - 1, first_timestamp_ms, max_timestamp_ms, producer_id, producer_epoch, base_sequence, n)
    crc = _crc32(body, _crc32(tail))
    return b"".join((_HEADER_PREFIX.pack(base_offset, HEADER_BYTES - LENGTH_PREFIX_BYTES + len(body)), struct.pack(">I", crc), tail, body))


def _array_count(buf: bytes | memoryview, pos: int) -> int:
    """Element count of the msgpack array starting at ``buf[pos]``, or -1 if it is not an array."""
    b = buf[pos]
    if 0x90 <= b <= 0x9F:
        return b & 0x0F
    if b == 0xDC and len(buf) >= pos + 3:
        return (buf[pos + 1] << 8) | buf[pos + 2]
    if b == 0xDD and len(buf) >= pos + 5:
        return int.from_bytes(buf[pos + 1 : pos + 5], "big")
    return -1


def check_batch(blob: bytes | memoryview, batch_bytes_max: int) -> BatchHeader:
    """Validate a batch a producer sent: size, length field, magic, CRC, record count. No per-record work.

    Returns its header. Raises ``RecordTooLargeError`` (over ``batch_bytes_max``) or ``CorruptBatchError`` naming
    the failed check.
    """
    size = len(blob)
    if size > batch_bytes_max:
        raise RecordTooLargeError(
            f"batch of {size} bytes exceeds batch_bytes_max={batch_bytes_max}", batch_bytes_max=batch_bytes_max
        )
    if size < HEADER_BYTES + 1:
        raise CorruptBatchError(f"batch of {size} bytes is shorter than its {HEADER_BYTES}-byte header")
    h = _unpack_header(blob, 0)
    if h[1] != size - LENGTH_PREFIX_BYTES:
        raise CorruptBatchError(f"batch_length {h[1]} does not match the {size - LENGTH_PREFIX_BYTES} bytes sent")
    if h[3] != MAGIC:
        raise CorruptBatchError(f"unknown batch magic {h[3]} (this broker writes {MAGIC})")
    if h[4] != 0:
        raise CorruptBatchError(f"unsupported batch attributes {h[4]} (compression is not supported)")
    count = h[11]
    if count < 1 or h[5] != count - 1:
        raise CorruptBatchError(f"record_count {count} and last_offset_delta {h[5]} disagree")
    if h[8] >= 0 and (h[10] < 0 or h[9] < 0):
        raise CorruptBatchError(f"batch of producer {h[8]} needs a producer_epoch and base_sequence >= 0")
    mv = memoryview(blob)
    if _crc32(mv[CRC_START:]) != h[2]:
        raise CorruptBatchError("batch CRC does not match its contents")
    if _array_count(blob, HEADER_BYTES) != count:
        raise CorruptBatchError(f"records section does not hold the {count} records the header announces")
    return BatchHeader(*h)


def verify_crc(buf: bytes | memoryview, pos: int = 0) -> bool:
    """True if the batch at ``buf[pos:]`` is whole and its CRC matches (used by recovery and corrupt-read checks)."""
    if len(buf) - pos < HEADER_BYTES:
        return False
    length = _LEN.unpack_from(buf, pos + 8)[0]
    end = pos + LENGTH_PREFIX_BYTES + length
    if length < HEADER_BYTES - LENGTH_PREFIX_BYTES or end > len(buf):
        return False
    crc = struct.unpack_from(">I", buf, pos + 12)[0]
    return _crc32(memoryview(buf)[pos + CRC_START : end]) == crc


def stamp_base_offset(base_offset: int) -> bytes:
    """The 8 bytes that replace a batch's first 8 when the broker assigns its offsets."""
    return _OFFSET.pack(base_offset)


def iter_batches(data: bytes | memoryview) -> Iterator[tuple[int, BatchHeader]]:
    """Yield ``(position, header)`` for each whole batch in a fetch answer; a trailing partial batch is ignored."""
    pos = 0
    end = len(data)
    while end - pos >= HEADER_BYTES:
        h = BatchHeader(*_unpack_header(data, pos))
        nxt = pos + h.batch_length + LENGTH_PREFIX_BYTES
        if nxt > end or h.batch_length < HEADER_BYTES - LENGTH_PREFIX_BYTES:
            return
        yield pos, h
        pos = nxt


def decode_records(data: bytes | memoryview, topic: str, partition: int, min_offset: int = 0) -> list[Record]:
    """Decode every record of every whole batch in ``data`` with ``offset >= min_offset``.

    Raises ``CorruptBatchError`` if a batch's CRC fails (a fetch never yields silently damaged records).
    """
    out: list[Record] = []
    extend = out.extend
    new = tuple.__new__  # a NamedTuple's own __new__ costs a Python frame per record
    mv = memoryview(data)
    for pos, h in iter_batches(mv):
        end = pos + h.batch_length + LENGTH_PREFIX_BYTES
        base = h.base_offset
        if base + h.last_offset_delta < min_offset:
            continue
        if _crc32(mv[pos + CRC_START : end]) != h.crc:
            raise CorruptBatchError(f"batch at offset {base} of {topic}/{partition} failed its CRC check")
        first_ts = h.first_timestamp_ms
        rows = _unpackb(mv[pos + HEADER_BYTES : end], use_list=False)
        if base >= min_offset:
            extend([new(Record, (topic, partition, base + od, first_ts + td, k, v, hd)) for od, td, k, v, hd in rows])
        else:
            extend([
                new(Record, (topic, partition, base + od, first_ts + td, k, v, hd))
                for od, td, k, v, hd in rows
                if base + od >= min_offset
            ])
    return out
