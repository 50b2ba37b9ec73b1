# The client's side of push delivery (docs/protocol.md "Push delivery"): `Queue.subscribe(prefetch=N)` opens a
# subscription on the client's current connection and keeps one `queue_deliver` parked at the broker, so messages
# arrive as soon as they are visible and the window has room; `msg.ack()` / `msg.nack(delay_s=)` settle them on
# the same connection; `msg.ack()`s made together are gathered into one `queue_ack` request (see `_ack_gathered`).
# Must not know the broker's insides: speaks only the protocol's maps.
from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from millpond.broker.wire.errors import ConnectionClosedError, MillpondError, UnknownSubscriptionError
from millpond.client._native import native
from millpond.client._seconds import seconds_api
from millpond.client.queues import QueueMessage, _failure

if TYPE_CHECKING:
    from millpond.client._connection import Connection
    from millpond.client.queues import Queue

__all__ = ["PushedMessage", "Subscription", "SubscriptionStatistics"]

DELIVER_WAIT_S = 20.0  # how long one parked deliver waits before it is answered empty and sent again
_IDS = itertools.count(1)  # unique in the process, so unique on every connection
ACK_HANDLES_MAX = 1000  # receipt handles in one gathered queue_ack request (the protocol's bound)


@dataclass(frozen=True, slots=True)
class PushedMessage(QueueMessage):
    """A message pushed by a subscription: a ``QueueMessage`` that settles itself with ``ack`` or ``nack``."""

    subscription: Any = field(default=None, repr=False, compare=False)

    async def ack(self) -> None:
        """Delete the message (AMQP basic.ack; SQS DeleteMessage) and free its place in the window. Raises
        ``ReceiptHandleInvalidError``, or on FIFO queues ``InvalidParameterValueError`` once its visibility timeout
        ended; ``ConnectionClosedError`` if the subscription's connection is gone (the message was handed back).

        Acks made together (in one turn of the event loop, or while an earlier gathered ack is on its way) go in
        one request; each returns once its own delete is durable, with its own error if it was refused."""
        await self.subscription._ack_gathered(self)

    async def nack(self, delay_s: float = 0.0) -> None:
        """Make the message visible again after ``delay_s`` seconds (0-43,200; 0: at once; AMQP basic.nack with
        requeue, SQS ChangeMessageVisibility) and free its place in the window. Raises as ``ack``, and
        ``InvalidParameterValueError`` past 12 hours since the delivery. Acks gathered before it are sent first."""
        await self.subscription._send_gathered_acks()
        await self.subscription._settle_one("queue_nack", self, {"delay_ms": round(delay_s * 1000)})


@dataclass(frozen=True, slots=True)
class SubscriptionStatistics:
    """``delivered``, ``acked``, ``nacked`` by this subscription; ``unacked``: delivered and not yet settled
    (the client's view); ``broker_unacked``/``broker_unacked_max``: the broker's count of the subscription's
    unacknowledged messages, last and highest reported (never above ``prefetch``)."""

    prefetch: int
    delivered: int
    acked: int
    nacked: int
    unacked: int
    broker_unacked: int
    broker_unacked_max: int


