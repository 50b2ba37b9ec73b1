# Push delivery with a prefetch window (issue 11 item 6; RabbitMQ's consumer prefetch, AMQP basic.qos, basic.ack,
# basic.nack, basic.cancel): a connection subscribes to a queue with a window of N messages, and the broker hands
# it messages as they become visible, never more than N unacknowledged. Over a request/answer protocol the push is
# a parked `QueueDeliver` answered as soon as a message is visible and the window has room; the `QueueSubscribe`
# request itself stays parked for the subscription's life, so whenever the connection closes its `abandon` makes
# the unacknowledged messages visible at once. A delivery is a receive (journaled as one), an ack a delete, a nack
# a visibility change. Sans-IO like every core: must not know about any wire protocol, sockets, clocks or trio.
"""Push delivery: subscriptions with a prefetch window on a queue.

A subscription belongs to one connection (the front door stamps the connection's number on each request) and is
named by the client: an integer, distinct among that connection's open subscriptions. Rules, after RabbitMQ's
(rabbitmq.com/docs/consumer-prefetch, rabbitmq.com/docs/confirms):

* At most ``prefetch`` (1-1,000) messages are unacknowledged on a subscription: delivered and not yet acked,
  nacked, handed back, nor visible again after their visibility timeout.
* Ack deletes the message (as SQS DeleteMessage); nack makes it visible again at once or after ``delay_s`` (as
  SQS ChangeMessageVisibility, so at most 12 hours after its receive). Either frees its place in the window.
* Unsubscribing, or the connection closing, makes every unacknowledged message visible again at once (as AMQP's
  basic.cancel followed by the channel closing: requeued, redelivered with a higher receive count).
* A pushed message is an SQS receive: it is hidden for the subscription's ``visibility_timeout_s`` (default the
  queue's) and, if not acked by then, visible again (SQS's rule; RabbitMQ has no such timeout). A subscriber that
  holds a message longer extends it with ``change_visibility``. After a broker restart a message that was
  unacknowledged becomes visible when that timeout ends, as any received message (the journal keeps receives,
  not subscriptions).
* Bounds: 100 subscriptions per connection (``TOO_MANY_SUBSCRIPTIONS``), 1,000 handles per ack or nack.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable

from millpond.broker.core.outcomes import NEVER, Answer, Context, Outcome, Wait
from millpond.broker.core.queues.api import BatchFailure, QueueApi, queue_key
from millpond.broker.core.queues.attributes import RECEIVE_WAIT_S_MAX, VISIBILITY_TIMEOUT_S_MAX, check_seconds
from millpond.broker.core.queues.manager import Delivery
from millpond.broker.core.queues.queue import IN_FLIGHT, Queue
from millpond.broker.wire.errors import (
    InvalidParameterValueError,
    InvalidRequestError,
    MillpondError,
    ThrottledError,
    TooManySubscriptionsError,
    UnknownQueueError,
    UnknownSubscriptionError,
)

PREFETCH_MAX = 1000  # messages unacknowledged per subscription (RabbitMQ allows 65,535; a bound on one answer)
SUBSCRIPTIONS_PER_CONNECTION_MAX = 100
HANDLES_MAX = 1000  # receipt handles per ack or nack: a whole window at once


def slots_key(connection: int, subscription: int) -> Hashable:
    """Woken when a subscription's window has room again (ack, nack) or the subscription ended."""
    return ("queue-push", connection, subscription)


def ended_key(connection: int, subscription: int) -> Hashable:
    """Woken when a subscription ended (its parked subscribe is then answered)."""
    return ("queue-push-end", connection, subscription)


# -- requests (``connection``: set by the front door to the connection the request came on, never the client) ----
@dataclass(frozen=True, slots=True)
class QueueSubscribe:
    """Open a subscription; answered only when it ends (``Unsubscribed``), so it holds the subscription for the
    connection's life."""

    queue: str
    subscription: int  # the client's name for it, distinct among its connection's open subscriptions
    prefetch: int  # 1-1,000: messages unacknowledged at most (AMQP basic.qos prefetch-count)
    visibility_timeout_s: float | None = None  # of each delivery; None: the queue's
    connection: int = 0


@dataclass(frozen=True, slots=True)
class QueueDeliver:
    """The push: answered with up to the window's room of messages as soon as one is visible and there is room,
    or with none after ``wait_s``, or with ``ended`` once the subscription is over."""

    subscription: int
    wait_s: float | None = None  # 0-20 s; None: 20
    max_bytes: int | None = None  # bodies and attributes of the answer (one message always goes)
    connection: int = 0


@dataclass(frozen=True, slots=True)
class QueueAck:
    """Delete pushed messages by receipt handle, freeing their places in the subscription's window."""

    queue: str
    subscription: int
    receipt_handles: tuple[str, ...]  # 1-1,000
    connection: int = 0


