# produce_batches over the wire: one request, a result per batch (its own error code and body when refused), and
# malformed or oversized requests answered with an error naming the field while the broker serves everyone else.
from __future__ import annotations

from millpond.broker.wire import errors
from millpond.broker.wire.batch import encode_batch
from millpond.broker.wire.frames import encode_request

T0_MS = 1_700_000_000_000


def batch(value: bytes) -> bytes:
    return encode_batch([(T0_MS, None, value, None)])


async def test_each_batch_is_answered_in_order_with_its_own_result(harness):
    c = await harness.connect()
    await c.ok("create_topic", {"name": "t", "partitions": 2})
    answer = await c.ok("produce_batches", {"batches": [["t", 0, batch(b"a")], ["t", 1, batch(b"b")],
                                                        ["gone", 0, batch(b"c")], ["t", 0, batch(b"d")]]})
    rows = answer["results"]
    assert [r[:4] for r in rows] == [["t", 0, 0, 0], ["t", 1, 0, 0],
                                     ["gone", 0, errors.UnknownTopicOrPartitionError.code, -1], ["t", 0, 0, 1]]
    assert rows[0][5] is None and rows[2][5]["name"] == "UNKNOWN_TOPIC_OR_PARTITION"
    assert "gone" in rows[2][5]["message"]
    fetched = await c.ok("fetch", {"partitions": [["t", 0, 0]], "max_wait_ms": 0})
    assert len(fetched["partitions"][0][5]) == 2 * len(batch(b"a"))  # a and d, stored as sent


async def test_malformed_requests_name_the_field_and_others_are_served(harness):
    c, other = await harness.connect(), await harness.connect()
    await c.ok("create_topic", {"name": "t"})
    for body, field in [({}, "batches"), ({"batches": "x"}, "batches"), ({"batches": [["t", 0]]}, "'batches'[0]"),
                        ({"batches": [["t", "zero", b"x"]]}, "'batches'[0]"), ({"batches": []}, "batches")]:
        code, answer = await c.call("produce_batches", body)
        assert code == errors.InvalidRequestError.code and field in answer["message"], (body, answer)
    # a request of 10,000 empty batches is refused batch by batch, bounded by the frame, and answered
    flood = encode_request(7, "produce_batches", {"batches": [["t", 0, b""]] * 10_000})
    await c.send_bytes(flood)
    cid, code, answer = await c.receive()
    assert (cid, code, len(answer["results"])) == (7, 0, 10_000)
    assert {r[2] for r in answer["results"]} == {errors.CorruptBatchError.code}
    assert (await other.ok("list_topics", {}))["topics"] == ["t"]
