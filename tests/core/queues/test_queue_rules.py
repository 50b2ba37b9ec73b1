# The queue core's SQS rules with literal times: visibility timeouts, delays, receipt handles, change visibility,
# retention, counts, queue create/attributes/purge/delete, message validation. No engine, no journal.
from __future__ import annotations

import math

import pytest

from millpond.broker.core.queues import QueueAttributes
from millpond.broker.wire.errors import (
    InvalidConfigError,
    InvalidParameterValueError,
    InvalidQueueNameError,
    QueueAlreadyExistsError,
    ReceiptHandleInvalidError,
    UnknownQueueError,
)

from queuekit import T0_MS, Kit, ms


@pytest.fixture
def k() -> Kit:
    kit = Kit()
    kit.create("q")
    return kit


def test_a_received_message_reappears_at_exactly_its_visibility_timeout_with_receive_count_2(k):
    mid, seq = k.send("q", b"a", 1.0)
    assert seq is None
    first = k.receive("q", 2.0)
    assert [(d.message_id, d.body, d.receive_count, d.sent_ms, d.first_receive_ms) for d in first] == [
        (mid, b"a", 1, ms(1.0), ms(2.0))]
    assert k.receive("q", 31.999) == []
    assert k.counts("q", 31.999) == (0, 1, 0)
    again = k.receive("q", 32.0)
    assert [(d.message_id, d.receive_count, d.first_receive_ms) for d in again] == [(mid, 2, ms(2.0))]
    assert again[0].receipt_handle != first[0].receipt_handle


def test_a_receive_takes_up_to_n_oldest_first_and_may_override_the_visibility_timeout(k):
    for body in (b"1", b"2", b"3"):
        k.send("q", body)
    assert k.bodies("q", 0.0, 2, visibility_timeout_s=5.0) == [b"1", b"2"]
    assert k.bodies("q", 0.0, 2) == [b"3"]
    assert k.bodies("q", 4.999) == []
    assert k.bodies("q", 5.0) == [b"1", b"2"]


def test_change_visibility_to_0_makes_it_visible_at_once_and_only_once(k):
    k.send("q", b"a")
    [d] = k.receive("q", 1.0)
    k.m.change_visibility("q", d.receipt_handle, 0.0, 2.0)
    [d2] = k.receive("q", 2.0)
    assert (d2.body, d2.receive_count) == (b"a", 2)
    assert k.receive("q", 2.0) == []  # the new delivery has the queue's 30 s again


def test_change_visibility_counts_from_the_call_and_is_capped_at_12_hours_since_the_receive(k):
    k.send("q", b"a")
    [d] = k.receive("q", 0.0)
    k.m.change_visibility("q", d.receipt_handle, 100.0, 20.0)
    assert k.receive("q", 119.999) == [] and k.counts("q", 119.999) == (0, 1, 0)
    k.m.change_visibility("q", d.receipt_handle, 43_100.0, 100.0)  # ends at 43,200 s after the receive: allowed
    with pytest.raises(InvalidParameterValueError, match="past 12 hours"):
        k.m.change_visibility("q", d.receipt_handle, 43_101.0, 100.0)
    with pytest.raises(InvalidParameterValueError, match="between 0 and 43200"):
        k.m.change_visibility("q", d.receipt_handle, 43_201.0, 100.0)
    assert k.bodies("q", 43_200.0) == [b"a"]


def test_change_visibility_after_the_timeout_ended_changes_nothing_and_on_a_deleted_message_is_an_error(k):
    k.send("q", b"a")
    [d] = k.receive("q", 0.0, visibility_timeout_s=10.0)
    k.m.change_visibility("q", d.receipt_handle, 500.0, 10.0)  # already visible again: succeeds, does nothing
    assert k.counts("q", 10.0) == (1, 0, 0)
    [d2] = k.receive("q", 10.0)
    k.m.change_visibility("q", d.receipt_handle, 0.0, 11.0)  # the older handle: nothing happens to the new one
    assert k.counts("q", 11.0) == (0, 1, 0)
    k.m.delete_message("q", d2.receipt_handle, 12.0)
    with pytest.raises(InvalidParameterValueError, match="does not exist"):
        k.m.change_visibility("q", d2.receipt_handle, 5.0, 13.0)


def test_receipt_handles_newest_deletes_again_succeeds_stale_leaves_the_newer_delivery(k):
    k.send("q", b"a")
    [old] = k.receive("q", 0.0, visibility_timeout_s=1.0)
    [new] = k.receive("q", 1.0)
    k.m.delete_message("q", old.receipt_handle, 2.0)  # stale: succeeds, deletes nothing
    assert k.counts("q", 2.0) == (0, 1, 0)
    k.m.delete_message("q", new.receipt_handle, 3.0)
    assert k.counts("q", 3.0) == (0, 0, 0)
    k.m.delete_message("q", new.receipt_handle, 4.0)  # again: succeeds
    k.m.delete_message("q", old.receipt_handle, 4.0)


