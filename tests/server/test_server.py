# The Trio server over in-memory streams: handshake, dispatch, produce/fetch, long polls in virtual time, and
# garbage from one peer never disturbing another.
from __future__ import annotations

import struct

import pytest
import trio

from millpond.broker.wire import errors
from millpond.broker.wire.batch import decode_records, encode_batch
from millpond.broker.wire.frames import encode_frame

from serverkit import start_harness


def batch(*values: bytes, ts: int = 1_700_000_000_000, key: bytes | None = None) -> bytes:
    return encode_batch([(ts + i, key, v, None) for i, v in enumerate(values)])


async def test_first_request_must_be_hello(harness):
    c = await harness.connect(hello=False)
    code, answer = await c.call("list_topics", {})
    assert code == errors.HandshakeRequiredError.code
    assert "hello" in answer["message"]
    answer = await c.ok("hello", {"protocol_version": 1, "client_id": "x"})
    assert answer["protocol_version"] == 1
    assert answer["limits"]["batch_bytes_max"] == harness.broker.config.batch_bytes_max
    assert await c.ok("list_topics", {}) == {"topics": []}


async def test_unsupported_protocol_version_names_supported_ones(harness):
    c = await harness.connect(hello=False)
    code, answer = await c.call("hello", {"protocol_version": 99, "client_id": "x"})
    assert code == errors.UnsupportedVersionError.code
    assert answer["details"]["supported"] == [1]


async def test_produce_then_fetch_returns_the_records_with_offsets(harness):
    c = await harness.connect()
    await c.ok("create_topic", {"name": "t", "partitions": 2})
    a = await c.ok("produce", {"topic": "t", "partition": 1, "batch": batch(b"a", b"b")})
    b = await c.ok("produce", {"topic": "t", "partition": 1, "batch": batch(b"c")})
    assert (a["partition"], a["base_offset"], b["base_offset"]) == (1, 0, 2)
    answer = await c.ok("fetch", {"partitions": [["t", 1, 1]], "max_bytes": 1 << 20, "max_wait_ms": 0})
    [[topic, partition, code, start, hw, data]] = answer["partitions"]
    assert (topic, partition, code, start, hw) == ("t", 1, 0, 0, 3)
    recs = decode_records(data, "t", 1, min_offset=1)
    assert [(r.offset, r.value) for r in recs] == [(1, b"b"), (2, b"c")]


async def test_fetch_out_of_range_reports_the_valid_range(harness):
    c = await harness.connect()
    await c.ok("create_topic", {"name": "t"})
    await c.ok("produce", {"topic": "t", "partition": 0, "batch": batch(b"a", b"b")})
    answer = await c.ok("fetch", {"partitions": [["t", 0, 5], ["nope", 0, 0]], "max_wait_ms": 100})
    assert answer["partitions"] == [
        ["t", 0, errors.OffsetOutOfRangeError.code, 0, 2, b""],
        ["nope", 0, errors.UnknownTopicOrPartitionError.code, -1, -1, b""],
    ]


async def test_long_poll_wakes_when_a_record_arrives(harness, autojump_clock):
    consumer = await harness.connect()
    producer = await harness.connect()
    await consumer.ok("create_topic", {"name": "t"})
    start = trio.current_time()
    await consumer.send("fetch", {"partitions": [["t", 0, 0]], "max_wait_ms": 30_000})
    await trio.sleep(2)
    await producer.ok("produce", {"topic": "t", "partition": 0, "batch": batch(b"hello")})
    _, code, answer = await consumer.receive()
    assert code == 0
    assert trio.current_time() - start == pytest.approx(2, abs=0.01)
    [[_, _, _, _, hw, data]] = answer["partitions"]
    assert hw == 1
    assert [r.value for r in decode_records(data, "t", 0)] == [b"hello"]


async def test_long_poll_returns_empty_after_max_wait(harness, autojump_clock):
    c = await harness.connect()
    await c.ok("create_topic", {"name": "t"})
    start = trio.current_time()
    answer = await c.ok("fetch", {"partitions": [["t", 0, 0]], "max_wait_ms": 7_500})
    assert trio.current_time() - start == pytest.approx(7.5, abs=0.01)
    assert answer["partitions"] == [["t", 0, 0, 0, 0, b""]]


