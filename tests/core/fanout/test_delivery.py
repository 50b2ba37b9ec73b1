# What a record becomes in a queue (delivery.py): derived message ids, SNS's envelope (text and base64), raw
# messages, FIFO message groups from keys, and SNS's timestamp format against the standard library's calendar.
from __future__ import annotations

import base64
import datetime
import json
import uuid

import pytest
from hypothesis import given, settings, strategies as st

from millpond.broker.core.fanout.delivery import (
    NO_KEY_GROUP,
    delivery_message_id,
    delivery_message_ids,
    envelope,
    group_id,
    iso_timestamp,
    raw_message,
    record_message_id,
)
from millpond.broker.wire.batch import Record
from millpond.broker.wire.errors import InvalidParameterValueError


def rec(value=b"v", key=None, headers=None, offset=3, ts=1_700_000_000_123):
    return Record("t", 1, offset, ts, key, value, headers)


def test_message_ids_are_derived_and_distinct():
    assert record_message_id("t", 1, 3) == record_message_id("t", 1, 3)
    assert len({record_message_id("t", 1, 3), record_message_id("t", 1, 4), record_message_id("t", 0, 3),
                record_message_id("u", 1, 3)}) == 4
    assert delivery_message_id("s1", "t", 1, 3) == delivery_message_id("s1", "t", 1, 3)
    assert delivery_message_id("s1", "t", 1, 3) != delivery_message_id("s2", "t", 1, 3)


def test_the_envelope_has_snss_names_and_the_records_place():
    env = json.loads(envelope(rec(b"hello", b"k", {"a": b"x", "b": b"\xff", "none": None}), "sub"))
    assert env == {"Type": "Notification", "MessageId": record_message_id("t", 1, 3), "Topic": "t", "Partition": 1,
                   "Offset": 3, "SubscriptionId": "sub", "Key": "k", "Message": "hello",
                   "Timestamp": "2023-11-14T22:13:20.123Z",
                   "MessageAttributes": {"a": {"Type": "String", "Value": "x"},
                                         "b": {"Type": "Binary", "Value": base64.b64encode(b"\xff").decode()}}}


def test_the_envelope_carries_bytes_that_are_not_utf8_in_base64():
    env = json.loads(envelope(rec(b"\x00\xfe", b"\x80", None), "sub"))
    assert (base64.b64decode(env["Message"]), env["MessageEncoding"]) == (b"\x00\xfe", "base64")
    assert (base64.b64decode(env["Key"]), env["KeyEncoding"]) == (b"\x80", "base64")
    assert "MessageAttributes" not in env
    assert json.loads(envelope(rec(None, None), "s"))["Key"] is None


def test_raw_messages():
    assert raw_message(rec(b"body", headers={"a": b"x", "b": b"\xff"})) == (b"body", {"a": "x", "b": b"\xff"})
    for value in (None, b""):
        with pytest.raises(InvalidParameterValueError, match="has no value"):
            raw_message(rec(value))


def test_fifo_groups_from_keys():
    assert group_id(None) == NO_KEY_GROUP
    assert group_id(b"customer-7") == "customer-7"
    for odd in (b"with space", b"\xff", b"x" * 129, b""):
        g = group_id(odd)
        assert g.startswith("sha256:") and len(g) == 71
    assert group_id(b"\xff") != group_id(b"\xfe")


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=253_402_300_799_999))  # up to the end of year 9999
def test_timestamps_read_as_the_standard_calendar_does(ms):
    t = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(milliseconds=ms)
    assert iso_timestamp(ms) == t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40), st.integers(min_value=0, max_value=10_000),
       st.integers(min_value=0, max_value=2**63 - 1))
def test_message_ids_are_uuid5s_of_the_records_place(subscription, topic, partition, offset):
    # the ids are journaled and used as FIFO deduplication ids: they must stay exactly uuid.uuid5's
    namespace = uuid.UUID("6f1c2a4e-1d0b-5c7e-9a43-8e2f5b7d9c10")
    expected = str(uuid.uuid5(namespace, f"{subscription}\x00{topic}\x00{partition}\x00{offset}"))
    assert delivery_message_id(subscription, topic, partition, offset) == expected
    assert delivery_message_ids(subscription, topic, partition)(offset) == expected
    assert record_message_id(topic, partition, offset) == str(uuid.uuid5(namespace,
                                                                         f"{topic}\x00{partition}\x00{offset}"))


REPEATED = [("kind", b"a"), ("tag", b"x"), ("kind", b"b"), ("none", None), ("kind", b"c")]


def test_a_repeated_header_is_one_string_array_attribute_of_the_envelope_in_order():
    env = json.loads(envelope(rec(headers=REPEATED), "sub"))
    assert env["MessageAttributes"] == {"kind": {"Type": "String.Array", "Value": '["a","b","c"]'},
                                        "tag": {"Type": "String", "Value": "x"}}
    assert list(env["MessageAttributes"]) == ["kind", "tag"]  # first-seen order
    # a name repeated with a value that is not UTF-8: every value of it in base64
    env = json.loads(envelope(rec(headers=[("b", b"\xff"), ("b", b"ok")]), "sub"))
    assert env["MessageAttributes"]["b"]["Type"] == "Binary.Array"
    assert [base64.b64decode(v) for v in json.loads(env["MessageAttributes"]["b"]["Value"])] == [b"\xff", b"ok"]
    # a name repeated with no value but once is a plain attribute
    env = json.loads(envelope(rec(headers=[("k", None), ("k", b"v")]), "sub"))
    assert env["MessageAttributes"] == {"k": {"Type": "String", "Value": "v"}}


def test_a_repeated_header_is_one_raw_attribute_holding_its_values_in_order():
    assert raw_message(rec(b"body", headers=REPEATED)) == (b"body", {"kind": '["a","b","c"]', "tag": "x"})
    body, attributes = raw_message(rec(b"body", headers=[("b", b"\xff"), ("b", b"\x00")]))
    assert [base64.b64decode(v) for v in json.loads(attributes["b"])] == [b"\xff", b"\x00"]
    assert type(attributes["b"]) is bytes
    # the same record read as a dict (a name once) gives the plain attributes it always did
    assert raw_message(rec(b"body", headers={"kind": b"a", "tag": b"x"})) == (b"body", {"kind": "a", "tag": "x"})
