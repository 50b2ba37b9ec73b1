# The sans-IO accumulator: partition choice, batching by size and linger (a lone record goes at once, records sent
# while a batch is in flight gather until its answer or linger), ordering, handles. Literal times.
from __future__ import annotations

import threading

import pytest

from millpond.broker.wire.batch import check_batch, decode_records
from millpond.broker.wire.errors import RecordTooLargeError, UnknownTopicOrPartitionError
from millpond.broker.wire.partitioner import partition_for_key
from millpond.client._accumulator import Accumulator
from millpond.client.sync import SyncRecordHandle


class Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


def make(batch_bytes=10_000, linger_s=0.005, batch_bytes_max=1 << 20, counts=None):
    clock = Clock()
    wakes = []
    acc = Accumulator(batch_bytes=batch_bytes, batch_bytes_max=batch_bytes_max, linger_s=linger_s, now=clock,
                      event_factory=threading.Event, on_wake=lambda: wakes.append(1), handle_cls=SyncRecordHandle)
    acc.counts.update(counts or {"t": 4})
    return acc, clock, wakes


def test_keyed_records_go_where_partition_for_key_says():
    acc, clock, _ = make()
    for i in range(200):
        key = b"user-%d" % i
        h = acc.append("t", b"v", key)
        assert h._batch.partition == partition_for_key(key, 4)


def test_explicit_partition_wins_and_is_checked():
    acc, _, _ = make()
    assert acc.append("t", b"v", b"k", partition=3)._batch.partition == 3
    with pytest.raises(UnknownTopicOrPartitionError):
        acc.append("t", b"v", partition=4)
    with pytest.raises(ValueError):
        acc.append("t", b"v", partition=-1)


def test_values_and_keys_must_be_bytes():
    acc, _, _ = make()
    with pytest.raises(TypeError, match="value must be bytes, got str"):
        acc.append("t", "text")
    with pytest.raises(TypeError, match="key must be bytes"):
        acc.append("t", b"v", 42)
    assert acc.append("t", bytearray(b"ok"))._batch.rows[-1][3] == b"ok"


def test_record_larger_than_batch_bytes_max_raises_from_send():
    acc, _, _ = make(batch_bytes_max=2000)
    with pytest.raises(RecordTooLargeError):
        acc.append("t", b"x" * 2000)
    h = acc.append("t", b"x" * 1000)  # well under the maximum: buffered, in a batch of its own
    assert [row[3] for row in h._batch.rows] == [b"x" * 1000] and acc.records_buffered == 1


def test_sticky_partition_holds_within_a_batch_and_moves_per_batch():
    acc, clock, _ = make(batch_bytes=1000, counts={"t": 8})
    parts = [acc.append("t", b"x" * 100)._batch.partition for _ in range(60)]
    runs = [parts[0]]
    for p in parts[1:]:
        if p != runs[-1]:
            runs.append(p)
    assert len(runs) >= 5  # 60 x ~130 bytes in 1000-byte batches: a new sticky partition per batch
    assert all(a != b for a, b in zip(runs, runs[1:]))
    for b in acc.pending_batches():
        assert b.size <= 1000 and check_batch(b.encode(), 1000).record_count == len(b.rows)


def test_linger_and_size_decide_readiness():
    acc, clock, _ = make(batch_bytes=1000, linger_s=0.005)
    acc.append("t", b"busy", partition=3)  # the producer is busy (partition 3 in flight): no batch goes at once
    [busy], _ = acc.ready(clock.t)
    acc.append("t", b"a", partition=0)
    ready, deadline = acc.ready(clock.t)
    assert ready == [] and deadline == pytest.approx(100.005)
    clock.t = 100.005
    ready, _ = acc.ready(clock.t)
    assert [(b.partition, len(b.rows)) for b in ready] == [(0, 1)]
    for _ in range(20):  # ~50 bytes each: fills a batch on partition 1
        acc.append("t", b"x" * 20, partition=1)
    ready, _ = acc.ready(clock.t)  # partition 0 in flight, the full batch of partition 1 goes at once
    assert [b.partition for b in ready] == [1]


def test_one_batch_in_flight_per_partition_and_retry_keeps_order():
    acc, clock, _ = make(batch_bytes=200, linger_s=0)
    for i in range(10):
        acc.append("t", b"%03d" % i + b"x" * 50, partition=0)
    [first], _ = acc.ready(clock.t)
    assert acc.ready(clock.t)[0] == []  # second batch waits for the first
    acc.retry_later(first, clock.t + 1)
    assert acc.ready(clock.t)[0] == []  # nothing overtakes the batch being retried
    clock.t += 1
    [again], _ = acc.ready(clock.t)
    assert again is first and first.attempts == 2
    acc.complete(first, 0)
    [second], _ = acc.ready(clock.t)
    assert second.rows[0][3].startswith(b"%03d" % len(first.rows))