def test_the_newest_handle_deletes_a_message_whose_timeout_ended_if_not_received_again(k):
    k.send("q", b"a")
    [d] = k.receive("q", 0.0)
    assert k.counts("q", 31.0) == (1, 0, 0)
    k.m.delete_message("q", d.receipt_handle, 31.0)
    assert k.counts("q", 31.0) == (0, 0, 0)


@pytest.mark.parametrize("handle", ["", "garbage", "0123456789abcdef:1", "0123456789abcdef:1:1", "x" * 2000])
def test_a_malformed_or_foreign_receipt_handle_is_refused(k, handle):
    k.send("q", b"a")
    k.receive("q", 0.0)
    with pytest.raises(ReceiptHandleInvalidError):
        k.m.delete_message("q", handle, 1.0)
    with pytest.raises(ReceiptHandleInvalidError):
        k.m.change_visibility("q", handle, 1.0, 1.0)


def test_a_handle_of_another_queue_or_one_never_given_out_is_refused(k):
    k.create("other")
    k.send("q", b"a")
    [d] = k.receive("q", 0.0)
    with pytest.raises(ReceiptHandleInvalidError):
        k.m.delete_message("other", d.receipt_handle, 1.0)
    incarnation, seq, n = d.receipt_handle.split(":")
    for forged in (f"{incarnation}:{seq}:2", f"{incarnation}:99:1", f"{incarnation}:{seq}:0"):
        with pytest.raises(ReceiptHandleInvalidError):
            k.m.delete_message("q", forged, 1.0)
    k.m.delete("q", 2.0)
    k.create("q", 3.0)  # the same name again: the old handles mean nothing here
    k.send("q", b"b", 3.0)
    with pytest.raises(ReceiptHandleInvalidError):
        k.m.delete_message("q", d.receipt_handle, 4.0)


def test_delays_per_message_and_per_queue_and_the_counts(k):
    k.create("slow", delay_s=10.0)
    k.send("q", b"later", 0.0, delay_s=5.0)
    k.send("q", b"now", 0.0)
    k.send("slow", b"s", 0.0)
    k.send("slow", b"override", 0.0, delay_s=0.0)
    assert k.counts("q", 0.0) == (1, 0, 1)
    assert k.bodies("q", 0.0) == [b"now"]
    assert k.counts("q", 0.0) == (0, 1, 1)
    assert k.bodies("q", 4.999) == [] and k.bodies("q", 5.0) == [b"later"]
    assert k.bodies("slow", 0.0) == [b"override"]
    assert k.bodies("slow", 9.999) == [] and k.bodies("slow", 10.0) == [b"s"]
    with pytest.raises(InvalidParameterValueError, match="between 0 and 900"):
        k.send("q", b"x", 0.0, delay_s=900.5)


def test_retention_removes_messages_at_exactly_retention_s_in_flight_too_and_lowering_it_applies(k):
    k.create("short", retention_s=60.0)
    k.send("short", b"a", 0.0)
    k.send("short", b"b", 30.0)
    k.receive("short", 30.0)
    assert k.counts("short", 59.999) == (1, 1, 0)
    assert k.counts("short", 60.0) == (1, 0, 0)
    assert k.m.next_deadline() == 90.0
    k.m.tick(90.0)
    assert k.m.queues["short"].messages == {}
    k.send("q", b"old", 0.0)
    k.send("q", b"new", 100.0)
    k.m.set_attributes("q", {"retention_s": 60.0}, 100.0, ms(100.0))
    assert k.bodies("q", 100.0) == [b"new"]


def test_next_deadline_and_tick_wake_the_queue_when_a_timeout_ends(k):
    assert k.m.next_deadline() == math.inf
    k.send("q", b"a", 0.0, delay_s=5.0)
    k.woken.clear()
    assert k.m.next_deadline() == 5.0
    k.m.tick(4.0)
    assert k.woken == []
    k.m.tick(5.0)
    assert k.woken == ["q"]
    k.receive("q", 6.0)
    assert k.m.next_deadline() == 36.0


def test_create_is_idempotent_with_equal_attributes_and_refused_with_others():
    k = Kit()
    q = k.create("q", visibility_timeout_s=10.0)
    assert k.create("q", 5.0, visibility_timeout_s=10.0) is q
    with pytest.raises(QueueAlreadyExistsError):
        k.create("q", 5.0, visibility_timeout_s=11.0)
    assert q.created_ms == T0_MS


