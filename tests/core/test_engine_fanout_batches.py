# Fan-out sends a turn's records to a queue in one batch; a record the queue refuses part-way is settled before
# anything after it is sent: into the dead-letter queue, or, when that is full, the subscription pauses at it and
# nothing after it is stored (so the fan-out marks never pass a record that was neither delivered nor
# dead-lettered); a record no message can be made of (raw, without a value) likewise. Every record ends once in the
# queue or the dead-letter queue, in offset order.
from __future__ import annotations

import json

from millpond.broker.core.fanout.api import DescribeSubscription, Subscribe
from millpond.broker.core.log.api import CreateTopic, Produce
from millpond.broker.core.queues.api import CreateQueue, DeleteMessage, ReceiveMessages
from millpond.broker.wire.batch import encode_batch

from enginekit import T0_MS, answer, ctx, make_engine

TOO_MANY = [(f"h{i}", b"v") for i in range(11)]  # more attributes than a queue message may have


def produce(engine, *records):
    """records: (value, headers) pairs."""
    answer(engine, Produce("t", 0, encode_batch([(T0_MS, None, v, h or None) for v, h in records])))


def run(engine, now):
    engine.take_woken()
    for _ in range(1000):
        if engine.next_deadline() > now:
            return
        engine.tick(ctx(now))
    raise AssertionError("fan-out never settled")


def take(engine, queue, now):
    got = answer(engine, ReceiveMessages(queue, max_messages=100, wait_s=0.0, visibility_timeout_s=3600.0), now)
    for m in got.messages:
        answer(engine, DeleteMessage(queue, m.receipt_handle), now)
    return list(got.messages)


def test_a_refused_record_part_way_waits_for_room_in_a_full_dead_letter_queue_and_nothing_passes_it(tmp_path):
    engine = make_engine(tmp_path, fsync="never", queue_messages_max=2)
    answer(engine, CreateTopic("t", 1))
    answer(engine, CreateQueue("a"))
    answer(engine, CreateQueue("dlq"))
    s = answer(engine, Subscribe("t", "a", raw=True, dead_letter_queue="dlq"))
    produce(engine, (b"0", None), (b"bad1", TOO_MANY), (b"bad2", TOO_MANY), (b"bad3", TOO_MANY), (b"4", None),
            (b"", None), (b"6", None))
    run(engine, 1.0)
    # 0 delivered; bad1, bad2 dead-lettered; bad3 finds the dead-letter queue full: paused there, 4 not sent
    assert [m.body for m in take(engine, "a", 1.0)] == [b"0"]
    assert [json.loads(m.body)["Message"] for m in take(engine, "dlq", 1.0)] == ["bad1", "bad2"]
    d = answer(engine, DescribeSubscription(s.id), 1.0)
    assert (d.delivered, d.dead_lettered, d.paused, d.partitions[0].cursor) == (1, 2, True, 3)
    later = engine.next_deadline()
    run(engine, later)
    # bad3 and the empty value (no raw message without a body) to the dead-letter queue, 4 and 6 to the queue
    assert [m.body for m in take(engine, "a", later)] == [b"4", b"6"]
    assert [json.loads(m.body)["Offset"] for m in take(engine, "dlq", later)] == [3, 5]
    d = answer(engine, DescribeSubscription(s.id), later)
    assert (d.delivered, d.failed, d.dead_lettered, d.paused, d.lag) == (3, 4, 4, False, 0)
    run(engine, later + 10.0)
    assert take(engine, "a", later + 10.0) == [] and take(engine, "dlq", later + 10.0) == []  # nothing twice
    engine.close()
