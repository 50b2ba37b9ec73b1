# Fan-out through the engine with literal times and no Trio: records reach subscribed queues once each after they
# are durable, filtered, in order, paused by a full queue, stopped by unsubscribe; cursors and the queues' fan-out
# marks survive restarts at every point between a queue send and its cursor save; the bounded turn.
from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from millpond.broker.core.fanout.api import (
    DescribeSubscription,
    ListSubscriptions,
    Subscribe,
    SubscriptionInfo,
    Unsubscribe,
)
from millpond.broker.core.fanout.journal import SUBSCRIPTIONS_TOPIC
from millpond.broker.core.fanout.delivery import NO_KEY_GROUP, delivery_message_id, record_message_id
from millpond.broker.core.log.api import CreateTopic, DeleteTopic, Produce
from millpond.broker.core.outcomes import Answer, Wait
from millpond.broker.core.queues.api import CreateQueue, DeleteMessage, DeleteQueue, ReceiveMessages
from millpond.broker.wire.batch import encode_batch, iter_batches
from millpond.broker.wire.errors import (
    InvalidParameterValueError,
    TooManySubscriptionsError,
    UnknownQueueError,
    UnknownSubscriptionError,
    UnknownTopicOrPartitionError,
)

from enginekit import T0_MS, answer, ctx, flush, handle, make_engine, settled


def produce(engine, topic, partition, *records, now=0.0):
    """records: (value, headers, key) tuples or plain values."""
    rows = []
    for r in records:
        value, headers, key = r if isinstance(r, tuple) else (r, None, None)
        rows.append((T0_MS + int(now * 1000), key, value, list((headers or {}).items()) or None))
    return answer(engine, Produce(topic, partition, encode_batch(rows)), now)


def run(engine, now=1.0, turns=1000):
    """Tick while the engine says work is due (as the server's timer does, having taken the keys the last engine
    call woke)."""
    engine.take_woken()
    for _ in range(turns):
        if engine.next_deadline() > now:
            return
        engine.tick(ctx(now))
    raise AssertionError("fan-out never settled")


def receive_all(engine, queue, now=1.0):
    got = answer(engine, ReceiveMessages(queue, max_messages=1000, wait_s=0.0, visibility_timeout_s=3600.0), now)
    return list(got.messages)


def bodies(engine, queue, now=1.0):
    return [json.loads(m.body) for m in receive_all(engine, queue, now)]


@pytest.fixture
def never(tmp_path):
    engine = make_engine(tmp_path, fsync="never")
    answer(engine, CreateTopic("t", 2))
    for q in ("a", "b", "c"):
        answer(engine, CreateQueue(q))
    yield engine
    engine.close()


def test_one_publish_reaches_three_queues_exactly_once_each(never):
    subs = [answer(never, Subscribe("t", q)) for q in ("a", "b", "c")]
    assert all(type(s) is SubscriptionInfo for s in subs)
    produce(never, "t", 1, (b"hello", {"kind": b"x"}, b"k1"))
    run(never)
    run(never, now=2.0)  # nothing more to do, nothing sent twice
    for s, q in zip(subs, ("a", "b", "c")):
        got = receive_all(never, q, 3.0)
        assert len(got) == 1
        env = json.loads(got[0].body)
        assert env == {"Type": "Notification", "MessageId": record_message_id("t", 1, 0), "Topic": "t",
                       "Partition": 1, "Offset": 0, "SubscriptionId": s.id, "Key": "k1", "Message": "hello",
                       "Timestamp": "2023-11-14T22:13:20.000Z",
                       "MessageAttributes": {"kind": {"Type": "String", "Value": "x"}}}
        assert got[0].message_id == delivery_message_id(s.id, "t", 1, 0)
        assert got[0].attributes == {}  # as SNS: without raw delivery the attributes live in the envelope
        d = answer(never, DescribeSubscription(s.id), 3.0)
        assert (d.delivered, d.filtered_out, d.failed, d.lag, d.lag_s) == (1, 0, 0, 0, 0.0)
        assert d.last_delivery_lag_s == 1.0  # published at 0.0 (record timestamp), in the queue at 1.0


