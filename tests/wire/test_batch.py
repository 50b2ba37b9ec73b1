# Kafka's record batch v2 as millpond encodes, checks and decodes it: the golden vector of kafka.md section 1.1, the
# checks of check_batch one by one, interoperability with kafka-python's pure-Python reader and with kafka-python's
# and aiokafka's builders (compressed and not), and a hypothesis round trip.
from __future__ import annotations

import struct
import warnings

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder as AiokafkaBuilder
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from millpond.broker.wire import errors

with warnings.catch_warnings():  # kafka-python 3.0's package import uses importlib.resources.read_text
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.record.default_records import DefaultRecordBatch as KafkaPythonReader
    from kafka.record.default_records import DefaultRecordBatchBuilder as KafkaPythonBuilder
from millpond.broker.wire.batch import (
    HEADER_BYTES,
    check_batch,
    compression_id,
    decode_records,
    encode_batch,
    encode_rows,
    iter_batches,
    read_header,
    stamp,
    verify_crc,
)

# shared/reference/kafka.md section 1.1: built by kafka-python 2.3.2 and by an encoder written from the field table
GOLDEN = bytes.fromhex(
    "0000000000000000" "0000004d" "00000000" "02" "3f06057b" "0000" "00000001"
    "0000018bcfe56800" "0000018bcfe56805" "ffffffffffffffff" "ffff" "ffffffff" "00000002"
    "24" "00" "00" "00" "06" "6b6579" "0a" "76616c7565" "02" "02" "68" "02" "76"
    "10" "00" "0a" "02" "01" "04" "7632" "00"
)
MAX = 1 << 20


def golden() -> bytes:
    return encode_batch([(1_700_000_000_000, b"key", b"value", {"h": b"v"}), (1_700_000_000_005, None, b"v2", None)])


def test_golden_vector_byte_for_byte():
    assert len(GOLDEN) == 89
    assert golden() == GOLDEN
    assert crc32c(GOLDEN[21:]) == 0x3F06057B


def test_crc32c_check_values():
    # kafka-python test/record/test_util.py, and the standard check value
    assert (crc32c(b""), crc32c(b"a"), crc32c(b"123456789")) == (0x00000000, 0xC1D04330, 0xE3069283)


def test_header_fields():
    h = check_batch(GOLDEN, MAX)
    assert (h.base_offset, h.batch_length, h.partition_leader_epoch, h.magic, h.crc, h.attributes) == (
        0, 77, 0, 2, 0x3F06057B, 0)
    assert (h.last_offset_delta, h.base_timestamp_ms, h.max_timestamp_ms) == (1, 1_700_000_000_000, 1_700_000_000_005)
    assert (h.producer_id, h.producer_epoch, h.base_sequence, h.record_count) == (-1, -1, -1, 2)
    assert (h.size, h.last_offset, h.compression, HEADER_BYTES) == (89, 1, "none", 61)


def test_stamp_writes_offset_and_epoch_in_place_and_keeps_the_crc():
    blob = stamp(41, 77) + GOLDEN[17:]
    assert blob[:17] == bytes.fromhex("0000000000000029" "0000004d" "00000000" "02")
    assert blob[17:] == GOLDEN[17:]
    assert read_header(blob).base_offset == 41 and verify_crc(blob)
    recs = decode_records(blob, "t", 3)
    assert [tuple(r) for r in recs] == [
        ("t", 3, 41, 1_700_000_000_000, b"key", b"value", {"h": b"v"}),
        ("t", 3, 42, 1_700_000_000_005, None, b"v2", None),
    ]
    assert [r.offset for r in decode_records(blob, "t", 3, min_offset=42)] == [42]


def test_idempotent_producer_fields_live_in_the_header():
    blob = encode_batch([(5, b"k", b"v", None)] * 3, producer_id=77, producer_epoch=2, base_sequence=9)
    h = check_batch(blob, MAX)
    assert (h.producer_id, h.producer_epoch, h.base_sequence, h.record_count) == (77, 2, 9, 3)


def _mutate(blob: bytes, pos: int, value: bytes) -> bytes:
    return blob[:pos] + value + blob[pos + len(value):]