def test_batch_encodes_rows_that_decode_back_with_timestamps_and_headers():
    acc, clock, _ = make()
    h1 = acc.append("t", b"v1", b"k1", {"h": b"x"}, 2, 1000)
    h2 = acc.append("t", b"v2", None, None, 2, 1007)
    b = h1._batch
    blob = b.encode()
    check_batch(blob, 1 << 20)
    recs = decode_records(blob, "t", 2)
    assert [(r.offset, r.timestamp_ms, r.key, r.value, r.headers) for r in recs] == [
        (0, 1000, b"k1", b"v1", {"h": b"x"}), (1, 1007, None, b"v2", None)]
    acc.ready(clock.t + 1)
    acc.complete(b, 500)
    assert h2.done() and h2._outcome().offset == 501 and h2._outcome().timestamp_ms == 1007


def test_unknown_topic_records_park_then_route_in_order():
    acc, clock, wakes = make(counts={})
    handles = [acc.append("new", b"%d" % i, b"k%d" % (i % 3)) for i in range(9)]
    assert acc.topics_awaiting_metadata() == ["new"] and wakes
    acc.set_partition_count("new", 2)
    assert acc.topics_awaiting_metadata() == []
    for i, h in enumerate(handles):
        b = h._follow()
        assert b.partition == partition_for_key(b"k%d" % (i % 3), 2)
        assert b.rows[h._index][3] == b"%d" % i


def test_failed_topic_fails_parked_handles():
    acc, _, _ = make(counts={})
    h = acc.append("missing", b"v")
    acc.fail_topic("missing", UnknownTopicOrPartitionError("nope"))
    assert h.done()
    with pytest.raises(UnknownTopicOrPartitionError):
        h._outcome()
    assert acc.records_buffered == 0


def test_flush_makes_everything_ready_and_lists_events():
    acc, clock, _ = make(linger_s=60)
    acc.append("t", b"a", partition=0)
    acc.append("t", b"b", partition=1)
    events, parked = acc.flush()
    assert len(events) == 2 and not parked
    ready, _ = acc.ready(clock.t)
    assert sorted(b.partition for b in ready) == [0, 1]


def pipelined(batch_bytes=1_020):  # 7 records of 100 B (61 + 7 x 136 estimated bytes)
    clock = Clock()
    acc = Accumulator(batch_bytes=batch_bytes, batch_bytes_max=1 << 20, linger_s=0.005, now=clock,
                      event_factory=threading.Event, on_wake=lambda: None, max_in_flight=5)
    acc.counts.update({"t": 1})
    acc.producer_id = 42
    return acc, clock


def test_full_batches_pipeline_and_a_partial_one_waits_for_the_answer_in_flight():
    acc, clock = pipelined()
    for i in range(25):  # 25 records of ~136 estimated bytes: three full batches and a partial fourth
        acc.append("t", b"x" * 100, partition=0)
    sent, deadline = acc.ready(clock.t)
    assert [len(b.rows) for b in sent] == [7, 7, 7]  # the full ones go together; the partial one keeps gathering
    assert [b.base_seq for b in sent] == [0, 7, 14] and deadline == pytest.approx(100.005)
    acc.complete(sent[0], 0)
    acc.complete(sent[1], 7)
    acc.complete(sent[2], 14)
    acc.append("t", b"y" * 10, partition=0)
    assert acc.ready(clock.t)[0] == []  # nothing in flight, but opened while the producer was busy: it lingers
    clock.t += 0.005
    sent, _ = acc.ready(clock.t)
    assert [(len(b.rows), b.base_seq) for b in sent] == [(5, 21)]  # nothing in flight: lingered long enough


def test_a_lost_batch_starts_a_new_epoch_and_the_rest_follow_one_by_one():
    acc, clock = pipelined()
    for i in range(22):  # three full batches of 7 and one record in a fourth
        acc.append("t", b"x" * 100, partition=0)
    sent, _ = acc.ready(clock.t)
    assert [(b.base_seq, b.epoch) for b in sent] == [(0, 0), (7, 0), (14, 0)]
    acc.fail(sent[0], RuntimeError("refused for good"))
    acc.retry_later(sent[1], clock.t)  # out of order: its predecessor never landed
    acc.retry_later(sent[2], clock.t)
    again, _ = acc.ready(clock.t)
    assert [(b.base_seq, b.epoch) for b in again] == [(0, 1)]  # renumbered under epoch 1, alone
    acc.complete(again[0], 0)
    again, _ = acc.ready(clock.t)
    assert [(b.base_seq, b.epoch) for b in again] == [(7, 1)]
    blob = again[0].encode(acc.producer_id)
    h = check_batch(blob, 1 << 20)
    assert (h.producer_id, h.producer_epoch, h.base_sequence, h.record_count) == (42, 1, 7, 7)