def test_delivery_waits_for_the_records_to_be_durable(tmp_path):
    engine = make_engine(tmp_path, fsync="always")
    settled(engine, CreateTopic("t", 1))
    settled(engine, CreateQueue("a"))
    settled(engine, Subscribe("t", "a"))
    run(engine)
    handle(engine, Produce("t", 0, encode_batch([(T0_MS, None, b"v", None)])))
    engine.take_woken()
    assert engine.fanout.next_deadline() == math.inf  # not durable yet: nothing to deliver
    woken = flush(engine)
    assert ("log", "t", 0) in woken and engine.next_deadline() == -math.inf
    run(engine)
    got = handle(engine, ReceiveMessages("a", max_messages=10, wait_s=0.0), 1.0)
    flush(engine)
    assert [json.loads(m.body)["Message"] for m in got.resume(ctx(1.0), False).value.messages] == ["v"]
    engine.close()


def test_a_filtered_subscription_gets_only_matching_records(never):
    policy = json.dumps({"kind": ["order"], "amount": [{"numeric": [">", 100]}]})
    s = answer(never, Subscribe("t", "a", filter_policy=policy))
    all_ = answer(never, Subscribe("t", "b"))
    produce(never, "t", 0, (b"1", {"kind": b"order", "amount": b"150"}, None),
            (b"2", {"kind": b"order", "amount": b"50"}, None), (b"3", {"kind": b"refund", "amount": b"500"}, None),
            (b"4", None, None), (b"5", {"kind": b"order", "amount": b"101"}, None))
    run(never)
    assert [b["Message"] for b in bodies(never, "a")] == ["1", "5"]
    assert [b["Message"] for b in bodies(never, "b")] == ["1", "2", "3", "4", "5"]
    d = answer(never, DescribeSubscription(s.id))
    assert (d.delivered, d.filtered_out, d.failed) == (2, 3, 0)
    assert answer(never, DescribeSubscription(all_.id)).delivered == 5


def test_a_body_scope_policy_reads_the_json_value(never):
    policy = json.dumps({"order": {"total": [{"numeric": [">=", 10]}]}})
    answer(never, Subscribe("t", "a", filter_policy=policy, filter_policy_scope="MessageBody"))
    produce(never, "t", 0, b'{"order": {"total": 12}}', b'{"order": {"total": 9}}', b"not json")
    run(never)
    assert [b["Message"] for b in bodies(never, "a")] == ['{"order": {"total": 12}}']


@pytest.mark.parametrize("policy,pointing", [
    ('{"kind": "order"}', "kind"),
    ('{"amount": [{"numeric": [">", "x"]}]}', "amount"),
    ('{"kind": [', "JSON"),
])
def test_an_invalid_filter_policy_is_refused_at_subscribe_naming_the_bad_part(never, policy, pointing):
    with pytest.raises(InvalidParameterValueError) as e:
        answer(never, Subscribe("t", "a", filter_policy=policy))
    assert pointing in str(e.value)
    assert answer(never, ListSubscriptions("t")).subscriptions == ()


def test_raw_delivery_sends_the_value_with_headers_as_attributes(never):
    answer(never, Subscribe("t", "a", raw=True))
    produce(never, "t", 0, (b"payload", {"kind": b"x", "bin": b"\xff\x00"}, None))
    run(never)
    [m] = receive_all(never, "a")
    assert (m.body, m.attributes) == (b"payload", {"kind": "x", "bin": b"\xff\x00"})


def test_a_raw_record_the_queue_cannot_hold_goes_to_the_dead_letter_queue(never):
    answer(never, CreateQueue("dlq"))
    s = answer(never, Subscribe("t", "a", raw=True, dead_letter_queue="dlq"))
    too_many = {f"h{i}": b"v" for i in range(11)}  # SQS: at most 10 message attributes
    produce(never, "t", 0, (b"bad", too_many, None), b"good")
    run(never)
    assert [m.body for m in receive_all(never, "a")] == [b"good"]
    [dead] = bodies(never, "dlq")
    assert (dead["Message"], dead["Offset"], len(dead["MessageAttributes"])) == ("bad", 0, 11)
    d = answer(never, DescribeSubscription(s.id))
    assert (d.delivered, d.failed, d.dead_lettered) == (1, 1, 1)