async def test_parked_fetch_does_not_block_other_requests_on_the_connection(harness, autojump_clock):
    c = await harness.connect()
    await c.ok("create_topic", {"name": "t"})
    parked = await c.send("fetch", {"partitions": [["t", 0, 0]], "max_wait_ms": 10_000})
    listed = await c.send("list_topics", {})
    cid, code, answer = await c.receive()
    assert (cid, code, answer) == (listed, 0, {"topics": ["t"]})
    cid, _, _ = await c.receive()
    assert cid == parked


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00\x00\x03abc",  # not msgpack
        encode_frame({"not": "an array"}),
        encode_frame([1, 2, 3]),  # api not a string
        encode_frame([-1, "list_topics", {}]),
        encode_frame([1, "list_topics", []]),
    ],
)
async def test_bad_frames_get_an_error_and_others_are_still_served(harness, garbage):
    bad = await harness.connect()
    good = await harness.connect()
    await bad.send_bytes(garbage)
    _, code, answer = await bad.receive()
    assert code == errors.InvalidRequestError.code
    assert answer["name"] == "INVALID_REQUEST" and answer["message"]
    # the same connection keeps working, and so does every other
    assert await bad.ok("list_topics", {}) == {"topics": []}
    assert await good.ok("list_topics", {}) == {"topics": []}


@pytest.mark.parametrize(
    "api, body, expected",
    [
        ("create_topic", {"name": 5}, errors.InvalidRequestError),
        ("create_topic", {"name": "t", "partitions": "3"}, errors.InvalidRequestError),
        ("create_topic", {"name": "t", "partitions": 0}, errors.InvalidPartitionsError),
        ("create_topic", {"name": "../x"}, errors.InvalidTopicNameError),
        ("create_topic", {"name": ""}, errors.InvalidTopicNameError),
        ("create_topic", {"name": "x" * 250}, errors.InvalidTopicNameError),
        ("create_topic", {"name": "t", "config": {"retention_mz": 1}}, errors.InvalidConfigError),
        ("produce", {"topic": "missing", "partition": 0, "batch": b"x" * 80}, errors.UnknownTopicOrPartitionError),
        ("produce", {"topic": "t", "partition": 0, "batch": "text"}, errors.InvalidRequestError),
        ("fetch", {"partitions": [["t", "0", 0]]}, errors.InvalidRequestError),
        ("fetch", {"partitions": []}, errors.InvalidRequestError),
        ("list_offsets", {"topic": "t", "partition": 0, "spec": "soonest"}, errors.InvalidRequestError),
        ("no_such_api", {}, errors.UnknownApiError),
    ],
)
async def test_wrong_types_and_bad_values_get_the_right_error(harness, api, body, expected):
    c = await harness.connect()
    if api != "create_topic":
        await c.ok("create_topic", {"name": "t"})
    code, answer = await c.call(api, body)
    assert (code, answer["name"]) == (expected.code, expected.name)
    assert await c.ok("list_topics", {}) == {"topics": [] if api == "create_topic" else ["t"]}


async def test_corrupt_batch_is_refused_and_log_unchanged(harness):
    c = await harness.connect()
    await c.ok("create_topic", {"name": "t"})
    good = bytearray(batch(b"abc"))
    good[-1] ^= 0xFF
    code, answer = await c.call("produce", {"topic": "t", "partition": 0, "batch": bytes(good)})
    assert code == errors.CorruptBatchError.code and "CRC" in answer["message"]
    desc = await c.ok("describe_topic", {"name": "t"})
    assert desc["partitions"][0]["log_end_offset"] == 0


async def test_oversize_frame_is_refused_and_connection_closed(nursery, tmp_path):
    h = await start_harness(nursery, tmp_path, frame_bytes_max=4096, batch_bytes_max=2048)
    bad = await h.connect()
    good = await h.connect()
    await bad.send_bytes(struct.pack(">I", 10_000) + b"\x00" * 100)
    _, code, answer = await bad.receive()
    assert code == errors.FrameTooLargeError.code and "4096" in answer["message"]
    with pytest.raises(EOFError):
        await bad.receive()
    assert await good.ok("list_topics", {}) == {"topics": []}
    await h.broker.shutdown()


