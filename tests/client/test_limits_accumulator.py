# The accumulator's side of limit policies, sans-IO with literal times: splitting a refused batch into pieces that
# fit (records or bytes), in order, with handles following their records; later batches built to fit; a single
# record too large failing alone; the split batch settling only once every piece has.
from __future__ import annotations

import threading

import pytest

from millpond.broker.wire.batch import check_batch, decode_records
from millpond.broker.wire.errors import CostExceedsLimitError
from millpond.client._accumulator import Accumulator


def make(batch_bytes=1 << 20):
    acc = Accumulator(batch_bytes=batch_bytes, batch_bytes_max=1 << 20, linger_s=0.005, now=lambda: 100.0,
                      event_factory=threading.Event, on_wake=lambda: None)
    acc.counts["t"] = 1
    return acc


def refused(max_cost, unit="records"):
    return CostExceedsLimitError("too big", policy="p", unit=unit, max_cost=max_cost)


def outcome(handle):
    """What ``await handle`` gives once settled (it follows a split record into its piece)."""
    assert handle.done()
    handle._follow()
    return handle._outcome()


def send_all(acc, now=200.0):
    """Play a broker that accepts every batch: offsets in order. Returns the blobs' record values per batch."""
    sent, offset = [], 0
    while True:
        batches, _ = acc.ready(now)
        if not batches:
            return sent
        for b in batches:
            blob = b.encode()
            check_batch(blob, 1 << 20)
            sent.append([r.value for r in decode_records(blob, "t", 0)])
            acc.complete(b, offset)
            offset += len(b.rows)


def test_a_refused_batch_is_split_by_records_in_order_and_handles_follow():
    acc = make()
    handles = [acc.append("t", b"%d" % i, partition=0) for i in range(25)]
    [b], _ = acc.ready(200.0)
    assert acc.split(b, "records", 10, refused(10)) == 0
    assert not b.event.is_set() and acc.records_buffered == 25
    sent = send_all(acc)
    assert sent == [[b"%d" % i for i in range(j, min(j + 10, 25))] for j in (0, 10, 20)]
    assert b.event.is_set() and acc.records_buffered == 0
    assert [outcome(h).offset for h in handles] == list(range(25))


def test_later_batches_of_the_topic_are_built_to_fit():
    acc = make()
    acc.append("t", b"a", partition=0)
    [b], _ = acc.ready(200.0)
    acc.split(b, "records", 4, refused(4))  # a batch of one record cannot be split: it fails
    assert b.event.is_set() and isinstance(b.error, CostExceedsLimitError)
    for i in range(10):
        acc.append("t", b"%d" % i, partition=0)
    assert [len(x) for x in send_all(acc)] == [4, 4, 2]


def test_a_bytes_limit_splits_by_size_and_a_record_alone_too_large_fails_alone():
    acc = make()
    handles = [acc.append("t", b"x" * 100, partition=0) for _ in range(10)]
    big = acc.append("t", b"y" * 5000, partition=0)
    tail = acc.append("t", b"z", partition=0)
    [b], _ = acc.ready(200.0)
    acc.split(b, "bytes", 500, refused(500, "bytes"))
    sizes, offset, failed = [], 0, 0
    while True:
        batches, _ = acc.ready(200.0)
        if not batches:
            break
        for piece in batches:
            blob = piece.encode()
            if len(blob) > 500:
                failed += acc.split(piece, "bytes", 500, refused(500, "bytes"))
                continue
            sizes.append(len(blob))
            acc.complete(piece, offset)
            offset += len(piece.rows)
    assert failed == 1 and all(s <= 500 for s in sizes)
    assert [outcome(h).offset for h in handles] == list(range(10))
    with pytest.raises(CostExceedsLimitError):
        outcome(big)
    assert outcome(tail).offset == 10
    assert b.event.is_set() and acc.records_buffered == 0


def test_a_piece_split_again_settles_its_parents_last():
    acc = make()
    for i in range(8):
        acc.append("t", b"%d" % i, partition=0)
    [b], _ = acc.ready(200.0)
    acc.split(b, "records", 4, refused(4))
    [first], _ = acc.ready(200.0)
    acc.split(first, "records", 2, refused(2))
    # the second piece was built before the smaller maximum was known: a broker would refuse and split it too
    assert [len(x) for x in send_all(acc)] == [2, 2, 4]
    assert first.event.is_set() and b.event.is_set()


def test_flush_waits_for_every_piece_of_a_split_batch():
    acc = make()
    for i in range(6):
        acc.append("t", b"%d" % i, partition=0)
    events, _ = acc.flush()
    [b], _ = acc.ready(200.0)
    acc.split(b, "records", 3, refused(3))
    [p1], _ = acc.ready(200.0)
    acc.complete(p1, 0)
    assert not any(e.is_set() for e in events)
    [p2], _ = acc.ready(200.0)
    acc.complete(p2, 3)
    assert all(e.is_set() for e in events)