def test_start_positions_end_beginning_and_timestamp(never):
    produce(never, "t", 0, b"old0", now=0.0)
    produce(never, "t", 0, b"old1", now=5.0)
    answer(never, Subscribe("t", "a"), 6.0)
    answer(never, Subscribe("t", "b", start="beginning"), 6.0)
    answer(never, Subscribe("t", "c", start=T0_MS + 5000), 6.0)
    produce(never, "t", 0, b"new", now=7.0)
    run(never, 8.0)
    assert [b["Message"] for b in bodies(never, "a", 8.0)] == ["new"]
    assert [b["Message"] for b in bodies(never, "b", 8.0)] == ["old0", "old1", "new"]
    assert [b["Message"] for b in bodies(never, "c", 8.0)] == ["old1", "new"]
    with pytest.raises(InvalidParameterValueError, match="start must be"):
        answer(never, Subscribe("t", "c", start="middle"))


def test_a_fifo_target_keeps_per_key_order_in_groups(never):
    answer(never, CreateQueue("f.fifo"))
    answer(never, Subscribe("t", "f.fifo", raw=True))
    for i in range(6):
        produce(never, "t", i % 2, (f"{i}".encode(), None, b"k%d" % (i % 3)))
    produce(never, "t", 0, b"nokey")
    run(never)
    got = []
    while True:
        msgs = receive_all(never, "f.fifo")
        if not msgs:
            break
        for m in msgs:
            got.append((m.group_id, m.body))
            answer(never, DeleteMessage("f.fifo", m.receipt_handle))
    by_group = {}
    for g, body in got:
        by_group.setdefault(g, []).append(body)
    # k0: records 0 and 3 (partitions 0 and 1: order across partitions is not promised), k1: 1 and 4, k2: 2 and 5
    assert {g: sorted(v) for g, v in by_group.items()} == {
        "k0": [b"0", b"3"], "k1": [b"1", b"4"], "k2": [b"2", b"5"], NO_KEY_GROUP: [b"nokey"]}


def test_a_fifo_target_keeps_one_partitions_order_per_key(never):
    answer(never, CreateQueue("f.fifo"))
    answer(never, Subscribe("t", "f.fifo", raw=True))
    produce(never, "t", 0, *[(f"{i}".encode(), None, b"k%d" % (i % 2)) for i in range(20)])
    run(never)
    got = {}
    while msgs := receive_all(never, "f.fifo"):
        for m in msgs:
            got.setdefault(m.group_id, []).append(int(m.body))
            answer(never, DeleteMessage("f.fifo", m.receipt_handle))
    assert got == {"k0": list(range(0, 20, 2)), "k1": list(range(1, 20, 2))}


def test_a_full_queue_pauses_the_subscription_and_it_resumes_without_loss(tmp_path):
    engine = make_engine(tmp_path, fsync="never", queue_messages_max=3)
    answer(engine, CreateTopic("t", 1))
    answer(engine, CreateQueue("a"))
    s = answer(engine, Subscribe("t", "a", raw=True))
    produce(engine, "t", 0, *[b"%d" % i for i in range(5)])
    run(engine, 1.0)
    d = answer(engine, DescribeSubscription(s.id), 1.0)
    assert (d.delivered, d.paused, d.lag, d.lag_s, d.last_delivery_lag_s) == (3, True, 2, 1.0, 1.0)
    assert [(c.partition, c.cursor, c.high_watermark, c.lag) for c in d.partitions] == [(0, 3, 5, 2)]
    retry = engine.next_deadline()
    assert 1.0 < retry <= 2.0
    first = receive_all(engine, "a", 1.5)
    assert [m.body for m in first] == [b"0", b"1", b"2"]
    for m in first:
        answer(engine, DeleteMessage("a", m.receipt_handle), 1.5)
    run(engine, retry)
    assert [m.body for m in receive_all(engine, "a", retry)] == [b"3", b"4"]
    d = answer(engine, DescribeSubscription(s.id), retry)
    assert (d.delivered, d.failed, d.paused, d.lag) == (5, 0, False, 0)
    engine.close()


def test_unsubscribe_stops_delivery(never):
    s = answer(never, Subscribe("t", "a"))
    produce(never, "t", 0, b"1")
    run(never)
    assert answer(never, Unsubscribe(s.id)) is None
    produce(never, "t", 0, b"2")
    run(never)
    assert [b["Message"] for b in bodies(never, "a")] == ["1"]
    with pytest.raises(UnknownSubscriptionError):
        answer(never, Unsubscribe(s.id))
    with pytest.raises(UnknownSubscriptionError):
        answer(never, DescribeSubscription(s.id))