async def test_batch_over_batch_bytes_max_is_refused(nursery, tmp_path):
    h = await start_harness(nursery, tmp_path, frame_bytes_max=1 << 20, batch_bytes_max=4096)
    c = await h.connect()
    await c.ok("create_topic", {"name": "t"})
    code, answer = await c.call("produce", {"topic": "t", "partition": 0, "batch": batch(b"x" * 5000)})
    assert code == errors.RecordTooLargeError.code
    assert answer["details"]["batch_bytes_max"] == 4096
    await h.broker.shutdown()


async def test_list_offsets_earliest_latest_and_by_timestamp(harness):
    c = await harness.connect()
    await c.ok("create_topic", {"name": "t"})
    await c.ok("produce", {"topic": "t", "partition": 0, "batch": batch(b"a", b"b", b"c", ts=1000)})
    assert await c.ok("list_offsets", {"topic": "t", "partition": 0, "spec": "earliest"}) == {"offset": 0, "timestamp_ms": -1}
    assert await c.ok("list_offsets", {"topic": "t", "partition": 0, "spec": "latest"}) == {"offset": 3, "timestamp_ms": -1}
    assert await c.ok("list_offsets", {"topic": "t", "partition": 0, "spec": 1001}) == {"offset": 1, "timestamp_ms": 1001}
    assert await c.ok("list_offsets", {"topic": "t", "partition": 0, "spec": 5000}) == {"offset": -1, "timestamp_ms": -1}


async def test_fsync_always_acks_after_the_fsync(nursery, tmp_path):
    h = await start_harness(nursery, tmp_path, fsync="always")
    c = await h.connect()
    await c.ok("create_topic", {"name": "t"})
    answers = []
    for i in range(5):
        await c.send("produce", {"topic": "t", "partition": 0, "batch": batch(b"v%d" % i)})
    for _ in range(5):
        answers.append(await c.receive())
    assert sorted(a[2]["base_offset"] for a in answers) == [0, 1, 2, 3, 4]
    stats = h.broker.statistics()
    assert stats.fsyncs >= 1 and stats.waiting == 0
    # group commit: pipelined produces share fsyncs, never more than one each (how many share one depends on timing)
    assert stats.fsyncs <= 5
    plog = h.broker.log.partition("t", 0)
    assert plog.high_watermark == 5
    await h.broker.shutdown()


async def test_shutdown_answers_parked_fetches(nursery, tmp_path):
    h = await start_harness(nursery, tmp_path)
    c = await h.connect()
    await c.ok("create_topic", {"name": "t"})
    cid = await c.send("fetch", {"partitions": [["t", 0, 0]], "max_wait_ms": 60_000})
    await trio.testing.wait_all_tasks_blocked()
    async with trio.open_nursery() as n:
        n.start_soon(h.broker.shutdown)
        rcid, code, answer = await c.receive()
    assert (rcid, code) == (cid, 0) and answer["partitions"][0][5] == b""


async def test_requests_after_shutdown_began_get_shutting_down(nursery, tmp_path):
    h = await start_harness(nursery, tmp_path)
    c = await h.connect()
    h.broker.loop.stopping = True
    code, answer = await c.call("list_topics", {})
    assert code == errors.ShuttingDownError.code
    h.broker.loop.stopping = False
    await h.broker.shutdown()


async def test_memory_storage_serves_topics_and_writes_no_file(nursery, tmp_path):
    h = await start_harness(nursery, tmp_path / "d", storage="memory", fsync="always")
    c = await h.connect()
    await c.ok("create_topic", {"name": "t", "partitions": 2})
    answer = await c.ok("produce", {"topic": "t", "partition": 1, "batch": batch(b"kept in memory")})
    assert answer["base_offset"] == 0
    fetched = await c.ok("fetch", {"partitions": [["t", 1, 0]]})
    [[_, _, code, _, hw, data]] = fetched["partitions"]
    assert (code, hw) == (0, 1) and [r.value for r in decode_records(data, "t", 1)] == [b"kept in memory"]
    await c.ok("limits_set", {"policy": {"name": "p", "scope": "client", "pattern": "x", "unit": "records",
                                         "algorithm": "token_bucket", "params": {"rate": 5, "burst": 5}}})
    await h.broker.shutdown()
    assert not (tmp_path / "d").exists() or list((tmp_path / "d").rglob("*")) == []
