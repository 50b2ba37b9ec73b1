# The native front door alone: frames to typed requests (types checked, wire milliseconds to seconds, the handshake
# first), answers to the protocol's maps, and fetch answers fitted to what the client accepts.
from __future__ import annotations

import msgpack
import pytest

from millpond.broker.config import load_config
from millpond.broker.core.engine import BrokerInfo, BrokerLimits, Hello
from millpond.broker.core.groups.api import CommitEntry, GroupJoin, OffsetCommit
from millpond.broker.core.groups.types import HeartbeatAnswer, MemberState, TopicPartition
from millpond.broker.core.log.api import Fetch, FetchedPartition, Fetched, FetchPartition, Produce, Produced
from millpond.broker.server.frontends.native import REQUESTS, NativeCodec
from millpond.broker.wire.errors import (
    HandshakeRequiredError,
    InvalidRequestError,
    UnknownApiError,
    UnsupportedVersionError,
)
from millpond.broker.wire.frames import decode_response, encode_request

CONFIG = load_config(None)


def body(cid: int, api: str, args) -> bytes:
    return encode_request(cid, api, args)[4:]


def decoded(pieces) -> tuple:
    frame = b"".join(bytes(p) for p in pieces)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    return decode_response(frame[4:])


@pytest.fixture
def codec():
    return NativeCodec(CONFIG)


@pytest.fixture
def session(codec):
    s = codec.new_session()
    codec.decode(s, body(1, "hello", {"protocol_version": 1, "client_id": "app"}))
    return s


def test_the_first_request_must_be_hello(codec):
    s = codec.new_session()
    with pytest.raises(HandshakeRequiredError) as info:
        codec.decode(s, body(7, "list_topics", {}))
    assert info.value.details["correlation_id"] == 7
    assert codec.decode(s, body(8, "hello", {"protocol_version": 1, "client_id": "a"})) == (8, Hello("a"))
    assert s.handshaken and s.client_id == "a"


def test_a_second_hello_is_refused_as_such(codec, session):
    with pytest.raises(InvalidRequestError, match="handshake is already done") as info:
        codec.decode(session, body(3, "hello", {"protocol_version": 1}))
    assert info.value.details["correlation_id"] == 3


def test_hello_with_an_unknown_version_or_a_too_small_frame_is_refused(codec):
    with pytest.raises(UnsupportedVersionError, match=r"speaks \[1\]"):
        codec.decode(codec.new_session(), body(1, "hello", {"protocol_version": 99}))
    with pytest.raises(InvalidRequestError, match="frame_bytes_max 1000 is below"):
        codec.decode(codec.new_session(), body(1, "hello", {"protocol_version": 1, "frame_bytes_max": 1000}))


def test_requests_decode_to_the_cores_types_with_milliseconds_as_seconds(codec, session):
    assert codec.decode(session, body(2, "produce", {"topic": "t", "partition": 1, "batch": b"x"})) == (
        2, Produce("t", 1, b"x"))
    cid, fetch = codec.decode(session, body(3, "fetch", {"partitions": [["t", 0, 5]], "max_wait_ms": 250,
                                                          "max_bytes": 100}))
    assert fetch == Fetch((FetchPartition("t", 0, 5),), 100, 0.25)
    _, join = codec.decode(session, body(4, "group_join", {"group": "g", "topics": ["t"],
                                                           "session_timeout_ms": 3000}))
    assert join == GroupJoin("g", ("t",), session_timeout_s=3.0)
    _, commit = codec.decode(session, body(5, "offset_commit", {"group": "g", "offsets": [["t", 0, 9],
                                                                                          ["t", 1, 4, "m"]]}))
    assert commit.offsets == (CommitEntry("t", 0, 9), CommitEntry("t", 1, 4, "m"))


@pytest.mark.parametrize("api, args, message", [
    ("produce", {"topic": "t", "partition": "0", "batch": b""}, "produce: field 'partition' must be an integer, got string"),
    ("produce", {"topic": "t", "partition": True, "batch": b""}, "must be an integer, got boolean"),
    ("produce", {"topic": "t", "partition": 0}, "produce: missing field 'batch'"),
    ("fetch", {"partitions": [["t", 0]]}, r"'partitions'\[0\] must be an array \[topic"),
    ("fetch", {"partitions": [["t", 0, 0]], "max_wait_ms": -1}, "'max_wait_ms' must be >= 0"),
    ("fetch", {"partitions": "t"}, "must be array of"),
    ("create_topic", [], "body of 'create_topic' must be a map"),
    ("limits_set", {"policy": {1: 2}}, "key must be string"),
])
def test_a_malformed_request_is_refused_naming_the_api_and_the_field(codec, session, api, args, message):
    with pytest.raises(InvalidRequestError, match=message) as info:
        codec.decode(session, body(9, api, args))
    assert info.value.details["correlation_id"] == 9


def test_an_unknown_api_is_refused_with_its_correlation_id(codec, session):
    with pytest.raises(UnknownApiError, match="unknown api 'nope'") as info:
        codec.decode(session, body(11, "nope", {}))
    assert info.value.details["correlation_id"] == 11


def test_every_api_has_a_request_type_and_is_documented(codec):
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", doc, re.M)) - {"hello"}
    assert len(set(REQUESTS.values())) == len(REQUESTS)  # one request type per API name
    assert set(REQUESTS) == documented  # every API in docs/protocol.md's tables, and only those


def test_a_fetch_is_fitted_to_the_largest_answer_the_client_accepts(codec):
    s = codec.new_session()
    frame = CONFIG.batch_bytes_max + 4096
    codec.decode(s, body(1, "hello", {"protocol_version": 1, "frame_bytes_max": frame}))
    _, fetch = codec.decode(s, body(2, "fetch", {"partitions": [["t", 0, 0], ["u", 0, 0]]}))
    assert 0 < fetch.max_bytes <= frame - 2 * 49 - 64
    _, small = codec.decode(s, body(3, "fetch", {"partitions": [["t", 0, 0]], "max_bytes": 10}))
    assert small.max_bytes == 10


def test_answers_encode_as_the_protocols_maps(codec):
    info = BrokerInfo("0.1.0", "always", BrokerLimits(1, 2, 3, 4, 5, 6))
    assert decoded(codec.encode(1, info)) == (1, 0, {
        "protocol_version": 1, "broker_version": "0.1.0", "fsync": "always",
        "limits": {"frame_bytes_max": 1, "batch_bytes_max": 2, "requests_in_flight_max": 3, "partitions_max": 4,
                   "fetch_bytes_max": 5, "queue_batch_entries_max": 6}})
    beat = HeartbeatAnswer("m", 3, (TopicPartition("t", 0),), MemberState.STABLE, 1.5)
    assert decoded(codec.encode(2, beat)) == (2, 0, {"member_id": "m", "member_epoch": 3, "assignment": [["t", 0]],
                                                     "state": "stable", "heartbeat_interval_ms": 1500})
    assert decoded(codec.encode(3, Produced(0, 7, 123))) == (3, 0, {"partition": 0, "base_offset": 7,
                                                                    "timestamp_ms": 123})
    assert decoded(codec.encode(4, None)) == (4, 0, {})


def test_a_fetch_answer_sends_stored_batches_without_copying_them(codec):
    data = memoryview(bytes(range(256)) * 64)
    pieces = codec.encode(5, Fetched((FetchedPartition("t", 0, 0, 0, 10, data),)))
    assert any(p is data for p in pieces)
    assert decoded(pieces) == (5, 0, {"partitions": [["t", 0, 0, 0, 10, bytes(data)]]})