# ---- when a partial batch goes: at once when the producer is idle, else with the answer in flight or at linger ----

def test_an_idle_partitions_first_record_is_ready_at_once():
    acc, clock, wakes = make(linger_s=60)
    acc.append("t", b"a", partition=0)
    assert wakes  # the sender is told
    ready, deadline = acc.ready(clock.t)
    assert [(b.partition, len(b.rows)) for b in ready] == [(0, 1)] and deadline is None


def test_a_batch_opened_before_the_senders_planned_turn_wakes_it_and_a_later_one_does_not():
    # With many partitions a batch opens at almost every send: the sender is woken only when the new batch is due
    # before the turn it planned (or it planned none), never to learn a later deadline it will reach anyway.
    acc, clock, wakes = make(linger_s=0.005, counts={"t": 9})
    acc.append("t", b"a", partition=0)
    acc.ready(clock.t)  # partition 0 in flight
    acc.append("t", b"b", partition=1)  # not eager: the producer has something pending
    assert wakes and acc.ready(clock.t) == ([], clock.t + 0.005)  # planned: partition 1 at its linger
    del wakes[:]
    clock.t += 0.001
    for p in range(2, 8):
        acc.append("t", b"c", partition=p)  # due later than the planned turn
    clock.t += 0.002
    acc.append("t", b"c", partition=8)
    assert wakes == []
    # The planned turn: partition 1 goes, and the batches at least half their linger old go with it (Kafka's
    # drain); partition 8, opened 2 ms ago, is planned for its own linger.
    clock.t += 0.002
    ready, deadline = acc.ready(clock.t)
    assert [b.partition for b in ready] == [1, 2, 3, 4, 5, 6, 7] and deadline == pytest.approx(100.008)
    clock.t = deadline
    assert [b.partition for b in acc.ready(clock.t)[0]] == [8]
    assert acc.ready(clock.t) == ([], None)  # nothing planned: the next batch opened wakes the sender
    acc.append("t", b"d", partition=1)
    assert wakes


def test_records_sent_meanwhile_join_the_batch_until_the_sender_takes_it():
    # "At once" is the sender's next turn: a loop that sends without yielding fills the first batch, which then
    # goes as one (not one record alone, with every later record in the answers' shadow).
    acc, clock, _ = make(linger_s=60)
    handles = [acc.append("t", b"%d" % i, partition=0) for i in range(100)]
    [b], _ = acc.ready(clock.t)
    assert len(b.rows) == 100 and all(h._batch is b for h in handles)


def test_records_sent_while_a_batch_is_in_flight_go_together_when_it_is_answered():
    acc, clock, wakes = make(linger_s=0.005)
    acc.append("t", b"first", partition=0)
    [first], _ = acc.ready(clock.t)
    handles = [acc.append("t", b"%d" % i, partition=0) for i in range(5)]
    assert acc.ready(clock.t) == ([], None)  # gathering behind the batch in flight (its answer wakes the sender)
    del wakes[:]
    with pytest.raises(TimeoutError):
        handles[3].result(timeout=0)  # a caller waits for one of them (as `await handle` does)
    assert wakes and handles[0]._batch.eager
    assert acc.ready(clock.t)[0] == []  # still in flight
    assert acc.complete(first, 0)  # the answer: the sender has something to send
    [second], deadline = acc.ready(clock.t)  # before linger: it goes with the answer, all five together
    assert [r[3] for r in second.rows] == [b"%d" % i for i in range(5)] and deadline is None
    acc.complete(second, 1)
    assert [h.result(timeout=0).offset for h in handles] == [1, 2, 3, 4, 5]


def test_an_answer_does_not_cut_short_a_batch_nobody_awaits():
    # Sending every partial batch as soon as the answer in flight lands (linger 0, plain Nagle) shrinks a busy
    # producer's batches to one round trip's worth; unawaited, the batch waits for linger or to fill.
    acc, clock = pipelined()
    acc.append("t", b"first")
    [first], _ = acc.ready(clock.t)
    for _ in range(3):
        acc.append("t", b"x")
    assert acc.complete(first, 0)
    assert acc.ready(clock.t) == ([], pytest.approx(100.005))
    clock.t = 100.005
    [second], _ = acc.ready(clock.t)
    assert len(second.rows) == 3