def test_subscribe_is_idempotent_for_equal_settings_and_refuses_other_ones(never):
    s = answer(never, Subscribe("t", "a"))
    assert answer(never, Subscribe("t", "a")) == s
    with pytest.raises(InvalidParameterValueError, match="already subscribed"):
        answer(never, Subscribe("t", "a", raw=True))
    assert [x.id for x in answer(never, ListSubscriptions("t")).subscriptions] == [s.id]


def test_subscribe_refuses_unknown_topics_and_queues(never):
    with pytest.raises(UnknownTopicOrPartitionError):
        answer(never, Subscribe("nope", "a"))
    with pytest.raises(UnknownTopicOrPartitionError):
        answer(never, Subscribe(SUBSCRIPTIONS_TOPIC, "a"))
    with pytest.raises(UnknownQueueError):
        answer(never, Subscribe("t", "nope"))
    with pytest.raises(UnknownQueueError):
        answer(never, Subscribe("t", "a", dead_letter_queue="nope"))


def test_subscriptions_per_topic_are_bounded(never):
    never.fanout.subs.per_topic_max = 2
    answer(never, Subscribe("t", "a"))
    answer(never, Subscribe("t", "b"))
    with pytest.raises(TooManySubscriptionsError, match="topic 't' has 2 subscriptions"):
        answer(never, Subscribe("t", "c"))


def test_a_deleted_target_queue_counts_failed_and_deleting_the_topic_removes_its_subscriptions(never):
    s = answer(never, Subscribe("t", "a"))
    answer(never, DeleteQueue("a"))
    produce(never, "t", 0, b"1")
    run(never)
    assert answer(never, DescribeSubscription(s.id)).failed == 1
    answer(never, DeleteTopic("t"))
    assert answer(never, ListSubscriptions()).subscriptions == ()


def test_one_turn_looks_at_a_bounded_number_of_records_for_subscriptions(never):
    never.fanout.pump.records_per_turn = 100
    answer(never, Subscribe("t", "a", raw=True))
    answer(never, Subscribe("t", "b", raw=True))
    produce(never, "t", 0, *[b"%d" % i for i in range(250)])
    never.take_woken()
    never.tick(ctx(1.0))
    counts = lambda: [len(never.queues.manager.queues[q].messages) for q in ("a", "b")]
    assert counts() == [50, 50]  # 100 (record, subscription) pairs
    assert never.next_deadline() == -math.inf  # more waits: the timer comes back at once
    run(never)
    assert counts() == [250, 250]
    assert [int(m.body) for m in receive_all(never, "b")] == list(range(250))


def test_a_topic_deleted_and_created_again_is_read_afresh(never):
    answer(never, Subscribe("t", "a", raw=True))
    produce(never, "t", 0, b"old-0", b"old-1")
    run(never)
    answer(never, DeleteTopic("t"))
    answer(never, CreateTopic("t", 1))
    answer(never, Subscribe("t", "b", raw=True))
    produce(never, "t", 0, b"new-0", b"new-1", b"new-2")
    run(never)
    assert [m.body for m in receive_all(never, "a")] == [b"old-0", b"old-1"]
    assert [m.body for m in receive_all(never, "b")] == [b"new-0", b"new-1", b"new-2"]


# -- restarts ---------------------------------------------------------------------------------------------------
def _restart(engine, tmp_path, abandon=True):
    engine.abandon() if abandon else engine.close()
    return make_engine(tmp_path, opened_at=10.0, fsync="always")


def _setup_always(tmp_path, n=20):
    engine = make_engine(tmp_path, fsync="always")
    settled(engine, CreateTopic("t", 1))
    settled(engine, CreateQueue("a"))
    settled(engine, CreateQueue("b"))
    subs = [settled(engine, Subscribe("t", q, raw=True, filter_policy='{"n": [{"numeric": ["<", 15]}]}'
                                      if q == "b" else None)) for q in ("a", "b")]
    if n:
        handle(engine, Produce("t", 0, encode_batch([(T0_MS, None, b"%d" % i, [("n", b"%d" % i)])
                                                     for i in range(n)])))
        flush(engine)
    return engine, subs