@seconds_api
class Subscription:
    """``async with queue.subscribe(prefetch=10) as sub: async for msg in sub: ...; await msg.ack()``.

    The broker pushes at most ``prefetch`` (1-1,000) unacknowledged messages (AMQP basic.qos). Each is hidden for
    ``visibility_timeout_s`` (default the queue's) and visible again if not settled by then, as a received
    message. Leaving the block unsubscribes: every message not yet acked or nacked is visible again at once, as
    when the connection drops. The subscription lives on one connection: if it drops, iteration raises
    ``ConnectionClosedError`` (retriable: subscribe again). Entering raises ``UnknownQueueError``,
    ``InvalidParameterValueError`` (prefetch or timeout out of range), ``TooManySubscriptionsError`` (100 on the
    connection)."""

    def __init__(self, queue: Queue, prefetch: int, visibility_timeout_s: float | None = None) -> None:
        self.queue = queue
        self.prefetch = prefetch
        self.visibility_timeout_s = visibility_timeout_s
        self.id = next(_IDS)
        self._conn: Connection | None = None
        self._holder: Any = None
        self._buffer: deque[PushedMessage] = deque()
        self._event = native().event  # the loop's own (client._native): an event per push and per msg.ack()
        self._arrived = self._event()
        self._done = False
        self._error: BaseException | None = None
        self._tg: Any = None
        self._counts = {"delivered": 0, "acked": 0, "nacked": 0}
        self._broker_unacked = 0
        self._broker_unacked_max = 0
        self._acks: deque[_PendingAck] = deque()  # made by msg.ack(), not yet sent
        self._ack_sender_running = False
        self._ack_sender_idle = self._event()

    def __repr__(self) -> str:
        return f"Subscription({self.queue.name!r}, prefetch={self.prefetch})"

    # -- lifecycle --------------------------------------------------------------------------------------------------
    async def __aenter__(self) -> Subscription:
        client = self.queue.client
        conn = self._conn = await client._connection()
        body: dict[str, Any] = {"queue": self.queue.name, "subscription": self.id, "prefetch": self.prefetch}
        if self.visibility_timeout_s is not None:
            body["visibility_timeout_ms"] = round(self.visibility_timeout_s * 1000)
        self._holder = conn.begin("queue_subscribe", body)  # answered only when the subscription ends
        first = conn.begin("queue_deliver", {"subscription": self.id, "wait_ms": 0})
        await conn.send_queued()
        try:
            self._take(await conn.finish(first, client.request_timeout_s))
        except UnknownSubscriptionError:
            # the subscribe was refused; its answer came first and says why
            await conn.finish(self._holder, client.request_timeout_s)
            raise
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._pump)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.close()
        finally:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)

    async def close(self) -> None:
        """Unsubscribe (idempotent): the messages not yet settled are visible again at once."""
        if self._done:
            return
        self._done = True  # acks made from now on are requests of their own
        self._buffer.clear()
        self._arrived.set()
        conn = self._conn
        with anyio.CancelScope(shield=True):
            await self._send_gathered_acks()  # before the unsubscribe, so those messages are deleted, not released
            if self._ack_sender_running:
                await self._ack_sender_idle.wait()
        if conn is None or conn.closed:
            return
        with anyio.CancelScope(shield=True):
            try:
                await conn.request("queue_unsubscribe", {"subscription": self.id}, self.queue.client.request_timeout_s)
                await conn.finish(self._holder, self.queue.client.request_timeout_s)
            except UnknownSubscriptionError:
                pass  # it had ended already (its queue was deleted)
            except MillpondError as exc:
                if not exc.retriable:
                    raise

    # -- pushes -----------------------------------------------------------------------------------------------------
    async def _pump(self) -> None:
        conn = self._conn
        assert conn is not None
        body = {"subscription": self.id, "wait_ms": round(DELIVER_WAIT_S * 1000)}
        timeout = self.queue.client.request_timeout_s + DELIVER_WAIT_S
        try:
            while not self._done:
                answer = await conn.request("queue_deliver", body, timeout)
                if answer["ended"]:
                    break
                self._take(answer)
        except MillpondError as exc:
            self._error = exc
            self._buffer.clear()  # the broker has handed them back
        self._done = True
        self._arrived.set()

    def _take(self, answer: dict[str, Any]) -> None:
        self._reported(answer["unacked"])
        for m in answer["messages"]:
            self._buffer.append(PushedMessage(**{f.name: m[f.name] for f in fields(QueueMessage)}, subscription=self))
        self._counts["delivered"] += len(answer["messages"])
        if answer["messages"]:
            self._arrived.set()

    def _reported(self, unacked: int) -> None:
        self._broker_unacked = unacked
        self._broker_unacked_max = max(self._broker_unacked_max, unacked)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> PushedMessage:
        """The next pushed message, waiting for one; ends when the subscription ends. Raises what ended it
        (``ConnectionClosedError``, ``UnknownQueueError`` when the queue was deleted)."""
        while not self._buffer:
            if self._error is not None:
                raise self._error
            if self._done:
                raise StopAsyncIteration
            self._arrived = self._event()
            await self._arrived.wait()
        return self._buffer.popleft()

    # -- ack and nack -----------------------------------------------------------------------------------------------
    async def ack(self, *messages: QueueMessage | str) -> list[MillpondError | None]:
        """Delete 1-1,000 messages in one request and free their places in the window; returns, in order, None
        or the error refusing that one. Acks gathered from ``msg.ack()`` before it are sent first."""
        await self._send_gathered_acks()
        return await self._settle("queue_ack", messages, {})

    async def nack(self, *messages: QueueMessage | str, delay_s: float = 0.0) -> list[MillpondError | None]:
        """Make 1-1,000 messages visible again after ``delay_s`` (0: at once) and free their places; returns as
        ``ack``."""
        await self._send_gathered_acks()
        return await self._settle("queue_nack", messages, {"delay_ms": round(delay_s * 1000)})

    async def _ack_gathered(self, message: QueueMessage) -> None:
        """``msg.ack()``: queued for the ack sender task, which sends what gathered in one request; returns once
        that request's answer says this delete is durable (or raises its error). Outside the subscription's
        block (not entered, or closing) the ack is a request of its own."""
        if self._tg is None or self._done:
            await self._settle_one("queue_ack", message, {})
            return
        pending = _PendingAck(message.receipt_handle, self._event())
        self._acks.append(pending)
        if not self._ack_sender_running:
            self._ack_sender_running = True
            self._ack_sender_idle = self._event()
            self._tg.start_soon(self._ack_sender)
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error

    async def _ack_sender(self) -> None:
        try:
            await anyio.lowlevel.checkpoint()  # the acks made in this turn of the event loop join the first request
            while self._acks:
                await self._send_gathered_acks(1)
        finally:
            while self._acks:  # only when cancelled: the subscription's tasks ended
                p = self._acks.popleft()
                p.error = ConnectionClosedError("the subscription ended before the ack was sent")
                p.done.set()
            self._ack_sender_running = False
            self._ack_sender_idle.set()

    async def _send_gathered_acks(self, requests: int | None = None) -> None:
        """Send the gathered acks (``requests`` requests of up to ``ACK_HANDLES_MAX`` at most; None: all) and
        hand each waiting ack its answer. A request's error is each of its acks' error; cancelled, its acks get
        ``ConnectionClosedError`` (the subscription ended before the answer came)."""
        while self._acks and requests != 0:
            batch = [self._acks.popleft() for _ in range(min(len(self._acks), ACK_HANDLES_MAX))]
            try:
                errors: list[MillpondError | None] = await self._settle(
                    "queue_ack", tuple(p.handle for p in batch), {})
            except MillpondError as exc:
                errors = [exc] * len(batch)
            except BaseException:
                for p in batch:
                    p.error = ConnectionClosedError("the subscription ended before the ack was answered")
                    p.done.set()
                raise
            for p, error in zip(batch, errors):
                p.error = error
                p.done.set()
            if requests is not None:
                requests -= 1

    async def _settle_one(self, api: str, message: QueueMessage, extra: dict[str, Any]) -> None:
        [error] = await self._settle(api, (message,), extra)
        if error is not None:
            raise error

    async def _settle(self, api: str, messages: tuple[QueueMessage | str, ...],
                      extra: dict[str, Any]) -> list[MillpondError | None]:
        conn = self._conn
        assert conn is not None, "the subscription is not open"
        handles = [m.receipt_handle if isinstance(m, QueueMessage) else m for m in messages]
        answer = await conn.request(api, {"queue": self.queue.name, "subscription": self.id,
                                          "receipt_handles": handles} | extra, self.queue.client.request_timeout_s)
        out: list[MillpondError | None] = [None] * len(handles)
        for f in answer["failed"]:
            out[int(f["id"])] = _failure(f)
        self._counts["acked" if api == "queue_ack" else "nacked"] += out.count(None)
        self._reported(answer["unacked"])
        return out

    def statistics(self) -> SubscriptionStatistics:
        c = self._counts
        return SubscriptionStatistics(self.prefetch, c["delivered"], c["acked"], c["nacked"],
                                      c["delivered"] - c["acked"] - c["nacked"], self._broker_unacked,
                                      self._broker_unacked_max)


class _PendingAck:
    """One ``msg.ack()`` waiting in a gathered request: its handle, then its answer (``error`` None: deleted)."""

    __slots__ = ("handle", "done", "error")

    def __init__(self, handle: str, done: Any) -> None:
        self.handle = handle
        self.done = done
        self.error: MillpondError | None = None
