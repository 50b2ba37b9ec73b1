# The protocol both sides speak: Kafka's partitioner vectors, frames, the error table (the batch: test_batch.py).
from __future__ import annotations

import struct

import pytest

from millpond.broker.wire import errors
from millpond.broker.wire.frames import FrameDecoder, decode_request, encode_frame, encode_request, unwritten
from millpond.broker.wire.partitioner import murmur2, partition_for_key


# Kafka UtilsTest, kafka-python test_partitioner, librdkafka rdmurmur2.c (shared/reference/kafka.md section 1.2)
@pytest.mark.parametrize(
    "key, hash_u32, p3, p6, p12, p1000",
    [
        (b"21", 0xC5F2F8EC, 0, 0, 0, 340),
        (b"foobar", 0xD0E47BBE, 0, 0, 6, 166),
        (b"a-little-bit-long-string", 0xC53B1DA0, 2, 2, 8, 112),
        (b"abc", 0x1C94221B, 0, 3, 3, 107),
        (b"", 0x106E08D9, 0, 3, 9, 681),
        (b"a", 0xA2D0B27C, 1, 4, 4, 524),
        (b"123456789", 0x9362DE66, 0, 0, 6, 566),
        (b"kafka", 0xD067CF64, 1, 4, 4, 580),
        (b"23456", 0x858D780F, 2, 5, 11, 391),
    ],
)
def test_murmur2_and_partition_match_kafka(key, hash_u32, p3, p6, p12, p1000):
    assert murmur2(key) == hash_u32
    assert [partition_for_key(key, n) for n in (3, 6, 12, 1000)] == [p3, p6, p12, p1000]


@pytest.mark.parametrize(
    "key, partitions, expected",
    [
        # partitions real clusters chose, reported in public issues (kafka.md section 1.2)
        (b"fd7af248-ce5c-46a5-93d7-1c0c9005b99d", 32, 26),
        (b"TT0124", 15, 10),
        (b'Struct{documentKey={"_id": "638d1b94ce8def06be68b439"}}', 50, 40),
        (b"ab", 1000, 434),
        (b"\x00 ", 1000, 742),
    ],
)
def test_partition_matches_what_java_producers_chose(key, partitions, expected):
    assert partition_for_key(key, partitions) == expected


def test_murmur2_uses_mask_not_abs():
    # b"21" hashes negative as a Java int: masking gives partition 0 of 6, abs() would give 2.
    java_int = murmur2(b"21") - (1 << 32)
    assert abs(java_int) % 6 == 2
    assert partition_for_key(b"21", 6) == 0


def test_partition_for_key_refuses_zero_partitions():
    with pytest.raises(ValueError, match="partitions must be >= 1"):
        partition_for_key(b"k", 0)


def test_frame_decoder_reassembles_frames_split_anywhere():
    frames = [encode_request(i, "produce", {"batch": bytes(i * 37)}) for i in range(1, 6)]
    stream = b"".join(frames)
    for cut in range(1, 60):
        d = FrameDecoder()
        bodies = []
        for i in range(0, len(stream), cut):
            bodies.extend(d.feed(stream[i : i + cut]))
        assert [decode_request(b)[0] for b in bodies] == [1, 2, 3, 4, 5]
        assert d.buffered_bytes == 0


def test_frame_decoder_hands_out_one_frame_at_a_time():
    frames = [encode_request(i, "list_topics", {}) for i in range(1, 4)]
    d = FrameDecoder()
    d.feed(b"".join(frames) + frames[0][:3])
    assert decode_request(d.next_frame())[0] == 1
    assert d.buffered_bytes == len(frames[1]) + len(frames[2]) + 3  # the rest stays buffered until asked for
    assert [decode_request(d.next_frame())[0] for _ in range(2)] == [2, 3]
    assert d.next_frame() is None and d.next_frame() is None
    d.feed(frames[0][3:])
    assert decode_request(d.next_frame())[0] == 1
    assert d.next_frame() is None and d.buffered_bytes == 0


def test_frame_decoder_refuses_an_oversize_length_before_buffering():
    d = FrameDecoder(frame_bytes_max=100)
    d.feed(encode_frame(b"x" * 50) + struct.pack(">I", 101))
    assert d.next_frame() == encode_frame(b"x" * 50)[4:]  # the frames before it are still handed out
    for _ in range(2):  # refused before the body arrives, and again on every later call
        with pytest.raises(errors.FrameTooLargeError, match="frame_bytes_max=100"):
            d.next_frame()
    with pytest.raises(errors.FrameTooLargeError):
        list(d.feed(b"y"))


