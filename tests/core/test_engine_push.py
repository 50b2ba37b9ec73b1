# Push delivery through the engine, with literal times and no Trio: a subscription's window is never exceeded, an
# ack frees a place and the next visible message is pushed, a nack makes a message visible again (at once or after
# a delay), unsubscribing or the connection closing (abandon) makes every unacknowledged message visible at once,
# FIFO group order holds under push, a timed-out delivery frees its place, and the bounds are enforced.
from __future__ import annotations

import pytest

from millpond.broker.core.outcomes import Answer, Wait
from millpond.broker.core.queues.api import (
    CreateQueue,
    DeleteQueue,
    GetQueueAttributes,
    ReceiveMessages,
    SendMessage,
    queue_key,
)
from millpond.broker.core.queues.push import (
    SUBSCRIPTIONS_PER_CONNECTION_MAX,
    Acked,
    Deliveries,
    QueueAck,
    QueueDeliver,
    QueueNack,
    QueueSubscribe,
    QueueUnsubscribe,
    Unsubscribed,
    ended_key,
    slots_key,
)
from millpond.broker.wire.errors import (
    InvalidParameterValueError,
    InvalidRequestError,
    TooManySubscriptionsError,
    UnknownQueueError,
    UnknownSubscriptionError,
)

from enginekit import answer, ctx, handle, make_engine

CONN = 7  # the connection number the front door would stamp


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(tmp_path, fsync="never")
    answer(engine, CreateQueue("q", visibility_timeout_s=30.0))
    yield engine
    engine.close()


def send(engine, *bodies, queue="q", now=0.0, **kw):
    for body in bodies:
        answer(engine, SendMessage(queue, body, **kw), now)


def subscribe(engine, sid=1, prefetch=3, queue="q", now=0.0, conn=CONN, **kw):
    holder = handle(engine, QueueSubscribe(queue, sid, prefetch, connection=conn, **kw), now)
    assert isinstance(holder, Wait) and holder.keys == (ended_key(conn, sid),) and holder.abandon is not None
    return holder


def deliver(engine, sid=1, now=0.0, conn=CONN, wait_s=20.0):
    return handle(engine, QueueDeliver(sid, wait_s=wait_s, connection=conn), now)


def pushed(outcome):
    assert isinstance(outcome, Answer) and type(outcome.value) is Deliveries, outcome
    return outcome.value


def counts(engine, now, queue="q"):
    info = answer(engine, GetQueueAttributes(queue), now)
    return info.messages_visible, info.messages_in_flight


def test_the_window_is_never_exceeded_and_an_ack_pushes_the_next_visible_message(engine):
    send(engine, *[b"m%d" % i for i in range(6)])
    subscribe(engine, prefetch=3)
    first = pushed(deliver(engine, now=1.0))
    assert [m.body for m in first.messages] == [b"m0", b"m1", b"m2"] and first.unacked == 3
    parked = deliver(engine, now=1.0)
    assert isinstance(parked, Wait) and parked.keys == (queue_key("q"), slots_key(CONN, 1)) and parked.until == 21.0
    send(engine, b"m6", now=2.0)  # a send wakes the queue, but the window is full
    assert queue_key("q") in engine.take_woken()
    parked = parked.resume(ctx(2.0), False)
    assert isinstance(parked, Wait) and counts(engine, 2.0) == (4, 3)
    acked = answer(engine, QueueAck("q", 1, (first.messages[1].receipt_handle,), connection=CONN), 3.0)
    assert acked == Acked((), 2) and slots_key(CONN, 1) in engine.take_woken()
    got = pushed(parked.resume(ctx(3.0), False))
    assert [m.body for m in got.messages] == [b"m3"] and got.unacked == 3
    assert counts(engine, 3.0) == (3, 3)


def test_a_deliver_with_nothing_visible_times_out_empty_and_wait_s_is_checked(engine):
    subscribe(engine)
    parked = deliver(engine, now=0.0, wait_s=5.0)
    assert isinstance(parked, Wait) and parked.until == 5.0
    assert pushed(parked.resume(ctx(5.0), True)) == Deliveries((), 0)
    assert pushed(deliver(engine, wait_s=0.0)) == Deliveries((), 0)
    with pytest.raises(InvalidParameterValueError, match="wait_s"):
        deliver(engine, wait_s=20.5)


