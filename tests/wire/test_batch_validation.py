# Validation at the door (issue 10, finding 3), as a property of its whole kind: a batch whose header and CRC are
# right but whose records section is anything at all (not records, too few, too many, trailing bytes, a mutated
# valid section, compressed or not) is either refused by check_batch with CORRUPT_BATCH naming what is wrong, or
# is exactly what a consumer and ListOffsets can read: record_count records at offsets base..base+count-1 whose
# largest timestamp is the header's. A consumer therefore never meets an accepted batch it cannot read or step
# past (the finding: `[1]` with a right count and CRC was stored, and consumers returned [] forever).
from __future__ import annotations

import gzip
import struct

import pytest
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from millpond.broker.wire import batch as v2
from millpond.broker.wire.batch import check_batch, decode_records, encode_batch, record_times
from millpond.broker.wire.errors import CorruptBatchError

T0 = 1_700_000_000_000
MAX = 1 << 20


def forge(section: bytes, count: int, max_ts: int = T0, attributes: int = 0) -> bytes:
    """A batch with a consistent v2 header and a correct CRC around ``section`` (the records, or their compressed
    form when ``attributes`` names a codec)."""
    body = struct.pack(">hiqqqhii", attributes, count - 1, T0, max_ts, -1, -1, -1, count) + section
    head = struct.pack(">qiib", 0, len(body) + 4 + 4 + 1, 0, v2.MAGIC)
    return head + struct.pack(">I", crc32c(body)) + body


def check_or_refuse(blob: bytes) -> None:
    """The property: refused with CORRUPT_BATCH, or fully readable as the header says."""
    try:
        header = check_batch(blob, MAX)
    except CorruptBatchError as exc:
        assert exc.message and exc.code == 16
        return
    records = decode_records(blob, "t", 0)
    assert [r.offset for r in records] == list(range(header.record_count))
    assert max(r.timestamp_ms for r in records) == header.max_timestamp_ms
    times = record_times(blob, v2.HEADER.unpack_from(blob, 0))
    assert [od for od, _ in times] == list(range(header.record_count))


@pytest.mark.parametrize("section, count", [
    (b"[1]", 1), (b"\x91\x01", 1), (b"", 1), (b"\x00", 1), (b"\x01", 1), (b"\x02\x00", 1),
    (b"\x0e\x00\x00\x00\x01\x02a\x00" * 2, 1),  # a record, then the same bytes again: one too many
])
def test_non_records_with_a_right_count_and_crc_are_refused(section, count):
    with pytest.raises(CorruptBatchError, match="records section|shorter than"):
        check_batch(forge(section, count), MAX)


def test_a_compressed_section_that_is_not_records_is_refused():
    with pytest.raises(CorruptBatchError, match="records section does not decode"):
        check_batch(forge(gzip.compress(b"[1]"), 1, attributes=1), MAX)
    with pytest.raises(CorruptBatchError, match="records section does not decode"):
        check_batch(forge(b"not gzip at all", 1, attributes=1), MAX)


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(section=st.binary(max_size=120), count=st.integers(1, 4), dts=st.integers(0, 3))
def test_any_section_is_refused_or_readable(section, count, dts):
    check_or_refuse(forge(section, count, T0 + dts))


@SETTINGS
@given(
    values=st.lists(st.binary(max_size=20), min_size=1, max_size=4),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, 6),
    extra=st.binary(max_size=6),
    count_delta=st.integers(-1, 1),
    compressed=st.booleans(),
)
def test_a_mutated_valid_section_is_refused_or_readable(values, edits, cut, extra, count_delta, compressed):
    good = encode_batch([(T0 + i, b"k", v, {"h": b"x"} if i % 2 else None) for i, v in enumerate(values)])
    section = bytearray(good[v2.HEADER_BYTES:])
    for at, byte in edits:
        section[at % len(section)] = byte
    section = section[: len(section) - cut] + extra
    count = max(1, len(values) + count_delta)
    if compressed:
        check_or_refuse(forge(gzip.compress(bytes(section)), count, T0 + len(values) - 1, attributes=1))
    else:
        check_or_refuse(forge(bytes(section), count, T0 + len(values) - 1))


def test_an_intact_batch_passes_the_same_property():
    values = [b"a", b"bb", b""]
    good = encode_batch([(T0 + i, None, v, None) for i, v in enumerate(values)])
    check_or_refuse(good)
    assert [r.value for r in decode_records(good, "t", 0)] == values