@pytest.mark.parametrize("name", ["", "a" * 81, "has space", "dot.ted", "x.fifo.fifo", "a" * 76 + ".fifo"])
def test_queue_names_follow_sqs(name):
    with pytest.raises(InvalidQueueNameError):
        Kit().create(name)


@pytest.mark.parametrize("attrs, match", [
    ({"visibility_timeout_s": 43_201.0}, "visibility_timeout_s must be between 0 and 43200"),
    ({"delay_s": -1.0}, "delay_s"),
    ({"retention_s": 59.0}, "retention_s must be between 60 and 1209600, got 59$"),
    ({"message_bytes_max": 1023}, "message_bytes_max"),
    ({"message_bytes_max": 2_097_152}, "message_bytes_max must be between 1024 and 1048576, got 2097152$"),
    ({"receive_wait_s": 0.25 - 1}, "receive_wait_s must be between 0 and 20, got -0.75$"),
    ({"receive_wait_s": 20.5}, "receive_wait_s"),
    ({"content_based_deduplication": True}, "FIFO"),
    ({"dead_letter_queue": "dlq"}, "both"),
    ({"dead_letter_queue": "missing", "max_receive_count": 3}, "does not exist"),
    ({"dead_letter_queue": "dlq", "max_receive_count": 0}, "max_receive_count"),
    ({"dead_letter_queue": "dlq", "max_receive_count": 1001}, "max_receive_count"),
    ({"dead_letter_queue": "dlq.fifo", "max_receive_count": 3}, "must be one too"),
    ({"fifo": True}, "ends in '.fifo'"),
])
def test_attributes_out_of_sqs_ranges_are_refused(attrs, match):
    k = Kit()
    k.create("dlq")
    k.create("dlq.fifo")
    with pytest.raises(InvalidConfigError, match=match):
        k.m.create("q", QueueAttributes(**attrs), 0.0, T0_MS)
    assert "q" not in k.m.queues


def test_set_attributes_changes_what_is_given_and_never_the_type(k):
    k.m.set_attributes("q", {"visibility_timeout_s": 5.0}, 1.0, ms(1.0))
    q = k.m.queues["q"]
    assert (q.attrs.visibility_timeout_s, q.attrs.delay_s, q.modified_ms) == (5.0, 0.0, ms(1.0))
    with pytest.raises(InvalidConfigError, match="cannot change"):
        k.m.set_attributes("q", {"fifo": True}, 1.0, ms(1.0))


def test_purge_deletes_visible_delayed_and_in_flight_messages_and_delete_removes_the_queue(k):
    k.send("q", b"a")
    k.send("q", b"b")
    k.send("q", b"c", delay_s=10.0)
    k.receive("q", 0.0)
    assert k.counts("q", 0.0) == (1, 1, 1)
    k.m.purge("q", 1.0)
    assert k.counts("q", 1.0) == (0, 0, 0) and k.m.next_deadline() == math.inf
    k.m.delete("q", 2.0)
    with pytest.raises(UnknownQueueError):
        k.send("q", b"x", 3.0)


def test_message_validation_size_and_attributes(k):
    k.create("small", message_bytes_max=1024)
    k.send("small", b"x" * 1020, attributes={"ab": "cd"})  # 1,024 bytes with its attribute: fits
    with pytest.raises(InvalidParameterValueError, match="message must be at most 1024 bytes, got 1025 \\(body and attributes\\)"):
        k.send("small", b"x" * 1021, attributes={"ab": "cd"})
    with pytest.raises(InvalidParameterValueError, match="must not be empty"):
        k.send("q", b"")
    with pytest.raises(InvalidParameterValueError, match="at most 10 attributes"):
        k.send("q", b"x", attributes={f"a{i}": "v" for i in range(11)})
    for bad in ("AWS.x", ".a", "a.", "a..b", "sp ace"):
        with pytest.raises(InvalidParameterValueError, match="attribute name"):
            k.send("q", b"x", attributes={bad: "v"})
    with pytest.raises(InvalidParameterValueError, match="dedup_id is valid on FIFO queues only"):
        k.send("q", b"x", dedup_id="d")
    k.send("q", b"x", attributes={"s": "text", "n": 1.5, "i": 3, "b": b"\x00"}, group_id="tenant-1")
    [d] = k.receive("q", 0.0)
    assert (d.attributes, d.group_id, d.sequence_number) == ({"s": "text", "n": 1.5, "i": 3, "b": b"\x00"},
                                                             "tenant-1", None)


def test_a_receive_stops_before_its_byte_budget_but_always_gives_one(k):
    for _ in range(3):
        k.send("q", b"x" * 100)
    assert len(k.receive("q", 0.0, 10, bytes_max=250)) == 2
    assert len(k.receive("q", 0.0, 10, bytes_max=10)) == 1