@pytest.mark.parametrize(
    "message, fragment",
    [
        ({"a": 1}, "3-element array"),
        ([1, "x"], "3-element array"),
        ([True, "x", {}], "correlation_id"),
        ([1, 2, {}], "api must be a string"),
        ([1, "x", [1]], "must be a map"),
    ],
)
def test_decode_request_names_what_is_wrong(message, fragment):
    body = encode_frame(message)[4:]
    with pytest.raises(errors.InvalidRequestError, match=fragment):
        decode_request(body)


def test_error_table_codes_are_unique_and_round_trip():
    codes = [k.code for k in errors.ERRORS.values()]
    assert len(codes) == len(set(codes))
    for code, kind in errors.ERRORS.items():
        exc = errors.EXCEPTIONS[code]("boom", x=1)
        again = errors.from_wire(code, exc.to_wire())
        assert type(again) is type(exc) and again.name == kind.name and again.details == {"x": 1}
        assert isinstance(again, errors.MillpondError)
    assert errors.OffsetOutOfRangeError.code == 14 and errors.ThrottledError.retriable


def test_unknown_code_from_a_newer_broker_is_still_an_error():
    exc = errors.from_wire(999, {"name": "FUTURE", "message": "later"})
    assert (exc.code, exc.name, exc.message) == (999, "FUTURE", "later")


@pytest.mark.parametrize("sizes", [[0], [10], [4096], [70_000], [5, 100_000, 0, 4095]])
def test_fetch_answer_in_pieces_decodes_like_a_plain_response(sizes):
    from millpond.broker.wire.frames import decode_response, encode_fetch_answer_parts, encode_response

    rows = [["t", i, 0, 3, 9, memoryview(bytes([i % 251]) * n)] for i, n in enumerate(sizes)]
    framed = b"".join(bytes(p) for p in encode_fetch_answer_parts(77, rows))
    plain = encode_response(77, 0, {"partitions": [[*r[:-1], bytes(r[-1])] for r in rows]})
    assert framed == plain
    assert decode_response(next(FrameDecoder().feed(framed))) == (77, 0, {"partitions": [[*r[:-1], bytes(r[-1])] for r in rows]})


@pytest.mark.parametrize("body, pieces", [
    ({}, 1),
    ({"topic": "t", "partition": 3, "batch": b"x" * 65_535}, 1),  # below the piece size: one frame
    ({"topic": "t", "partition": 3, "batch": bytearray(b"y" * 65_536)}, 2),  # head, batch
    ({"batch": b"z" * 100_000, "topic": "t"}, 3),  # head, batch, tail
    ({"a": b"1" * 70_000, "b": 5, "c": bytearray(b"2" * 200_000)}, 4),  # head, a, middle, c
])
def test_request_in_pieces_is_the_plain_request_byte_for_byte(body, pieces):
    from millpond.broker.wire.frames import PIECE_BYTES_MIN, encode_request_parts

    parts = encode_request_parts(9, "produce", body)
    plain = encode_request(9, "produce", {k: bytes(v) if isinstance(v, bytearray) else v for k, v in body.items()})
    assert b"".join(parts) == plain
    large = [v for v in body.values() if isinstance(v, (bytes, bytearray)) and len(v) >= PIECE_BYTES_MIN]
    assert [p for p in parts if any(p is v for v in large)] == large  # the very objects, in order: never copied
    assert len(parts) == pieces


def test_frame_view_is_the_frame_and_holds_the_buffer_until_released():
    frames = [encode_request(i, "produce", {"batch": bytes(i * 10)}) for i in range(1, 4)]
    d = FrameDecoder()
    d.feed(b"".join(frames) + frames[0][:2])
    views = [d.next_frame_view() for _ in range(3)]
    assert [decode_request(v)[0] for v in views] == [1, 2, 3]
    assert d.next_frame_view() is None and d.buffered_bytes == 2
    with pytest.raises(BufferError):  # feeding would move the bytes under a view still held
        d.feed(frames[0][2:])
    for v in views:
        v.release()
    d.feed(frames[0][2:])
    assert bytes(d.next_frame_view()) == frames[0][4:]


@pytest.mark.parametrize("n", range(0, 11))
def test_unwritten_is_what_a_partial_writev_leaves_in_order_without_copies(n):
    big = bytearray(b"4567")
    pieces = [b"012", memoryview(big), b"", b"89A"]
    rest = unwritten(pieces, n)
    assert b"".join(bytes(p) for p in rest) == b"012456789A"[n:]
    if rest and 3 < n < 7:  # the piece cut in the middle is a view of the caller's buffer, not a copy
        assert isinstance(rest[0], memoryview) and rest[0].obj is big
    assert unwritten(pieces, 10) == [] and pieces[1].obj is big  # the caller's list is left as it was