@dataclass(frozen=True, slots=True)
class QueueNack:
    """Make pushed messages visible again after ``delay_s`` (0: at once), freeing their places in the window."""

    queue: str
    subscription: int
    receipt_handles: tuple[str, ...]  # 1-1,000
    delay_s: float = 0.0  # 0-43,200 s, and at most 12 h after the receive
    connection: int = 0


@dataclass(frozen=True, slots=True)
class QueueUnsubscribe:
    """End a subscription: its unacknowledged messages are visible again at once."""

    subscription: int
    connection: int = 0


# -- answers ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Deliveries:
    """A push: ``messages`` (each as a receive gives it); ``unacked``: the subscription's unacknowledged messages
    after these, never more than its prefetch; ``ended``: the subscription is over (no messages then)."""

    messages: tuple[Delivery, ...]
    unacked: int
    ended: bool = False


@dataclass(frozen=True, slots=True)
class Acked:
    """Ack or nack: the handles refused (``id``: the handle's index in the request), the others applied."""

    failed: tuple[BatchFailure, ...]
    unacked: int  # the subscription's, after this request (0 if it is not open on this connection)


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    subscription: int
    released: int  # unacknowledged messages made visible again


class Subscription:
    """One open subscription: ``held`` maps the seq of each message it holds to the receive count of the delivery
    it holds (a later delivery of the same message, after a timeout, is not its own)."""

    __slots__ = ("connection", "id", "queue", "incarnation", "prefetch", "visibility_timeout_s", "held", "ended")

    def __init__(self, connection: int, sid: int, q: Queue, prefetch: int, visibility_timeout_s: float | None):
        self.connection = connection
        self.id = sid
        self.queue = q.name
        self.incarnation = q.incarnation
        self.prefetch = prefetch
        self.visibility_timeout_s = visibility_timeout_s
        self.held: dict[int, int] = {}
        self.ended: MillpondError | int | None = None  # how it ended: an error, or the count it released


