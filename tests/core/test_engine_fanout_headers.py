# Records that carry a header name more than once (Kafka allows it), through fan-out: a filter policy on that name
# matches if any of its values does (SNS's String.Array), raw delivery makes one attribute of the JSON array of its
# values, the envelope one String.Array attribute; a consumer's fetch still sees the dict it always did.
from __future__ import annotations

import json

import pytest

from millpond.broker.core.fanout.api import DescribeSubscription, Subscribe
from millpond.broker.core.log.api import CreateTopic, Produce
from millpond.broker.core.queues.api import CreateQueue, ReceiveMessages
from millpond.broker.wire.batch import decode_records, encode_batch

from enginekit import T0_MS, answer, ctx, make_engine


@pytest.fixture
def never(tmp_path):
    engine = make_engine(tmp_path, fsync="never")
    answer(engine, CreateTopic("t", 1))
    for q in ("a", "b", "c"):
        answer(engine, CreateQueue(q))
    yield engine
    engine.close()


def produce(engine, *records):
    """records: (value, [(name, value), ...]) in order."""
    answer(engine, Produce("t", 0, encode_batch([(T0_MS, None, v, list(h) or None) for v, h in records])))


def run(engine, now=1.0):
    engine.take_woken()
    for _ in range(100):
        if engine.next_deadline() > now:
            return
        engine.tick(ctx(now))
    raise AssertionError("fan-out never settled")


def received(engine, queue):
    got = answer(engine, ReceiveMessages(queue, max_messages=100, wait_s=0.0, visibility_timeout_s=60.0), 1.0)
    return list(got.messages)


@pytest.mark.parametrize("policy,expected", [
    ({"color": ["red"]}, ["many"]),  # the first value (a dict of the headers kept only the last)
    ({"color": ["blue"]}, ["many"]),  # the last value
    ({"color": [{"prefix": "gr"}]}, ["many"]),  # one in the middle, by an operator
    ({"color": [{"anything-but": ["red"]}]}, ["many", "other"]),  # some value is not red
    ({"color": [{"exists": False}]}, ["none"]),
])
def test_a_filter_policy_matches_if_any_value_of_a_repeated_header_matches(never, policy, expected):
    s = answer(never, Subscribe("t", "a", filter_policy=json.dumps(policy)))
    produce(never, (b"many", [("color", b"red"), ("color", b"green"), ("color", b"blue")]),
            (b"other", [("color", b"yellow"), ("color", b"purple")]), (b"none", []))
    run(never)
    assert [json.loads(m.body)["Message"] for m in received(never, "a")] == expected
    d = answer(never, DescribeSubscription(s.id))
    assert (d.delivered, d.filtered_out) == (len(expected), 3 - len(expected))


def test_raw_delivery_and_the_envelope_keep_every_value_of_a_repeated_header(never):
    answer(never, Subscribe("t", "a", raw=True))
    answer(never, Subscribe("t", "b"))
    headers = [("trace", b"t1"), ("hop", b"gateway"), ("hop", b"orders"), ("hop", b"billing")]
    produce(never, (b"payload", headers))
    run(never)
    [raw] = received(never, "a")
    assert (raw.body, raw.attributes) == (b"payload", {"trace": "t1", "hop": '["gateway","orders","billing"]'})
    [wrapped] = received(never, "b")
    assert json.loads(wrapped.body)["MessageAttributes"] == {
        "trace": {"Type": "String", "Value": "t1"},
        "hop": {"Type": "String.Array", "Value": '["gateway","orders","billing"]'}}


def test_decoding_keeps_repeated_headers_in_order_only_when_asked():
    batch = encode_batch([(T0_MS, None, b"v", [("a", b"1"), ("b", b"2"), ("a", b"3"), ("c", None)])])
    [pairs] = decode_records(batch, "t", 0, header_pairs=True)
    assert pairs.headers == [("a", b"1"), ("b", b"2"), ("a", b"3"), ("c", None)]
    [plain] = decode_records(batch, "t", 0)
    assert plain.headers == {"a": b"3", "b": b"2", "c": None}  # a consumer's records, as before