def test_a_nack_makes_the_message_visible_again_at_once_or_after_its_delay(engine):
    send(engine, b"a", b"b")
    subscribe(engine, prefetch=2)
    a, b = pushed(deliver(engine, now=1.0)).messages
    nacked = answer(engine, QueueNack("q", 1, (a.receipt_handle,), delay_s=5.0, connection=CONN), 2.0)
    assert nacked == Acked((), 1) and counts(engine, 2.0) == (0, 2)  # hidden 5 s more, its place free
    assert isinstance(deliver(engine, now=2.0), Wait)
    assert counts(engine, 6.9) == (0, 2) and counts(engine, 7.0) == (1, 1)
    [again] = pushed(deliver(engine, now=7.0)).messages
    assert (again.body, again.receive_count, again.message_id) == (b"a", 2, a.message_id)
    answer(engine, QueueNack("q", 1, (b.receipt_handle,), connection=CONN), 8.0)
    [b2] = pushed(deliver(engine, now=8.0)).messages
    assert (b2.body, b2.receive_count) == (b"b", 2)
    with pytest.raises(InvalidParameterValueError, match="delay_s"):
        handle(engine, QueueNack("q", 1, (b2.receipt_handle,), delay_s=43_200.5, connection=CONN), 8.0)


def test_a_stale_or_malformed_handle_is_refused_per_handle_and_frees_nothing(engine):
    send(engine, b"a", b"b")
    subscribe(engine, prefetch=2)
    a, b = pushed(deliver(engine, now=1.0)).messages
    acked = answer(engine, QueueAck("q", 1, ("nonsense", b.receipt_handle), connection=CONN), 2.0)
    assert [(f.id, f.name) for f in acked.failed] == [("0", "RECEIPT_HANDLE_INVALID")] and acked.unacked == 1
    with pytest.raises(InvalidRequestError, match="receipt handles"):
        handle(engine, QueueAck("q", 1, (), connection=CONN), 2.0)
    assert counts(engine, 2.0) == (0, 1)


def test_closing_the_connection_makes_every_unacked_message_visible_at_once(engine):
    send(engine, b"a", b"b", b"c")
    holder = subscribe(engine, prefetch=5)
    got = pushed(deliver(engine, now=1.0))
    answer(engine, QueueAck("q", 1, (got.messages[0].receipt_handle,), connection=CONN), 2.0)
    engine.take_woken()
    parked = handle(engine, ReceiveMessages("q", max_messages=10, wait_s=20.0), 3.0)  # another worker waits
    assert isinstance(parked, Wait)
    holder.abandon(ctx(4.0))
    assert queue_key("q") in engine.take_woken() and counts(engine, 4.0) == (2, 0)
    again = parked.resume(ctx(4.0), False).value.messages
    assert [(m.body, m.receive_count) for m in again] == [(b"b", 2), (b"c", 2)]
    with pytest.raises(UnknownSubscriptionError):
        deliver(engine, now=4.0)


def test_unsubscribing_releases_at_once_and_ends_the_parked_subscribe_and_deliver(engine):
    send(engine, b"a", b"b")
    holder = subscribe(engine, prefetch=2)
    assert len(pushed(deliver(engine, now=1.0)).messages) == 2
    parked = deliver(engine, now=1.0)
    done = answer(engine, QueueUnsubscribe(1, connection=CONN), 2.0)
    assert done == Unsubscribed(1, 2) and counts(engine, 2.0) == (2, 0)
    assert {ended_key(CONN, 1), slots_key(CONN, 1), queue_key("q")} <= engine.take_woken()
    assert holder.resume(ctx(2.0), False).value == Unsubscribed(1, 2)
    assert pushed(parked.resume(ctx(2.0), False)) == Deliveries((), 0, ended=True)
    with pytest.raises(UnknownSubscriptionError):
        handle(engine, QueueUnsubscribe(1, connection=CONN), 2.0)
    holder.abandon(ctx(3.0))  # the connection closing later changes nothing
    assert counts(engine, 3.0) == (2, 0)


def test_a_delivery_whose_visibility_timeout_ends_frees_its_place_and_comes_back(engine):
    send(engine, b"a", b"b")
    subscribe(engine, prefetch=1, visibility_timeout_s=10.0)
    [a] = pushed(deliver(engine, now=0.0)).messages
    parked = deliver(engine, now=0.0)
    assert isinstance(parked, Wait) and engine.next_deadline() <= 10.0
    assert queue_key("q") in engine.tick(ctx(10.0))
    [next_one] = pushed(parked.resume(ctx(10.0), False)).messages
    assert next_one.body == b"a" and next_one.receive_count == 2  # oldest visible first
    late = answer(engine, QueueAck("q", 1, (a.receipt_handle,), connection=CONN), 11.0)
    assert late == Acked((), 1)  # the old handle deletes nothing and frees nothing
    assert counts(engine, 11.0) == (1, 1)


