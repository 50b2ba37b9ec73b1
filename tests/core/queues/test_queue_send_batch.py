# Batched sends (QueueManager.send_batch) and the visible-message order that sends append to: per-entry answers and
# errors in order, stop_at_error, a FIFO duplicate inside one batch, a full queue part-way, one wake per batch, the
# fan-out marks of a batch; then receive order across messages sent visible, delayed and visible again, a message
# received out of order (as a checkpoint's load does), a dead letter that expires before the messages around it,
# and the lazily dropped rows staying bounded. Literal times, no engine.
from __future__ import annotations

import pytest

from millpond.broker.core.queues import QueueManager
from millpond.broker.core.queues.manager import Outgoing
from millpond.broker.wire.errors import InvalidParameterValueError, QueueFullError, UnknownQueueError

from queuekit import Kit, ms


@pytest.fixture
def k() -> Kit:
    kit = Kit()
    kit.create("q", visibility_timeout_s=10.0)
    kit.m.take_events()
    return kit


def test_a_batch_answers_each_entry_in_order_and_a_refused_one_does_not_stop_the_others(k):
    results = k.m.send_batch("q", [Outgoing(b"a"), Outgoing(b""), Outgoing(b"b", {"bad name!": "x"}),
                                   Outgoing(b"c", {"kind": "x"}, 5.0)], 0.0, ms(0.0))
    assert [type(r) for r in results] == [tuple, InvalidParameterValueError, InvalidParameterValueError, tuple]
    assert "body must not be empty" in str(results[1]) and "attribute name" in str(results[2])
    assert k.bodies("q", 0.0) == [b"a"]
    assert k.bodies("q", 5.0) == [b"c"]  # its own delay
    assert [e[0] for e in k.m.take_events()] == ["send", "send", "recv", "recv"]


def test_stop_at_error_looks_at_nothing_after_the_first_refused_entry(k):
    results = k.m.send_batch("q", [Outgoing(b"a"), Outgoing(b""), Outgoing(b"b")], 0.0, ms(0.0), stop_at_error=True)
    assert len(results) == 2 and isinstance(results[1], InvalidParameterValueError)
    assert k.bodies("q", 0.0) == [b"a"]


def test_a_batch_to_a_missing_queue_is_refused_whole(k):
    with pytest.raises(UnknownQueueError):
        k.m.send_batch("nope", [Outgoing(b"a")], 0.0, ms(0.0))
    assert k.m.take_events() == []


def test_a_full_queue_refuses_the_rest_of_a_batch():
    woken: list[str] = []
    m = QueueManager(woken.append, messages_max=3)
    kit = Kit()
    kit.m = m
    kit.create("q")
    results = m.send_batch("q", [Outgoing(b"%d" % i) for i in range(5)], 0.0, ms(0.0))
    assert [type(r) for r in results] == [tuple, tuple, tuple, QueueFullError, QueueFullError]
    assert woken == ["q"]  # one wake for the batch
    assert kit.bodies("q", 0.0) == [b"0", b"1", b"2"]


def test_a_fifo_duplicate_inside_one_batch_is_answered_with_the_first(k):
    k.create("f.fifo")
    results = k.m.send_batch("f.fifo", [Outgoing(b"a", None, None, "g", "d1"), Outgoing(b"b", None, None, "g", "d1"),
                                        Outgoing(b"c", None, None, "g", "d2")], 0.0, ms(0.0))
    assert results[0] == results[1] and results[0][1] == 1 and results[2][1] == 2
    assert k.bodies("f.fifo", 0.0) == [b"a", b"c"]


def test_a_batchs_fan_out_marks_are_the_highest_offset_per_subscription_and_partition():
    k = Kit()
    k.create("q")
    entries = [Outgoing(b"x", None, None, None, None, f"id-{o}", ("s1", p, o)) for p, o in
               ((0, 4), (0, 2), (1, 7), (0, 9), (1, 3))]
    k.m.send_batch("q", entries, 0.0, ms(0.0))
    assert (k.m.origin_next("s1", 0), k.m.origin_next("s1", 1), k.m.origin_next("s2", 0)) == (10, 8, 0)
    replayed = QueueManager()  # the journal's replay of the same events: the same marks
    for event in k.m.take_events():
        replayed.apply(event, 0.0)
    assert replayed.origins == k.m.origins == {"s1": {0: 10, 1: 8}}


def test_receive_order_is_seq_order_across_sent_visible_delayed_and_visible_again(k):
    k.send("q", b"1", 0.0)
    k.send("q", b"2", 0.0, delay_s=1.0)
    k.send("q", b"3", 0.0)
    [first] = k.receive("q", 0.0)  # 1, in flight until 10
    k.send("q", b"4", 2.0)
    assert k.bodies("q", 2.0, 1) == [b"2"]  # visible since 1.0, sent before 3
    k.m.change_visibility("q", first.receipt_handle, 0.0, 3.0)
    assert k.bodies("q", 3.0) == [b"1", b"3", b"4"]


def test_a_message_received_out_of_order_is_not_delivered_until_its_timeout_ends(k):
    seqs = [k.send("q", b"%d" % i, 0.0) for i in range(4)]
    q = k.m.queues["q"]
    mid_seq = next(seq for seq, m in q.messages.items() if m.body == b"2")
    q.apply_receive(mid_seq, 1, 10.0, 0.0, ms(0.0), 0.0)  # as a checkpoint's load restates an in-flight one
    assert len(seqs) == 4 and k.counts("q", 0.0) == (3, 1, 0)
    assert k.bodies("q", 0.0, 2, visibility_timeout_s=100.0) == [b"0", b"1"]
    assert k.bodies("q", 0.0, visibility_timeout_s=100.0) == [b"3"]
    assert k.bodies("q", 10.0, visibility_timeout_s=100.0) == [b"2"]
    assert k.bodies("q", 10.0) == []


def test_a_dead_letter_expires_by_its_first_enqueue_time_among_newer_messages():
    k = Kit()
    k.create("dlq", retention_s=60.0)
    k.create("src", dead_letter_queue="dlq", max_receive_count=1, visibility_timeout_s=1.0)
    k.send("dlq", b"before", 30.0)
    k.send("src", b"dead", 0.0)
    assert k.bodies("src", 0.0) == [b"dead"]
    assert k.bodies("src", 35.0) == []  # its second receive moves it, with its enqueue time 0.0
    k.send("dlq", b"after", 35.0)
    assert k.counts("dlq", 59.9) == (3, 0, 0)
    assert k.counts("dlq", 60.0) == (2, 0, 0)  # 0.0 + 60 s: the dead letter
    assert k.bodies("dlq", 60.0) == [b"before", b"after"]
    assert k.counts("dlq", 95.0) == (0, 0, 0)  # received, in flight, then past retention: gone too


def test_rows_of_deleted_messages_are_dropped_so_they_stay_bounded(k):
    for round_ in range(30):
        now = float(round_)
        k.m.send_batch("q", [Outgoing(b"x")] * 100, now, ms(now))
        for d in k.receive("q", now, 100):
            k.m.delete_message("q", d.receipt_handle, now)
        q = k.m.queues["q"]
        assert len(q._expiring) <= 2 * len(q.messages) + 1024 and len(q._fresh) <= 2 * q.counts[1] + 1024
    assert k.counts("q", 30.0) == (0, 0, 0)
