# The sans-IO protocol core: ids, handshake, byte feeding, error mapping. No sockets.
from __future__ import annotations

import pytest

from millpond.broker.wire.errors import ConnectionClosedError, OffsetOutOfRangeError, UnsupportedVersionError
from millpond.broker.wire.frames import FRAME_BYTES_MAX_DEFAULT, decode_request, encode_response
from millpond.client._protocol import ClientProtocol, Response, create_topic_body, offset_spec, parse_address

LIMITS = {"frame_bytes_max": 1 << 20, "batch_bytes_max": 1 << 19, "requests_in_flight_max": 64, "partitions_max": 8}


def handshaken() -> ClientProtocol:
    p = ClientProtocol("t")
    cid, data = p.hello()
    [r] = p.receive(encode_response(cid, 0, {"protocol_version": 1, "broker_version": "0.1", "limits": LIMITS}))
    p.handshake_done(r)
    return p


def test_hello_first_and_limits_remembered():
    p = ClientProtocol("app-1")
    with pytest.raises(RuntimeError):
        p.request("list_topics", {})
    cid, data = p.hello()
    assert decode_request(data[4:]) == (cid, "hello", {"protocol_version": 1, "client_id": "app-1",
                                               "frame_bytes_max": FRAME_BYTES_MAX_DEFAULT})
    [r] = p.receive(encode_response(cid, 0, {"protocol_version": 1, "broker_version": "0.1", "limits": LIMITS}))
    lim = p.handshake_done(r)
    assert (lim.batch_bytes_max, lim.partitions_max, p.broker_version) == (1 << 19, 8, "0.1")


def test_refused_hello_raises_typed_error():
    p = ClientProtocol("x")
    cid, _ = p.hello()
    [r] = p.receive(encode_response(cid, 3, {"name": "UNSUPPORTED_VERSION", "message": "no", "details": {"versions": [2]}}))
    with pytest.raises(UnsupportedVersionError) as e:
        p.handshake_done(r)
    assert e.value.details == {"versions": [2]} and not p.ready


def test_ids_distinct_and_answers_matched_out_of_order_across_split_reads():
    p = handshaken()
    a, _ = p.request("list_topics", {})
    b, _ = p.request("metadata", {"topics": ["t"]})
    assert a != b and 0 not in (a, b)
    data = encode_response(b, 0, {"topics": {"t": 3}}) + encode_response(a, 0, {"topics": ["t"]})
    out = []
    for i in range(0, len(data), 3):  # the socket may hand us any slicing of the bytes
        out += p.receive(data[i:i + 3])
    assert [(r.correlation_id, r.result()) for r in out] == [(b, {"topics": {"t": 3}}), (a, {"topics": ["t"]})]
    assert p.outstanding == 0


def test_forgotten_and_unknown_ids_are_dropped():
    p = handshaken()
    a, _ = p.request("list_topics", {})
    p.forget(a)
    assert p.receive(encode_response(a, 0, {}) + encode_response(999, 0, {})) == []


def test_error_answer_maps_to_class_with_details():
    r = Response(5, 14, {"name": "OFFSET_OUT_OF_RANGE", "message": "below start",
                         "details": {"log_start_offset": 10, "log_end_offset": 20}})
    with pytest.raises(OffsetOutOfRangeError) as e:
        r.result()
    assert e.value.details == {"log_start_offset": 10, "log_end_offset": 20}
    assert not e.value.retriable


def test_fail_all_gives_retriable_connection_closed():
    p = handshaken()
    a, _ = p.request("list_topics", {})
    b, _ = p.request("list_topics", {})
    failed = p.fail_all("reset")
    assert sorted(cid for cid, _ in failed) == sorted([a, b])
    assert all(isinstance(e, ConnectionClosedError) and e.retriable for _, e in failed)


def test_create_topic_body_converts_seconds_to_ms():
    assert create_topic_body("t", 2, 1.5, 1000, None, 0.25) == {
        "name": "t", "partitions": 2, "config": {"retention_ms": 1500, "retention_bytes": 1000, "segment_ms": 250}}
    assert create_topic_body("t", 1, -1, None, None, None)["config"] == {"retention_ms": -1}  # keep forever
    assert create_topic_body("t", 1, None, None, None, None) == {"name": "t", "partitions": 1}


def test_addresses_and_offset_specs():
    assert parse_address("127.0.0.1:7420") == ("127.0.0.1", 7420)
    assert parse_address(("h", 1)) == ("h", 1)
    assert parse_address("[::1]:9") == ("::1", 9)
    for bad in ("nohost", "h:x", "h:0"):
        with pytest.raises(ValueError):
            parse_address(bad)
    assert offset_spec("earliest") == "earliest" and offset_spec(123) == 123
    for bad in ("first", -1, True, 1.5):
        with pytest.raises(ValueError):
            offset_spec(bad)