def test_fifo_group_order_holds_under_push(engine):
    answer(engine, CreateQueue("f.fifo", content_based_deduplication=True))
    for group, body in [("g1", b"g1-m1"), ("g1", b"g1-m2"), ("g1", b"g1-m3"), ("g1", b"g1-m4"), ("g2", b"g2-m1"),
                        ("g3", b"g3-m1")]:
        send(engine, body, queue="f.fifo", group_id=group)
    subscribe(engine, 1, prefetch=2, queue="f.fifo")
    subscribe(engine, 2, prefetch=10, queue="f.fifo")
    one = pushed(deliver(engine, 1, now=1.0)).messages
    assert [m.body for m in one] == [b"g1-m1", b"g1-m2"]
    two = pushed(deliver(engine, 2, now=1.0)).messages
    assert [m.body for m in two] == [b"g2-m1", b"g3-m1"]  # g1 is in flight: nothing of it
    parked = deliver(engine, 2, now=1.0)
    answer(engine, QueueAck("f.fifo", 1, (one[0].receipt_handle,), connection=CONN), 2.0)
    assert isinstance(deliver(engine, 1, now=2.0), Wait)  # g1-m2 still in flight: the group delivers nothing
    assert isinstance(parked.resume(ctx(2.0), False), Wait)
    answer(engine, QueueNack("f.fifo", 1, (one[1].receipt_handle,), connection=CONN), 3.0)
    again = pushed(deliver(engine, 2, now=3.0)).messages
    assert [(m.body, m.receive_count) for m in again] == [(b"g1-m2", 2), (b"g1-m3", 1), (b"g1-m4", 1)]


def test_a_deleted_queue_ends_its_subscriptions_with_unknown_queue(engine):
    holder = subscribe(engine)
    parked = deliver(engine, now=0.0)
    answer(engine, DeleteQueue("q"), 1.0)
    assert queue_key("q") in engine.take_woken()
    with pytest.raises(UnknownQueueError):
        parked.resume(ctx(1.0), False)
    assert ended_key(CONN, 1) in engine.take_woken()
    with pytest.raises(UnknownQueueError):
        holder.resume(ctx(1.0), False)
    answer(engine, CreateQueue("q"), 2.0)
    subscribe(engine, now=2.0)  # the id is free again


def test_subscriptions_are_bounded_and_belong_to_their_connection(engine):
    with pytest.raises(InvalidParameterValueError, match="prefetch"):
        handle(engine, QueueSubscribe("q", 1, 0, connection=CONN))
    with pytest.raises(InvalidParameterValueError, match="prefetch"):
        handle(engine, QueueSubscribe("q", 1, 1001, connection=CONN))
    with pytest.raises(UnknownQueueError):
        handle(engine, QueueSubscribe("nope", 1, 1, connection=CONN))
    for sid in range(SUBSCRIPTIONS_PER_CONNECTION_MAX):
        subscribe(engine, sid, prefetch=1000)
    with pytest.raises(InvalidRequestError, match="already"):
        handle(engine, QueueSubscribe("q", 0, 1, connection=CONN))
    with pytest.raises(TooManySubscriptionsError):
        handle(engine, QueueSubscribe("q", 100, 1, connection=CONN))
    subscribe(engine, 100, conn=CONN + 1)  # another connection has its own count and its own ids
    subscribe(engine, 0, conn=CONN + 1)
    with pytest.raises(UnknownSubscriptionError):
        deliver(engine, 5, conn=CONN + 1)
    assert len(engine.push.subscriptions) == SUBSCRIPTIONS_PER_CONNECTION_MAX + 2


def test_after_a_restart_an_unacked_push_is_visible_when_its_timeout_ends(tmp_path):
    engine = make_engine(tmp_path, fsync="never")
    answer(engine, CreateQueue("q", visibility_timeout_s=60.0))
    send(engine, b"a", b"b")
    subscribe(engine, prefetch=2)
    a, b = pushed(deliver(engine, now=1.0)).messages
    answer(engine, QueueAck("q", 1, (a.receipt_handle,), connection=CONN), 2.0)
    engine.close()  # the subscription is not journaled; its receives and the ack are

    again = make_engine(tmp_path, opened_at=10.0, fsync="never")
    info = answer(again, GetQueueAttributes("q"), 10.0)
    assert (info.messages_visible, info.messages_in_flight) == (0, 1)
    assert again.queues.next_deadline() == 61.0
    assert answer(again, ReceiveMessages("q", wait_s=0.0), 60.9).messages == ()
    [got] = answer(again, ReceiveMessages("q", wait_s=0.0), 61.0).messages
    assert (got.body, got.receive_count) == (b"b", 2)
    again.close()