def _check(engine, subs):
    run(engine, 10.0)
    flush(engine)
    run(engine, 10.0)
    take = lambda q: settled(engine, ReceiveMessages(q, max_messages=1000, wait_s=0.0), 10.0).messages
    a = [int(m.body) for m in take("a")]
    b = [int(m.body) for m in take("b")]
    assert (a, b) == (list(range(20)), list(range(15)))
    da, db = (answer(engine, DescribeSubscription(s.id), 10.0) for s in subs)
    assert (da.delivered, da.filtered_out, db.delivered, db.filtered_out) == (20, 0, 15, 5)


def test_restart_before_any_delivery_delivers_everything_once(tmp_path):
    engine, subs = _setup_always(tmp_path)
    _check(_restart(engine, tmp_path), subs)


def test_restart_after_the_queue_sends_before_the_cursor_save_duplicates_nothing(tmp_path):
    engine, subs = _setup_always(tmp_path)
    run(engine)  # sends journaled; the cursors wait for them to be durable
    subs_log = engine.log.topics[SUBSCRIPTIONS_TOPIC].partitions[0]
    end = subs_log.log_end_offset
    assert engine.fanout.subs.pending
    flush(engine)  # the sends are durable; the cursor save is not written yet
    assert subs_log.log_end_offset == end
    _check(_restart(engine, tmp_path), subs)


def test_a_cursor_is_never_saved_before_its_sends_are_durable(tmp_path):
    engine, subs = _setup_always(tmp_path)
    subs_log = engine.log.topics[SUBSCRIPTIONS_TOPIC].partitions[0]
    end = subs_log.log_end_offset
    run(engine)
    run(engine, 2.0)
    assert subs_log.log_end_offset == end  # sends not durable: no cursor written
    flush(engine)
    run(engine, 3.0)
    assert subs_log.log_end_offset == end + 2  # both subscriptions' cursors
    _check(_restart(engine, tmp_path, abandon=False), subs)


def test_restart_after_the_cursor_save_redelivers_nothing(tmp_path):
    engine, subs = _setup_always(tmp_path)
    run(engine)
    flush(engine)
    run(engine, 2.0)
    flush(engine)
    _check(_restart(engine, tmp_path), subs)


def test_restart_midway_with_a_bounded_turn_loses_and_duplicates_nothing(tmp_path):
    engine, subs = _setup_always(tmp_path)
    engine.fanout.pump.records_per_turn = 7
    engine.tick(ctx(1.0))
    flush(engine)
    engine.tick(ctx(1.0))  # the first cursors saved, the second turn's sends written
    _check(_restart(engine, tmp_path), subs)


def test_subscriptions_survive_a_restart(tmp_path):
    engine, subs = _setup_always(tmp_path)
    engine = _restart(engine, tmp_path, abandon=False)
    listed = settled(engine, ListSubscriptions(), 10.0).subscriptions
    assert sorted(listed, key=lambda s: s.queue) == sorted(subs, key=lambda s: s.queue)
    engine.close()


def test_cursors_are_journaled_at_most_once_a_second_per_subscription(never):
    answer(never, Subscribe("t", "a"))
    answer(never, Subscribe("t", "b"))
    subs_log = never.log.topics[SUBSCRIPTIONS_TOPIC].partitions[0]
    end = subs_log.log_end_offset
    for i in range(20):  # 20 turns within one second
        produce(never, "t", 0, b"x", now=1.0 + i / 40)
        run(never, 1.0 + i / 40)
    assert subs_log.log_end_offset == end + 2  # one save each, at the first turn
    run(never, 2.0)  # a second later the newest positions are saved
    assert subs_log.log_end_offset == end + 4 and not never.fanout.subs.pending
    assert never.fanout.next_deadline() == math.inf


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.sampled_from(["produce", "tick", "flush", "restart", "kill"]), max_size=30),
       per_turn=st.integers(1, 9))
