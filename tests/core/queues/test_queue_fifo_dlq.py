# FIFO queues (group order, group blocking, deduplication window, sequence numbers) and dead-letter redrive, with
# literal times, on the queue core alone.
from __future__ import annotations

import hashlib

import pytest

from millpond.broker.wire.errors import InvalidParameterValueError, MissingParameterError

from queuekit import Kit


@pytest.fixture
def k() -> Kit:
    kit = Kit()
    kit.create("f.fifo")
    return kit


def send(k: Kit, group: str, body: bytes, now: float = 0.0, dedup: str | None = None) -> tuple[str, int | None]:
    return k.send("f.fifo", body, now, group_id=group, dedup_id=dedup or body.decode())


def test_fifo_fills_a_receive_from_one_group_and_a_group_in_flight_delivers_nothing(k):
    for body in (b"g1-m1", b"g1-m2", b"g1-m3", b"g1-m4"):
        send(k, "g1", body)
    send(k, "g2", b"g2-m1")
    send(k, "g3", b"g3-m1")
    first = k.receive("f.fifo", 1.0, 2)
    assert [d.body for d in first] == [b"g1-m1", b"g1-m2"]
    assert [d.sequence_number for d in first] == [1, 2]
    assert k.bodies("f.fifo", 1.0, 1) == [b"g2-m1"]
    assert k.bodies("f.fifo", 1.0, 10) == [b"g3-m1"]  # g1 and g2 are in flight
    k.m.delete_message("f.fifo", first[0].receipt_handle, 2.0)
    assert k.bodies("f.fifo", 2.0) == []  # g1-m2 is still in flight: g1 stays blocked
    k.m.delete_message("f.fifo", first[1].receipt_handle, 2.0)
    assert k.bodies("f.fifo", 2.0) == [b"g1-m3", b"g1-m4"]


def test_fifo_a_group_whose_timeout_ends_delivers_again_in_order(k):
    send(k, "g", b"a")
    send(k, "g", b"b")
    [d] = k.receive("f.fifo", 0.0)
    assert k.bodies("f.fifo", 29.999) == []
    assert k.bodies("f.fifo", 30.0) == [b"a", b"b"]
    assert d.body == b"a"


def test_fifo_receive_with_visibility_0_releases_the_group_at_once(k):
    send(k, "g", b"a")
    send(k, "g", b"b")
    assert k.bodies("f.fifo", 0.0, 1, visibility_timeout_s=0.0) == [b"a"]
    assert k.bodies("f.fifo", 0.0, 1) == [b"a"]


def test_fifo_duplicates_within_5_minutes_are_accepted_not_delivered_even_after_delete_and_again_after_purge(k):
    mid, seq = send(k, "g", b"x", 0.0, dedup="d1")
    assert send(k, "g", b"other body", 10.0, dedup="d1") == (mid, seq)  # the first one's id and number
    [d] = k.receive("f.fifo", 10.0, 10)
    assert d.body == b"x" and d.dedup_id == "d1"
    k.m.delete_message("f.fifo", d.receipt_handle, 11.0)
    assert send(k, "g", b"x", 299.999, dedup="d1") == (mid, seq)
    assert k.bodies("f.fifo", 299.999) == []
    mid2, seq2 = send(k, "g", b"x", 300.0, dedup="d1")  # the window is 5 minutes from the first send
    assert mid2 != mid and seq2 == 2
    k.m.purge("f.fifo", 301.0)
    mid3, seq3 = send(k, "g", b"x", 302.0, dedup="d1")
    assert seq3 == 3 and k.bodies("f.fifo", 302.0) == [b"x"]


def test_fifo_content_based_deduplication_hashes_the_body_only():
    k = Kit()
    k.create("c.fifo", content_based_deduplication=True)
    mid, _ = k.send("c.fifo", b"same", 0.0, group_id="g", attributes={"a": "1"})
    assert k.send("c.fifo", b"same", 1.0, group_id="g2", attributes={"a": "2"}) == (mid, 1)
    [d] = k.receive("c.fifo", 1.0, 10)
    assert d.dedup_id == hashlib.sha256(b"same").hexdigest()
    assert k.send("c.fifo", b"same", 2.0, group_id="g", dedup_id="explicit")[0] != mid  # explicit id wins