def _recrc(blob: bytes) -> bytes:
    return blob[:17] + struct.pack(">I", crc32c(blob[21:])) + blob[21:]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda b: b[:60], "shorter than its 61-byte header"),
        (lambda b: _mutate(b, 8, struct.pack(">i", 999)), "batch_length 999 does not match the 77 bytes"),
        (lambda b: _mutate(b, 16, b"\x01"), "batch magic 1"),
        (lambda b: _recrc(_mutate(b, 21, b"\x00\x10")), "batch attributes 0x10"),  # transactional
        (lambda b: _recrc(_mutate(b, 21, b"\x00\x20")), "batch attributes 0x20"),  # control
        (lambda b: _recrc(_mutate(b, 21, b"\x00\x08")), "batch attributes 0x8"),  # LogAppendTime
        (lambda b: _recrc(_mutate(b, 57, struct.pack(">i", 5))), "records_count 5 and last_offset_delta 1"),
        (lambda b: _recrc(_mutate(b, 43, struct.pack(">q", 3))), "needs a producer_epoch and base_sequence"),
        (lambda b: _recrc(_mutate(b, 43, struct.pack(">q", -2))), "producer_id -2"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "CRC-32C"),
        (lambda b: _recrc(_mutate(b, 35, struct.pack(">q", 1_700_000_000_009))), "max_timestamp 1700000000009"),
        (lambda b: _recrc(_mutate(b, 64, b"\x02")), "offset deltas"),  # record 0's offset delta 0 -> 1
        (lambda b: _recrc(_mutate(b, 61, b"\x26")), "does not decode"),  # record 0's length 18 -> 19
    ],
)
def test_check_batch_names_the_failed_check(make, message):
    with pytest.raises(errors.CorruptBatchError, match=message):
        check_batch(make(GOLDEN), MAX)


def test_check_batch_refuses_a_count_the_records_do_not_hold():
    three = encode_batch([(1, None, b"a", None), (1, None, b"b", None), (1, None, b"c", None)])
    two = _recrc(_mutate(_mutate(three, 57, struct.pack(">i", 2)), 23, struct.pack(">i", 1)))
    with pytest.raises(errors.CorruptBatchError, match="does not decode"):
        check_batch(two, MAX)


def test_check_batch_refuses_oversize_with_the_limit_in_details():
    with pytest.raises(errors.RecordTooLargeError) as info:
        check_batch(encode_batch([(1, None, b"x" * 2000, None)]), 1024)
    assert info.value.details == {"batch_bytes_max": 1024}


def test_unknown_codec_is_refused_naming_it():
    with pytest.raises(errors.UnsupportedCompressionTypeError, match="unknown compression id 5"):
        check_batch(_recrc(_mutate(GOLDEN, 21, b"\x00\x05")), MAX)
    with pytest.raises(ValueError, match="compression must be one of none, gzip, snappy, lz4, zstd, got 'brotli'"):
        compression_id("brotli")


def test_decode_records_refuses_a_corrupt_batch():
    blob = bytearray(GOLDEN)
    blob[-3] ^= 0xFF
    with pytest.raises(errors.CorruptBatchError, match="failed its CRC-32C check"):
        decode_records(bytes(blob), "t", 0)


def test_iter_batches_ignores_a_partial_tail():
    data = GOLDEN + stamp(2, 77) + GOLDEN[17:] + GOLDEN[:70]
    assert [(pos, h.base_offset) for pos, h in iter_batches(data)] == [(0, 0), (89, 2)]
    assert [r.offset for r in decode_records(data, "t", 0)] == [0, 1, 2, 3]


# -- interoperability ---------------------------------------------------------------------------------------------
def test_millpond_batches_decode_with_kafka_pythons_reader():
    blob = encode_batch(
        [(1_700_000_000_000, b"k1", b"v1", {"a": b"1", "b": b""}), (1_699_999_999_990, None, b"", None),
         (1_700_000_000_020, b"", b"v3", None)], producer_id=5, producer_epoch=1, base_sequence=40)
    blob = stamp(100, len(blob) - 12) + blob[17:]
    batch = KafkaPythonReader(blob)
    assert batch.validate_crc()
    assert (batch.base_offset, batch.producer_id, batch.producer_epoch, batch.base_sequence) == (100, 5, 1, 40)
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in batch] == [
        (100, 1_700_000_000_000, b"k1", b"v1", [("a", b"1"), ("b", b"")]),
        (101, 1_699_999_999_990, None, b"", []),
        (102, 1_700_000_000_020, b"", b"v3", []),
    ]
    assert batch.max_timestamp == 1_700_000_000_020


