# The sans-IO accumulator: partition choice, batching by size and linger, ordering, handles. Literal times.
from __future__ import annotations

import threading

import pytest

from millpond.broker.wire.batch import check_batch, decode_records
from millpond.broker.wire.errors import RecordTooLargeError, UnknownTopicOrPartitionError
from millpond.broker.wire.partitioner import partition_for_key
from millpond.client._accumulator import Accumulator


class Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


def make(batch_bytes=10_000, linger_s=0.005, batch_bytes_max=1 << 20, counts=None):
    clock = Clock()
    wakes = []
    acc = Accumulator(batch_bytes=batch_bytes, batch_bytes_max=batch_bytes_max, linger_s=linger_s, now=clock,
                      event_factory=threading.Event, on_wake=lambda: wakes.append(1))
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


def pipelined(batch_bytes=1_000):
    clock = Clock()
    acc = Accumulator(batch_bytes=batch_bytes, batch_bytes_max=1 << 20, linger_s=0.005, now=clock,
                      event_factory=threading.Event, on_wake=lambda: None, max_in_flight=5)
    acc.counts.update({"t": 1})
    acc.producer_id = 42
    return acc, clock


def test_full_batches_pipeline_and_a_partial_one_waits_for_the_answer_in_flight():
    acc, clock = pipelined()
    for i in range(25):  # 25 records of ~130 estimated bytes: three full batches and a partial fourth
        acc.append("t", b"x" * 100, partition=0)
    clock.t += 0.01  # past linger
    sent, _ = acc.ready(clock.t)
    assert [len(b.rows) for b in sent] == [7, 7, 7]  # the full ones go together; the partial one keeps gathering
    assert [b.base_seq for b in sent] == [0, 7, 14]
    acc.complete(sent[0], 0)
    acc.complete(sent[1], 7)
    acc.complete(sent[2], 14)
    acc.append("t", b"y" * 10, partition=0)
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