def test_fifo_requires_a_group_and_a_dedup_id_and_refuses_a_message_delay(k):
    with pytest.raises(MissingParameterError, match="group_id"):
        k.send("f.fifo", b"x", dedup_id="d")
    with pytest.raises(InvalidParameterValueError, match="needs a dedup_id"):
        k.send("f.fifo", b"x", group_id="g")
    with pytest.raises(InvalidParameterValueError, match="value 2 for parameter delay_s is invalid"):
        k.send("f.fifo", b"x", group_id="g", dedup_id="d", delay_s=2.0)
    with pytest.raises(InvalidParameterValueError, match="group_id"):
        k.send("f.fifo", b"x", group_id="has space", dedup_id="d")


def test_fifo_delete_with_a_handle_whose_timeout_ended_is_refused_as_expired(k):
    send(k, "g", b"a")
    [d] = k.receive("f.fifo", 0.0, visibility_timeout_s=10.0)
    with pytest.raises(InvalidParameterValueError, match="has expired"):
        k.m.delete_message("f.fifo", d.receipt_handle, 10.0)
    [d2] = k.receive("f.fifo", 10.0, visibility_timeout_s=10.0)
    k.m.change_visibility("f.fifo", d2.receipt_handle, 30.0, 15.0)  # extended: still deletable at 20
    k.m.delete_message("f.fifo", d2.receipt_handle, 20.0)
    assert k.counts("f.fifo", 20.0) == (0, 0, 0)


def test_max_receive_count_1_first_receive_returns_it_second_returns_nothing_and_the_dlq_holds_it():
    k = Kit()
    k.create("dlq", retention_s=600.0)
    k.create("q", dead_letter_queue="dlq", max_receive_count=1, visibility_timeout_s=5.0)
    mid, _ = k.send("q", b"poison", 0.0, attributes={"a": "1"})
    assert k.bodies("q", 1.0) == [b"poison"]
    assert k.bodies("q", 6.0) == []
    assert k.counts("q", 6.0) == (0, 0, 0) and k.counts("dlq", 6.0) == (1, 0, 0)
    [d] = k.receive("dlq", 6.0)
    assert (d.message_id, d.body, d.attributes, d.receive_count, d.dead_letter_source) == (
        mid, b"poison", {"a": "1"}, 1, "q")
    assert k.counts("dlq", 599.999) == (1, 0, 0)  # visible again after 30 s, still kept
    assert k.counts("dlq", 600.0) == (0, 0, 0)  # retention counts from the first send, not from the move


def test_redrive_moves_only_messages_past_max_receive_count_and_fills_the_receive_with_others():
    k = Kit()
    k.create("dlq")
    k.create("q", dead_letter_queue="dlq", max_receive_count=2, visibility_timeout_s=1.0)
    k.send("q", b"a", 0.0)
    assert k.bodies("q", 0.0) == [b"a"]
    assert k.bodies("q", 1.0) == [b"a"]
    k.send("q", b"b", 1.5)
    assert k.bodies("q", 2.0, 10) == [b"b"]
    assert k.bodies("dlq", 2.0) == [b"a"]


def test_fifo_dead_letters_keep_their_group_and_the_next_message_of_the_group_is_delivered():
    k = Kit()
    k.create("d.fifo")
    k.create("s.fifo", dead_letter_queue="d.fifo", max_receive_count=1, visibility_timeout_s=1.0)
    mid, _ = k.send("s.fifo", b"a", 0.0, group_id="g", dedup_id="1")
    k.send("s.fifo", b"b", 0.0, group_id="g", dedup_id="2")
    assert k.bodies("s.fifo", 0.0, 1) == [b"a"]
    assert k.bodies("s.fifo", 1.0, 1) == [b"b"]
    [d] = k.receive("d.fifo", 1.0)
    assert (d.body, d.group_id, d.dedup_id, d.sequence_number) == (b"a", "g", mid, 1)