class PushApi:
    """The push requests over a ``QueueApi`` (its manager, journal and durable answers); ``wake`` wakes keys."""

    def __init__(self, queues: QueueApi, *, wake: Callable[[Hashable], None]) -> None:
        self.queues = queues
        self.manager = queues.manager
        self.wake = wake
        self.subscriptions: dict[tuple[int, int], Subscription] = {}
        self._per_connection: dict[int, int] = {}

    def handlers(self) -> dict[type, Callable[[Any, Context], Outcome]]:
        return {QueueSubscribe: self.subscribe, QueueDeliver: self.deliver, QueueAck: self.ack,
                QueueNack: self.nack, QueueUnsubscribe: self.unsubscribe}

    def _find(self, connection: int, sid: int) -> Subscription:
        sub = self.subscriptions.get((connection, sid))
        if sub is None:
            raise UnknownSubscriptionError(f"no subscription {sid} is open on this connection", subscription=sid)
        return sub

    # -- subscribe and end ----------------------------------------------------------------------------------------
    def subscribe(self, req: QueueSubscribe, ctx: Context) -> Outcome:
        """Open subscription ``req.subscription`` on queue ``req.queue``; the answer comes when it ends
        (``Unsubscribed``, or ``UnknownQueueError`` once the queue is deleted). Raises ``UnknownQueueError``,
        ``InvalidParameterValueError`` (prefetch outside 1-1,000, a visibility timeout outside 0-43,200 s),
        ``InvalidRequestError`` (the id is open already), ``TooManySubscriptionsError`` (100 on the
        connection)."""
        q = self.manager.queue(req.queue, ctx.now)
        if not 1 <= req.prefetch <= PREFETCH_MAX:
            raise InvalidParameterValueError(f"value {req.prefetch} for parameter prefetch is invalid: must be "
                                             f"between 1 and {PREFETCH_MAX}", parameter="prefetch")
        if req.visibility_timeout_s is not None:
            check_seconds("visibility_timeout_s", req.visibility_timeout_s, VISIBILITY_TIMEOUT_S_MAX)
        key = (req.connection, req.subscription)
        if key in self.subscriptions:
            raise InvalidRequestError(f"subscription {req.subscription} is open on this connection already",
                                      field="subscription")
        if self._per_connection.get(req.connection, 0) >= SUBSCRIPTIONS_PER_CONNECTION_MAX:
            raise TooManySubscriptionsError(f"a connection holds at most {SUBSCRIPTIONS_PER_CONNECTION_MAX} "
                                            "subscriptions", subscriptions_max=SUBSCRIPTIONS_PER_CONNECTION_MAX)
        sub = self.subscriptions[key] = Subscription(req.connection, req.subscription, q, req.prefetch,
                                                     req.visibility_timeout_s)
        self._per_connection[req.connection] = self._per_connection.get(req.connection, 0) + 1
        keys = (ended_key(*key),)

        def resume(ctx: Context, timed_out: bool) -> Outcome:
            if sub.ended is None:
                return Wait(keys, NEVER, resume, abandon, session=True)
            if isinstance(sub.ended, MillpondError):
                raise sub.ended
            return Answer(Unsubscribed(sub.id, sub.ended))

        def abandon(ctx: Context) -> None:
            # the connection closed: as AMQP, every unacknowledged message is requeued at once
            if sub.ended is None:
                self._end(sub, ctx, None)
                self.queues._journal(ctx)

        return Wait(keys, NEVER, resume, abandon, session=True)

    def unsubscribe(self, req: QueueUnsubscribe, ctx: Context) -> Outcome:
        """End a subscription (as AMQP basic.cancel, then its messages requeued as when the channel closes): every
        message it holds unacknowledged is visible again at once; answered once that is durable. Raises
        ``UnknownSubscriptionError``."""
        sub = self._find(req.connection, req.subscription)
        released = self._end(sub, ctx, None)
        return self.queues._durable(ctx, Unsubscribed(sub.id, released))

    def _end(self, sub: Subscription, ctx: Context, error: MillpondError | None) -> int:
        """Close ``sub``: what it holds is visible again now (unless its queue is gone), its parked requests
        are woken. Returns how many messages it released."""
        key = (sub.connection, sub.id)
        del self.subscriptions[key]
        left = self._per_connection[sub.connection] - 1
        if left:
            self._per_connection[sub.connection] = left
        else:
            del self._per_connection[sub.connection]
        released = 0
        q = self._queue(sub)
        if q is not None:
            self.manager.queue(sub.queue, ctx.now)  # its timers first: a delivery that timed out is not released
            for seq in self._holding(sub, q):
                self.manager.emit(("vis", sub.queue, seq, ctx.now), ctx.now)
                released += 1
        sub.held.clear()
        sub.ended = error if error is not None else released
        self.wake(ended_key(*key))
        self.wake(slots_key(*key))
        return released

    # -- the window -----------------------------------------------------------------------------------------------
    def _queue(self, sub: Subscription) -> Queue | None:
        q = self.manager.queues.get(sub.queue)
        return q if q is not None and q.incarnation == sub.incarnation else None

    @staticmethod
    def _holding(sub: Subscription, q: Queue) -> list[int]:
        """Forget the deliveries ``sub`` no longer holds (deleted, visible again, received again by another);
        returns the seqs it holds."""
        for seq, count in list(sub.held.items()):
            m = q.messages.get(seq)
            if m is None or m.receive_count != count or m.state != IN_FLIGHT:
                del sub.held[seq]
        return list(sub.held)

    def deliver(self, req: QueueDeliver, ctx: Context) -> Outcome:
        """The next push of a subscription: as many visible messages as its window has room for (each a receive
        with the subscription's visibility timeout), answered as soon as there is one, or with none after
        ``wait_s`` (0-20 s, default 20), or ``ended`` when the subscription is over; then once the receives are
        durable. FIFO queues keep group order as a receive does. The limits' receive policies count each push
        as a receive (see ``QueueApi.receive``): one they throttle is held until its retry-after has passed, not
        refused. Raises ``UnknownSubscriptionError``,
        ``UnknownQueueError`` (the queue was deleted: the subscription ends), ``InvalidParameterValueError``."""
        sub = self._find(req.connection, req.subscription)
        wait_s = RECEIVE_WAIT_S_MAX if req.wait_s is None else check_seconds("wait_s", req.wait_s,
                                                                              RECEIVE_WAIT_S_MAX)
        keys = (queue_key(sub.queue), slots_key(sub.connection, sub.id))
        until = ctx.now + wait_s
        got, retry_at = self._take(sub, req, ctx)
        if got or wait_s <= 0:
            return self._answer(sub, ctx, got)

        def resume(ctx: Context, timed_out: bool) -> Outcome:
            if sub.ended is not None:
                if isinstance(sub.ended, MillpondError):
                    raise sub.ended
                return Answer(Deliveries((), 0, ended=True))
            got, retry_at = self._take(sub, req, ctx)
            if got or (timed_out and ctx.now >= until):  # not when woken for a throttle's end
                return self._answer(sub, ctx, got)
            return Wait(keys, min(until, retry_at), resume)

        return Wait(keys, min(until, retry_at), resume)

    def _answer(self, sub: Subscription, ctx: Context, got: tuple[Delivery, ...]) -> Outcome:
        self.queues.received(ctx, queue=sub.queue, records=len(got))
        return self.queues._durable(ctx, Deliveries(got, len(sub.held)))

    def _take(self, sub: Subscription, req: QueueDeliver, ctx: Context) -> tuple[tuple[Delivery, ...], float]:
        """``(the messages pushed now, when to look again at the latest)``: the window's room, as many as the
        limits' receive policies let go now; a subscription they throttle takes nothing and looks again once
        the throttle's retry-after has passed (a push waits rather than fails)."""
        q = self._queue(sub)
        if q is None:
            error = UnknownQueueError(f"queue {sub.queue!r} was deleted: subscription {sub.id} ended",
                                      queue=sub.queue)
            self._end(sub, ctx, error)
            raise error
        self.manager.queue(sub.queue, ctx.now)  # its timers: a timed-out delivery frees its place
        room = sub.prefetch - len(self._holding(sub, q))
        if room <= 0:
            return (), NEVER
        if q.counts[1]:
            try:
                room = self.queues.receivable(ctx, queue=sub.queue, wanted=room)
            except ThrottledError as exc:
                return (), ctx.now + float(exc.details.get("retry_after_s", 0.0))
        bytes_max = self.queues.bytes_max if req.max_bytes is None else min(req.max_bytes, self.queues.bytes_max)
        got = self.manager.receive(sub.queue, room, ctx.now, ctx.now_ms,
                                   visibility_timeout_s=sub.visibility_timeout_s, bytes_max=bytes_max)
        self.queues._journal(ctx)  # dead letters moved while nothing was delivered are written too
        for d in got:
            sub.held[self.manager._handle(q, d.receipt_handle)[0]] = d.receive_count
        return tuple(got), NEVER

    # -- ack and nack ---------------------------------------------------------------------------------------------
    def ack(self, req: QueueAck, ctx: Context) -> Outcome:
        """Delete each message by receipt handle (as SQS DeleteMessage; AMQP basic.ack) and free its place in the
        subscription's window; answered once durable, with the handles refused. A subscription not open on this
        connection (ended, or opened on an earlier connection) is no error: the deletes still happen. Raises
        ``UnknownQueueError``, ``InvalidRequestError`` (no handles, more than 1,000, another queue's
        subscription)."""
        return self._settle(req, ctx, lambda handle: self.manager.delete_message(req.queue, handle, ctx.now))

    def nack(self, req: QueueNack, ctx: Context) -> Outcome:
        """Make each message visible again after ``delay_s`` (0: at once; as SQS ChangeMessageVisibility, AMQP
        basic.nack with requeue) and free its place in the window; a message whose receive count then passes the
        queue's ``max_receive_count`` moves to its dead-letter queue at its next delivery. Raises as ``ack``, and
        ``InvalidParameterValueError`` for a delay outside 0-43,200 s."""
        check_seconds("delay_s", req.delay_s, VISIBILITY_TIMEOUT_S_MAX)
        return self._settle(req, ctx, lambda handle: self.manager.change_visibility(req.queue, handle, req.delay_s,
                                                                                   ctx.now))

    def _settle(self, req: QueueAck | QueueNack, ctx: Context, apply: Callable[[str], None]) -> Outcome:
        q = self.manager.queue(req.queue, ctx.now)
        if not 1 <= len(req.receipt_handles) <= HANDLES_MAX:
            raise InvalidRequestError(f"between 1 and {HANDLES_MAX} receipt handles, got "
                                      f"{len(req.receipt_handles)}", field="receipt_handles")
        sub = self.subscriptions.get((req.connection, req.subscription))
        if sub is not None and (sub.queue, sub.incarnation) != (q.name, q.incarnation):
            raise InvalidRequestError(f"subscription {sub.id} is on queue {sub.queue!r}, not {req.queue!r}",
                                      field="queue")
        failed, freed = [], False
        for i, handle in enumerate(req.receipt_handles):
            try:
                seq, count = self.manager._handle(q, handle)
                apply(handle)
            except MillpondError as exc:
                failed.append(BatchFailure(str(i), exc.code, exc.name, exc.message))
                continue
            if sub is not None and sub.held.get(seq) == count:
                del sub.held[seq]
                freed = True
        if freed:
            self.wake(slots_key(req.connection, req.subscription))
        return self.queues._durable(ctx, Acked(tuple(failed), 0 if sub is None else len(sub.held)))


__all__ = [
    "Acked", "Deliveries", "HANDLES_MAX", "PREFETCH_MAX", "PushApi", "QueueAck", "QueueDeliver", "QueueNack",
    "QueueSubscribe", "QueueUnsubscribe", "SUBSCRIPTIONS_PER_CONNECTION_MAX", "Subscription", "Unsubscribed",
    "ended_key", "slots_key",
]