def _kafka_python_batch(codec: int) -> bytes:
    b = KafkaPythonBuilder(2, codec, 0, 3, 0, 0, MAX)
    for i in range(50):
        b.append(i, 1_700_000_000_000 + i, b"key-%d" % i, b"value " * 20, [("n", b"%d" % i)])
    return bytes(b.build())


def _aiokafka_batch(codec: int) -> bytes:
    b = AiokafkaBuilder(2, codec, 0, -1, -1, -1, MAX)
    for i in range(50):
        b.append(i, 1_700_000_000_000 + i, None if i % 2 else b"k", b"value " * 20, [])
    return bytes(b.build())


def _expected(build, i):
    if build is _kafka_python_batch:
        return (i, 1_700_000_000_000 + i, b"key-%d" % i, b"value " * 20, {"n": b"%d" % i})
    return (i, 1_700_000_000_000 + i, None if i % 2 else b"k", b"value " * 20, None)


@pytest.mark.parametrize("build", [_kafka_python_batch, _aiokafka_batch])
@pytest.mark.parametrize("codec", [0, 1, 2, 3, 4])
def test_other_builders_batches_are_accepted_and_decoded(build, codec):
    blob = build(codec)
    h = check_batch(blob, MAX)
    assert (h.attributes & 7, h.record_count) == (codec, 50)
    recs = decode_records(stamp(7, h.batch_length) + blob[17:], "t", 0)
    assert [(r.offset - 7, r.timestamp_ms, r.key, r.value, r.headers) for r in recs] == [
        _expected(build, i) for i in range(50)]


@pytest.mark.parametrize("name, cid", [("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)])
def test_millpond_compresses_and_kafka_python_reads_it(name, cid):
    blob = encode_batch([(1_000 + i, None, b"x" * 100, None) for i in range(20)], compression=name)
    h = check_batch(blob, MAX)
    assert h.attributes == cid and len(blob) < 20 * 100
    assert [(r.offset, r.value) for r in KafkaPythonReader(blob)] == [(i, b"x" * 100) for i in range(20)]
    assert [r.timestamp_ms for r in decode_records(blob, "t", 0)] == [1_000 + i for i in range(20)]


# -- round trip ---------------------------------------------------------------------------------------------------
TIMESTAMPS = st.integers(min_value=0, max_value=2**62)
RECORDS = st.lists(
    st.tuples(
        st.one_of(st.none(), st.binary(max_size=40)),
        st.binary(max_size=60),
        st.dictionaries(st.text(max_size=8), st.binary(max_size=8), max_size=12),
        st.integers(min_value=-(2**31), max_value=2**31),
    ),
    min_size=1, max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(records=RECORDS, base_ts=TIMESTAMPS, base=st.integers(min_value=0, max_value=2**62),
       compression=st.sampled_from(["none", "gzip"]))
def test_round_trip(records, base_ts, base, compression):
    rows = [(max(0, base_ts + dt), k, v, h) for k, v, h, dt in records]
    blob = encode_batch(rows, compression=compression)
    h = check_batch(blob, 1 << 30)
    assert (h.record_count, h.max_timestamp_ms) == (len(rows), max(r[0] for r in rows))
    out = decode_records(stamp(base, h.batch_length) + blob[17:], "t", 1)
    assert [(r.offset, r.timestamp_ms, r.key, r.value, r.headers) for r in out] == [
        (base + i, ts, k, v, h or None) for i, (ts, k, v, h) in enumerate(rows)]
    theirs = KafkaPythonReader(blob)
    assert [(r.key, r.value, dict(r.headers)) for r in theirs] == [(k, v, h) for _, k, v, h in rows]


def test_encode_rows_takes_header_lists_and_producer_fields():
    blob = encode_rows([(0, 0, b"k", b"v", [("a", b"b")]), (1, 3, None, b"w", None)], 50, 53, 0, 9, 0, 4)
    assert [tuple(r)[2:] for r in decode_records(blob, "t", 0)] == [
        (0, 50, b"k", b"v", {"a": b"b"}), (1, 53, None, b"w", None)]
    assert read_header(blob).base_sequence == 4