def test_linger_bounds_the_wait_behind_a_batch_in_flight():
    acc, clock = pipelined()  # idempotent: up to 5 batches in flight
    acc.append("t", b"a")
    [first], _ = acc.ready(clock.t)
    acc.append("t", b"b")
    ready, deadline = acc.ready(clock.t)
    assert ready == [] and deadline == pytest.approx(100.005)
    clock.t = deadline
    [second], _ = acc.ready(clock.t)  # the first is still in flight: the second goes beside it
    assert (second.base_seq, acc._in_flight[("t", 0)]) == (1, 2)


def test_with_no_linger_records_behind_a_batch_in_flight_go_together_when_it_is_answered():
    # linger_s=0: no clock waits at all; the answer in flight is the batching window (DESIGN section 3)
    clock = Clock()
    acc = Accumulator(batch_bytes=1 << 16, batch_bytes_max=1 << 20, linger_s=0.0, now=clock,
                      event_factory=threading.Event, on_wake=lambda: None, max_in_flight=5)
    acc.counts.update({"t": 1})
    acc.producer_id = 42
    acc.append("t", b"a", partition=0)
    [first], _ = acc.ready(clock.t)  # idle: at once
    for v in (b"b", b"c", b"d"):
        acc.append("t", v, partition=0)
    assert acc.ready(clock.t) == ([], None)  # not one request each: they wait for the answer, not a timer
    assert acc.complete(first, 0)  # the answer wakes the sender
    [second], _ = acc.ready(clock.t)
    assert [r[3] for r in second.rows] == [b"b", b"c", b"d"] and second.base_seq == 1


def test_without_idempotence_linger_cannot_pass_the_batch_in_flight():
    acc, clock, _ = make(linger_s=0.005)  # max_in_flight 1
    acc.append("t", b"a", partition=0)
    [first], _ = acc.ready(clock.t)
    acc.append("t", b"b", partition=0)
    clock.t += 1
    assert acc.ready(clock.t) == ([], None)  # past linger, but one batch per partition: the answer wakes us
    acc.complete(first, 0)
    assert len(acc.ready(clock.t)[0]) == 1


def test_a_full_batch_still_pipelines_behind_one_in_flight():
    acc, clock = pipelined()
    acc.append("t", b"a")
    [first], _ = acc.ready(clock.t)
    for _ in range(8):  # seven fill a batch, the eighth opens the next
        acc.append("t", b"x" * 100)
    sent, deadline = acc.ready(clock.t)
    assert [(len(b.rows), b.base_seq) for b in sent] == [(7, 1)] and deadline == pytest.approx(100.005)


def test_a_batch_on_an_idle_partition_waits_while_the_producer_is_busy():
    # Keyless records move to another sticky partition at each send; were "idle" per partition, each batch would
    # land on an idle partition and go at once, as small as the gap between two sender turns.
    acc, clock, _ = make(counts={"t": 4})
    acc.append("t", b"a")
    [first], _ = acc.ready(clock.t)
    h = acc.append("t", b"b")
    assert h._batch.partition != first.partition
    assert acc.ready(clock.t) == ([], pytest.approx(100.005))
    acc.complete(first, 0)
    clock.t = 100.005
    [second], _ = acc.ready(clock.t)
    acc.complete(second, 0)
    acc.append("t", b"c")  # nothing pending any more: at once again
    assert len(acc.ready(clock.t)[0]) == 1


def test_flush_still_sends_a_partial_batch_behind_one_in_flight():
    acc, clock = pipelined()
    acc.append("t", b"a")
    acc.ready(clock.t)
    acc.append("t", b"b")
    acc.flush()
    assert [len(b.rows) for b in acc.ready(clock.t)[0]] == [1]


def test_after_abort_the_producer_is_idle_again():
    acc, clock, _ = make()
    acc.append("t", b"a", partition=0)
    acc.append("t", b"b", partition=1)
    acc.abort(RuntimeError("closing"))
    assert acc.append("t", b"c", partition=2)._batch.eager