def test_any_interleaving_of_turns_fsyncs_restarts_and_kills_delivers_each_record_once(tmp_path_factory, steps,
                                                                                      per_turn):
    path = tmp_path_factory.mktemp("fanout")
    engine, subs = _setup_always(path, n=0)
    engine.fanout.pump.records_per_turn = per_turn
    n, now = 0, 1.0
    for step in steps:
        now += 0.3
        if step == "produce":
            handle(engine, Produce("t", 0, encode_batch([(T0_MS, None, b"%d" % i, [("n", b"%d" % i)])
                                                         for i in range(n, n + 3)])), now)
            n += 3
        elif step == "tick":
            engine.take_woken()
            engine.tick(ctx(now))
        elif step == "flush":
            flush(engine)
        else:
            engine.abandon() if step == "kill" else engine.close()
            engine = make_engine(path, opened_at=now, fsync="always")
            engine.fanout.pump.records_per_turn = per_turn
    for _ in range(100):
        flush(engine)
        engine.take_woken()
        if engine.fanout.next_deadline() > now + 2:
            break
        now += 1.0
        engine.tick(ctx(now))
    take = lambda q: settled(engine, ReceiveMessages(q, max_messages=1000, wait_s=0.0), now).messages
    assert sorted(int(m.body) for m in take("a")) == list(range(n))
    assert sorted(int(m.body) for m in take("b")) == [i for i in range(n) if i < 15]
    da, db = (settled(engine, DescribeSubscription(s.id), now) for s in subs)
    assert (da.delivered, da.filtered_out, db.delivered, db.filtered_out) == (n, 0, min(n, 15), max(0, n - 15))
    engine.close()


def test_records_damaged_on_disk_are_stepped_over_and_counted_failed(tmp_path):
    engine = make_engine(tmp_path, fsync="never")
    answer(engine, CreateTopic("t", 1))
    answer(engine, CreateQueue("a"))
    answer(engine, CreateQueue("b"))
    early = answer(engine, Subscribe("t", "b", raw=True))
    for b in range(5):  # five batches of four records
        produce(engine, "t", 0, *[b"%d" % (b * 4 + i) for i in range(4)])
    run(engine)  # "b" has them all before the damage
    engine.close()
    [segment] = sorted((tmp_path / "topics" / "t" / "0").glob("*.log"))
    pos, h = list(iter_batches(segment.read_bytes()))[2]  # the third batch: offsets 8-11
    with open(segment, "r+b") as f:
        f.seek(pos + h.size - 3)
        byte = f.read(1)
        f.seek(pos + h.size - 3)
        f.write(bytes([byte[0] ^ 0x5A]))
    engine = make_engine(tmp_path, opened_at=5.0, fsync="never")
    late = answer(engine, Subscribe("t", "a", raw=True, start="beginning"), 5.0)
    run(engine, 6.0)
    assert [int(m.body) for m in receive_all(engine, "a", 6.0)] == [*range(8), *range(12, 20)]
    d = answer(engine, DescribeSubscription(late.id), 6.0)
    assert (d.delivered, d.failed, d.lag) == (16, 4, 0)
    assert answer(engine, DescribeSubscription(early.id), 6.0).failed == 0
    engine.close()


def test_a_restart_before_the_cursor_save_counts_the_records_met_again_as_before(tmp_path):
    """Records between the saved cursor and the queue's fan-out mark are met again after a restart: those the
    policy filters out are counted filtered out, not delivered (they interleave with the sent ones)."""
    engine = make_engine(tmp_path, fsync="always")
    settled(engine, CreateTopic("t", 1))
    settled(engine, CreateQueue("evens"))
    sub = settled(engine, Subscribe("t", "evens", raw=True, filter_policy='{"kind": ["even"]}'))
    handle(engine, Produce("t", 0, encode_batch([(T0_MS, None, b"%d" % i, [("kind", b"even" if i % 2 == 0
                                                                              else b"odd")])
                                                 for i in range(20)])))
    flush(engine)
    run(engine)  # the sends are journaled; the cursor waits for them to be durable
    flush(engine)  # durable; the cursor save is not written before the restart
    engine = _restart(engine, tmp_path)
    run(engine, 10.0)
    flush(engine)
    run(engine, 10.0)
    got = settled(engine, ReceiveMessages("evens", max_messages=1000, wait_s=0.0), 10.0).messages
    assert [int(m.body) for m in got] == list(range(0, 20, 2))
    d = answer(engine, DescribeSubscription(sub.id), 10.0)
    assert (d.delivered, d.filtered_out, d.failed) == (10, 10, 0)