def test_a_due_batch_drains_every_partitions_batch_half_its_linger_old_into_one_turn():
    # Kafka's drain: once one batch is due, the others go with it, so 64 partitions' batches share one request per
    # linger instead of each lingering out at its own moment. Only batches at least half their linger old: a batch
    # never goes out smaller than half a linger's worth of records just because another is due.
    acc, clock, _ = make(linger_s=0.010, counts={"t": 64})
    acc.append("t", b"x", partition=63)
    acc.ready(clock.t)  # something in flight: what follows is not eager
    for p in range(63):
        clock.t = 100.0 + p * 0.0001  # partition p opens at 100 s + p * 0.1 ms
        acc.append("t", b"a", partition=p)
    assert acc.ready(clock.t) == ([], pytest.approx(100.010))  # nothing due: nothing goes early
    clock.t = 100.01005
    ready, deadline = acc.ready(clock.t)
    # due: partition 0; at least 5 ms old: the partitions opened by 100.00505, i.e. 0-50
    assert [b.partition for b in ready] == list(range(51))
    assert all(len(b.rows) == 1 for b in ready) and deadline == pytest.approx(100.0151)
    assert acc.ready(clock.t) == ([], pytest.approx(100.0151))


def test_the_drain_keeps_max_in_flight_and_the_order_of_a_partitions_batches():
    acc, clock, _ = make(batch_bytes=200, linger_s=0.010, counts={"t": 4})
    acc.max_in_flight = 1
    acc.append("t", b"x", partition=1)
    first = acc.ready(clock.t)[0]
    assert [b.partition for b in first] == [1]  # partition 1 has its one batch in flight
    acc.append("t", b"y", partition=1)
    for _ in range(3):
        acc.append("t", b"v" * 100, partition=0)  # partition 0: a record per batch, two full and an open one
    acc.append("t", b"z", partition=2)
    clock.t += 0.006
    ready, _ = acc.ready(clock.t)
    # partition 0's full batch is due; its open one cannot follow (one in flight at most), partition 1 waits for
    # its answer, partition 2 (6 ms old) goes with the drain
    assert [(b.partition, len(b.rows)) for b in ready] == [(0, 1), (2, 1)]
    acc.complete(first[0], 0)
    acc.complete(ready[0], 0)
    again, _ = acc.ready(clock.t)  # partition 0's next full batch is due, and partition 1's goes with it
    assert [(b.partition, [r[3] for r in b.rows]) for b in again] == [(0, [b"v" * 100]), (1, [b"y"])]
    assert again[0].seq > ready[0].seq  # partition 0's batches in the order they opened


def test_with_linger_0_the_drain_leaves_a_batch_behind_the_answer_in_flight():
    acc, clock, _ = make(linger_s=0.0, counts={"t": 4})
    acc.append("t", b"a", partition=0)
    acc.append("t", b"b", partition=1)
    assert [b.partition for b in acc.ready(clock.t)[0]] == [0, 1]
    acc.append("t", b"c", partition=0)  # gathers behind partition 0's answer
    acc.append("t", b"d", partition=2)  # nothing of partition 2 in flight: goes now
    assert [b.partition for b in acc.ready(clock.t)[0]] == [2]


def test_complete_says_whether_the_partition_has_a_batch_left_to_send_whatever_the_queue_holds():
    # Unsent batches are at the tail, except a batch that failed while later ones were in flight: it waits at the
    # head for its resend, behind nothing, and the answer of a later batch must still wake the sender for it.
    acc, clock = pipelined()
    for _ in range(21):  # three batches of 7 (the last one sealed by the flush)
        acc.append("t", b"x" * 100, partition=0)
    acc.flush()
    sent, _ = acc.ready(clock.t)
    assert len(sent) == 3
    assert not acc.complete(sent[0], 0)  # the others are in flight: nothing to send
    acc.append("t", b"y", partition=0)  # an open batch at the tail
    assert acc.complete(sent[1], 7)  # the tail is unsent
    acc, clock = pipelined()
    for _ in range(21):
        acc.append("t", b"x" * 100, partition=0)
    acc.flush()
    sent, _ = acc.ready(clock.t)
    acc.retry_later(sent[1], clock.t)  # refused (out of order, say): unsent again, in its place before sent[2]
    assert not sent[1].sent and sent[2].sent
    assert acc.complete(sent[0], 0)  # the queue's tail is in flight, its failed head is not: wake the sender
    assert acc.ready(clock.t)[0] == []  # (it goes again alone, once nothing of its partition is in flight)
    acc.retry_later(sent[2], clock.t)  # refused too: its predecessor had not landed
    [again], _ = acc.ready(clock.t)
    assert again is sent[1]
    assert acc.complete(again, 7)  # sent[2] waits to go again
    [again], _ = acc.ready(clock.t)
    assert again is sent[2]
    assert not acc.complete(again, 14)  # and now the partition is empty
