# The client's side of SQS-style queues: `Client.queue(name)` returns a `Queue` (send, send_batch, receive with long
# polling, delete, change_visibility, purge, attributes), and the records it answers with. Seconds and bytes in the
# API, milliseconds on the wire (docs/protocol.md "Queues"). Must not know the broker's insides: speaks only the
# protocol's maps through `Client.request`.
from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from millpond.broker.wire.errors import MillpondError, from_wire
from millpond.client._gather import Batch
from millpond.client._protocol import _seconds_to_ms
from millpond.client._seconds import seconds_api
from millpond.client.types import BrokerLimits

if TYPE_CHECKING:
    from millpond.client._client import Client
    from millpond.client.redrive import MoveTask
    from millpond.client.subscription import Subscription
    from millpond.client.worker import Worker

__all__ = ["Queue", "QueueInfo", "QueueMessage", "SendResult", "queue_attributes_body"]

# the protocol's bounds (docs/protocol.md "Queues"), which gathered calls keep to
BATCH_BYTES_MAX = 1_048_576  # a send batch's bodies and attributes together
RECEIVE_MESSAGES_MAX = 1000  # messages one receive asks for
FIFO_SUFFIX = ".fifo"

_ATTRIBUTES = ("visibility_timeout_s", "delay_s", "retention_s", "message_bytes_max", "receive_wait_s",
               "dead_letter_queue", "max_receive_count", "content_based_deduplication")  # fifo: from the name


@dataclass(frozen=True, slots=True)
class QueueMessage:
    """One received message: ``receipt_handle`` deletes it or changes its visibility (this delivery only);
    ``receive_count`` counts this delivery; ``sent_ms``/``first_receive_ms``: wall-clock epoch ms, timestamps of the
    message as a record's (SQS's SentTimestamp and ApproximateFirstReceiveTimestamp are epoch ms too);
    ``sequence_number``: FIFO queues only; ``dead_letter_source``: the queue it was moved from, in a DLQ."""

    message_id: str
    receipt_handle: str
    body: bytes
    attributes: dict[str, Any]
    receive_count: int
    sent_ms: int
    first_receive_ms: int
    group_id: str | None
    dedup_id: str | None
    sequence_number: int | None
    dead_letter_source: str | None


@dataclass(frozen=True, slots=True)
class SendResult:
    """What a send answers: the message id (for a FIFO duplicate, the first message's) and, on FIFO queues, its
    sequence number."""

    message_id: str
    sequence_number: int | None


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue's attributes (seconds, bytes) and its message counts (visible, in flight, delayed); ``created_s``,
    ``modified_s``: when it was created and its attributes last changed, wall-clock epoch seconds (float; SQS's
    CreatedTimestamp and LastModifiedTimestamp are epoch seconds)."""

    name: str
    fifo: bool
    visibility_timeout_s: float
    delay_s: float
    retention_s: float
    message_bytes_max: int
    receive_wait_s: float
    dead_letter_queue: str | None
    max_receive_count: int | None
    content_based_deduplication: bool
    messages_visible: int
    messages_in_flight: int
    messages_delayed: int
    created_s: float
    modified_s: float


def queue_attributes_body(attrs: dict[str, Any]) -> dict[str, Any]:
    """Queue attributes as the protocol's map (``x_s`` seconds -> ``x_ms``). Raises TypeError for an unknown one."""
    body: dict[str, Any] = {}
    for name, value in attrs.items():
        if name not in _ATTRIBUTES:
            raise TypeError(f"unknown queue attribute {name!r}; known: {', '.join(_ATTRIBUTES)}")
        if value is not None:
            if name.endswith("_s"):
                body[name[:-2] + "_ms"] = _seconds_to_ms(value, name)
            else:
                body[name] = value
    return body


def parse_queue_info(body: dict[str, Any]) -> QueueInfo:
    values = {}
    for f in fields(QueueInfo):
        if f.name.endswith("_s"):
            values[f.name] = body[f.name[:-2] + "_ms"] / 1000
        else:
            values[f.name] = body[f.name]
    return QueueInfo(**values)


def _message(m: dict[str, Any]) -> QueueMessage:
    return QueueMessage(**{f.name: m[f.name] for f in fields(QueueMessage)})


def _handle(message: QueueMessage | str) -> str:
    return message.receipt_handle if isinstance(message, QueueMessage) else message


def _failure(f: dict[str, Any]) -> MillpondError:
    return from_wire(int(f["code"]), {"name": f["name"], "message": f["message"]})


@seconds_api
class Queue:
    """One queue of a client (``client.queue(name)``); cheap to make, holds no state but the name."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    async def send(self, body: bytes, *, attributes: dict[str, str | int | float | bytes] | None = None,
                   delay_s: float | None = None, group_id: str | None = None,
                   dedup_id: str | None = None) -> SendResult:
        """Send one message, answered once durable (as SQS SendMessage). ``attributes``: at most 10, values
        strings, numbers or bytes; ``delay_s`` (0-900, standard queues): hidden that long first; FIFO queues need
        ``group_id``, and ``dedup_id`` unless the queue deduplicates by content. Raises ``UnknownQueueError``,
        ``InvalidParameterValueError``, ``MissingParameterError``.

        Sends that tasks of this client make together (in one turn of the event loop) leave as one batch request
        (docs/queues.md "Gathered calls"); each still gets its own answer or error."""
        [result] = await self._send([_send_body(body, attributes, delay_s, group_id, dedup_id)], single=True)
        if isinstance(result, MillpondError):
            raise result
        return result

    async def send_batch(self, messages: Iterable[bytes | dict[str, Any]]) -> list[SendResult | MillpondError]:
        """Send 1-1,000 messages (SQS: 1-10), at most 1 MiB together, in one request (as SQS SendMessageBatch):
        each a body, or a dict of ``send``'s keywords with ``body``. Returns, in order, a ``SendResult`` or the
        error refusing that message. Batches sent together by tasks of this client may share a request
        (docs/queues.md "Gathered calls")."""
        entries = []
        for i, m in enumerate(messages):
            m = dict(m) if isinstance(m, Mapping) else {"body": m}
            if "body" not in m:
                raise TypeError(f"send_batch: message {i} has no 'body' (a message is a body, or a dict of send()'s "
                                "keywords with 'body')")
            entries.append(_send_body(m.pop("body"), m.pop("attributes", None), m.pop("delay_s", None),
                                      m.pop("group_id", None), m.pop("dedup_id", None), **m))
        return await self._send(entries, single=False)

    async def _send(self, entries: list[dict[str, Any]], *, single: bool) -> list[SendResult | MillpondError]:
        size = sum(_entry_size(e) for e in entries)
        call = _Call(entries, single)
        most = batch_entries_max(self.client._conn)
        if not 1 <= len(entries) <= most or size > BATCH_BYTES_MAX or not all(map(_plain, entries)):
            return (await self._send_calls([call]))[0]  # cannot share a request: alone; the broker says what is wrong
        return await self.client._gathering.submit(("send", self.name), self._send_gathered, call,
                                                   count=len(entries), count_max=most, size=size,
                                                   size_max=BATCH_BYTES_MAX)

    async def _send_gathered(self, batch: Batch[_Call]) -> list[list[SendResult | MillpondError]]:
        return await self._send_calls(batch.entries)

    async def _send_calls(self, calls: list[_Call]) -> list[list[SendResult | MillpondError]]:
        """One request for the calls' entries (send's maps): send_message for a lone ``send``, else
        send_message_batch. Per-entry results per call; an error of the whole request (a retriable one, an
        unknown queue) is raised."""
        if len(calls) == 1 and calls[0].single:
            answer = await self.client.request("send_message", calls[0].items[0] | {"queue": self.name})
            return [[SendResult(answer["message_id"], answer["sequence_number"])]]
        entries = [e for c in calls for e in c.items]
        answer = await self.client.request("send_message_batch", {
            "queue": self.name, "entries": [e | {"id": str(i)} for i, e in enumerate(entries)]})
        out: list[SendResult | MillpondError] = [MillpondError("no answer")] * len(entries)
        for r in answer["successful"]:
            out[int(r["id"])] = SendResult(r["message_id"], r["sequence_number"])
        for f in answer["failed"]:
            out[int(f["id"])] = _failure(f)
        return _split(out, calls)

    async def receive(self, max_messages: int = 1, *, wait_s: float | None = None,
                      visibility_timeout_s: float | None = None) -> list[QueueMessage]:
        """Up to ``max_messages`` (1-1,000; SQS: 10) messages, each hidden for the queue's visibility timeout or
        ``visibility_timeout_s``. Long polls up to ``wait_s`` (0-20 s; None: the queue's ``receive_wait_s``),
        answering as soon as one message is receivable; an empty list when none came. Under a receive limit
        policy (docs/protocol.md "Limits") it may get fewer than ``max_messages``; one answered THROTTLED waits
        ``retry_after_s`` and asks again, raising ``ThrottledError`` only past the request's timeout. A receive
        given up by its caller (cancelled, or a timeout around it) while the broker still waits: messages it gets
        after all are made receivable again as soon as that answer comes (their receive count still grew, as for any
        receive), not left hidden for their visibility timeout.

        On a standard queue, receives that tasks of this client make together with the same options leave as one
        request for all their messages, shared out in call order (docs/queues.md "Gathered calls"); on a FIFO queue
        each receive is a request of its own, so one group's messages never split between callers."""
        if not isinstance(max_messages, int) or isinstance(max_messages, bool) or not 1 <= max_messages <= \
                RECEIVE_MESSAGES_MAX or self.name.endswith(FIFO_SUFFIX):
            return await self._receive(max_messages, wait_s, visibility_timeout_s)  # the broker names what is wrong
        wait_ms = None if wait_s is None else _seconds_to_ms(wait_s, "wait_s")
        vis_ms = None if visibility_timeout_s is None else _seconds_to_ms(visibility_timeout_s,
                                                                           "visibility_timeout_s")
        deadline = None if wait_ms is None else time.monotonic() + wait_ms / 1000
        while True:
            got = await self.client._gathering.submit(("receive", self.name, wait_ms, vis_ms), self._receive_gathered,
                                                      max_messages, count=max_messages,
                                                      count_max=RECEIVE_MESSAGES_MAX, lost=self._release_taken)
            if got is not None:
                return got
            # the request's messages went to the callers before this one: wait on for what is left of wait_s
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                wait_ms = round(left * 1000)

    async def _receive(self, max_messages: int, wait_s: float | None,
                       visibility_timeout_s: float | None) -> list[QueueMessage]:
        body: dict[str, Any] = {"queue": self.name, "max_messages": max_messages}
        if wait_s is not None:
            body["wait_ms"] = _seconds_to_ms(wait_s, "wait_s")
        if visibility_timeout_s is not None:
            body["visibility_timeout_ms"] = _seconds_to_ms(visibility_timeout_s, "visibility_timeout_s")
        timeout = self.client.request_timeout_s + (20.0 if wait_s is None else wait_s)
        answer = await self.client.request("receive_messages", body, timeout_s=timeout, on_late=self._release_late)
        return [_message(m) for m in answer["messages"]]

    async def _receive_gathered(self, batch: Batch[int]) -> list[list[QueueMessage] | None]:
        """One receive for the batch's callers' messages together, shared out in call order; a caller left without
        any, when others got some, gets None (it asks again); what a caller that stopped waiting would have had is
        made receivable again at once."""
        _, _, wait_ms, vis_ms = batch.key
        got = await self._receive(batch.count, None if wait_ms is None else wait_ms / 1000,
                                  None if vis_ms is None else vis_ms / 1000)
        if not got:
            return [[] for _ in batch.entries]
        out: list[list[QueueMessage] | None] = []
        taken = 0
        for i, wanted in enumerate(batch.entries):
            if i in batch.gone or taken >= len(got):
                out.append(None)
                continue
            out.append(got[taken:taken + wanted])
            taken += wanted
        if taken < len(got):
            self._release([m.receipt_handle for m in got[taken:]])
        return out

    def _release_late(self, conn: Any, response: Any) -> None:
        """The answer to a receive its caller gave up: whatever it took is made receivable again at once."""
        try:
            messages = response.result()["messages"]
        except Exception:  # an error answer: nothing was taken
            return
        self._release([m["receipt_handle"] for m in messages], conn)

    def _release_taken(self, messages: list[QueueMessage] | None) -> None:
        """What a gathered receive got for a caller that left before taking it: receivable again at once."""
        if messages:
            self._release([m.receipt_handle for m in messages])

    def _release(self, handles: list[str], conn: Any = None) -> None:
        """Make received messages receivable again at once, nobody waiting for the answer."""
        conn = conn or self.client._conn
        if conn is None:
            return  # no connection: they come back when their visibility timeout ends
        most = batch_entries_max(conn)
        for i in range(0, len(handles), most):
            conn.send_later("change_visibility_batch",
                            {"queue": self.name, "entries": _visibility_entries(handles[i:i + most], 0)})

    async def delete(self, message: QueueMessage | str) -> None:
        """Delete a received message by its receipt handle (as SQS DeleteMessage): the newest handle deletes it;
        again succeeds; an older one, after the message was received again, deletes nothing. Raises
        ``ReceiptHandleInvalidError``; on FIFO queues ``InvalidParameterValueError`` once its timeout ended.
        Deletes made together leave as one batch request (docs/queues.md "Gathered calls")."""
        [error] = await self._settle("delete", [_handle(message)], None, single=True)
        if error is not None:
            raise error

    async def delete_batch(self, messages: Iterable[QueueMessage | str]) -> list[MillpondError | None]:
        """Delete 1-1,000 messages (SQS: 1-10) in one request; returns, in order, None or the error refusing that
        one. Batches deleted together by tasks of this client may share a request."""
        return await self._settle("delete", [_handle(m) for m in messages], None, single=False)

    async def change_visibility(self, message: QueueMessage | str, visibility_timeout_s: float) -> None:
        """Hide a received message for ``visibility_timeout_s`` (0-43,200) from now; 0 makes it receivable at once
        (as SQS ChangeMessageVisibility). Raises ``InvalidParameterValueError`` if the message was deleted.
        Changes to the same timeout made together leave as one batch request (docs/queues.md "Gathered calls")."""
        ms = _seconds_to_ms(visibility_timeout_s, "visibility_timeout_s")
        [error] = await self._settle("visibility", [_handle(message)], ms, single=True)
        if error is not None:
            raise error

    async def change_visibility_batch(self, messages: Iterable[QueueMessage | str],
                                      visibility_timeout_s: float) -> list[MillpondError | None]:
        """``change_visibility`` for 1-1,000 messages (SQS: 1-10) in one request; returns, in order, None or the
        error refusing that one."""
        ms = _seconds_to_ms(visibility_timeout_s, "visibility_timeout_s")
        return await self._settle("visibility", [_handle(m) for m in messages], ms, single=False)

    async def _settle(self, kind: str, handles: list[str], ms: int | None, *,
                      single: bool) -> list[MillpondError | None]:
        """Deletes (``kind`` "delete") or visibility changes to ``ms``, gathered with those of other tasks."""
        call = _Call(handles, single)
        most = batch_entries_max(self.client._conn)
        if not 1 <= len(handles) <= most or not all(isinstance(h, str) for h in handles):
            return (await self._settle_calls(kind, ms, [call]))[0]  # alone: the broker says what is wrong
        return await self.client._gathering.submit((kind, self.name, ms), self._settle_gathered, call,
                                                   count=len(handles), count_max=most)

    async def _settle_gathered(self, batch: Batch[_Call]) -> list[list[MillpondError | None]]:
        kind, _, ms = batch.key
        return await self._settle_calls(kind, ms, batch.entries)

    async def _settle_calls(self, kind: str, ms: int | None, calls: list[_Call]) -> list[list[MillpondError | None]]:
        """One request for the calls' receipt handles: delete_message / change_visibility for a lone single call,
        else the batch request; per-entry errors per call."""
        if len(calls) == 1 and calls[0].single:
            body = {"queue": self.name, "receipt_handle": calls[0].items[0]}
            if kind == "delete":
                await self.client.request("delete_message", body)
            else:
                await self.client.request("change_visibility", body | {"visibility_timeout_ms": ms})
            return [[None]]
        handles = [h for c in calls for h in c.items]
        if kind == "delete":
            answer = await self.client.request("delete_message_batch", {
                "queue": self.name, "entries": [{"id": str(i), "receipt_handle": h} for i, h in enumerate(handles)]})
        else:
            answer = await self.client.request("change_visibility_batch",
                                               {"queue": self.name, "entries": _visibility_entries(handles, ms)})
        out: list[MillpondError | None] = [None] * len(handles)
        for f in answer["failed"]:
            out[int(f["id"])] = _failure(f)
        return _split(out, calls)

    def worker(self, handler: Callable[[Any], Any], **options: Any) -> Worker:
        """A worker runner on this queue, as Lambda's SQS trigger: ``async with q.worker(handler, ...) as w:``
        long-polls with ``concurrency`` pollers (default 1) for up to ``batch_size`` messages (default 10; up to
        10,000, FIFO 10), gathered for up to ``batch_window_s`` (0-300, not FIFO); calls ``handler(message)`` for
        each, or with ``batch=True`` ``handler(messages)`` once, which returns None (all done), Lambda's
        ``{"batchItemFailures": [{"itemIdentifier": message_id}]}`` or the failed messages (a raise fails the
        whole batch). Deletes what succeeded; a failure comes back after its visibility timeout, or after
        ``backoff_s`` doubled per receive (up to ``backoff_max_s``) when set. On FIFO queues a failure also fails
        the rest of its group in that batch, so order is kept. While a handler runs, its messages' visibility is
        extended every half ``visibility_timeout_s`` (default: the queue's). The handler may be a coroutine
        function or a plain one (which then runs on the event loop: keep it short). See ``client.worker.Worker``
        for stopping."""
        from millpond.client.worker import Worker

        return Worker(self, handler, **options)

    def subscribe(self, prefetch: int, *, visibility_timeout_s: float | None = None) -> Subscription:
        """Push delivery with a prefetch window (RabbitMQ's consumer prefetch, AMQP basic.qos): ``async with
        q.subscribe(prefetch=10) as sub: async for msg in sub: ...; await msg.ack()`` (or ``msg.nack(delay_s=)``).
        The broker pushes messages as they become visible, never more than ``prefetch`` (1-1,000)
        unacknowledged; leaving the block, or the connection dropping, makes the unsettled ones visible again at
        once. See ``client.subscription.Subscription``."""
        from millpond.client.subscription import Subscription

        return Subscription(self, prefetch, visibility_timeout_s)

    async def start_redrive(self, *, to: str | None = None, messages_per_second: int | None = None) -> str:
        """Start moving the messages this dead-letter queue holds now back to the queue each came from, or all to
        ``to``, ``messages_per_second`` at a time (1-10,000; SQS: 1-500; default 500), as SQS StartMessageMoveTask;
        messages arriving later stay. Returns the task handle. Raises ``UnknownQueueError``;
        ``InvalidParameterValueError`` if this queue is no queue's dead-letter queue, already has a running task,
        or ``to`` is this queue or of the other type."""
        from millpond.client import redrive

        return await redrive.start(self, to, messages_per_second)

    async def cancel_redrive(self, task_handle: str | None = None) -> int:
        """Stop a running redrive task of this queue (None: its running one), as SQS CancelMessageMoveTask: what
        moved stays moved. Returns how many messages it moved. Raises ``ResourceNotFoundError`` (no such task),
        ``InvalidParameterValueError`` (not running)."""
        from millpond.client import redrive

        return await redrive.cancel(self, task_handle)

    async def redrive_tasks(self, max_results: int = 10) -> list[MoveTask]:
        """This queue's ``max_results`` (1-10) most recent redrive tasks, newest first, with their progress (as SQS
        ListMessageMoveTasks)."""
        from millpond.client import redrive

        return await redrive.tasks(self, max_results)

    async def purge(self) -> None:
        """Delete every message of the queue, in flight and delayed too (as SQS PurgeQueue)."""
        await self.client.request("purge_queue", {"name": self.name})

    async def attributes(self) -> QueueInfo:
        """The queue's attributes and message counts."""
        return parse_queue_info(await self.client.request("get_queue_attributes", {"name": self.name}))

    async def set_attributes(self, **attrs: Any) -> QueueInfo:
        """Change attributes (as ``Client.create_queue``'s keywords); ``dead_letter_queue=""`` removes the
        redrive policy."""
        return parse_queue_info(await self.client.request(
            "set_queue_attributes", queue_attributes_body(attrs) | {"name": self.name}))


def batch_entries_max(conn: Any) -> int:
    """Entries one send, delete or change-visibility batch request may carry on ``conn``: what its broker announced
    at the handshake (``BrokerLimits.queue_batch_entries_max``; SQS's 10 where it did not say, or before)."""
    limits = None if conn is None else conn.protocol.limits
    return (limits or _NO_LIMITS).queue_batch_entries_max


_NO_LIMITS = BrokerLimits(0, 0, 0, 0)  # its queue_batch_entries_max: the default, SQS's


class _Call:
    """One caller's share of a gathered request: its entries (send maps or receipt handles), and whether it was a
    single-message call (``send``, ``delete``, ``change_visibility``), which alone goes as the single request."""

    __slots__ = ("items", "single")

    def __init__(self, items: list[Any], single: bool) -> None:
        self.items = items
        self.single = single


def _split(results: list[Any], calls: list[_Call]) -> list[list[Any]]:
    """A gathered request's per-entry results, cut back into each call's."""
    out, i = [], 0
    for c in calls:
        out.append(results[i:i + len(c.items)])
        i += len(c.items)
    return out


_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1  # the integers msgpack encodes


def _plain(entry: dict[str, Any]) -> bool:
    """A send entry whose fields have the types the protocol takes, so the broker can only refuse it alone (an
    entry of the wrong shape would make it refuse the whole request: such a call is not gathered)."""
    attributes = entry.get("attributes", {})
    return (isinstance(attributes, dict)
            and all(isinstance(k, str) and isinstance(v, (str, int, float, bytes)) and not isinstance(v, bool)
                    and (not isinstance(v, int) or _INT_MIN <= v <= _INT_MAX) for k, v in attributes.items())
            and isinstance(entry.get("group_id", ""), str) and isinstance(entry.get("dedup_id", ""), str))


def _visibility_entries(handles: list[str], visibility_timeout_ms: int | None) -> list[dict[str, Any]]:
    """A change_visibility_batch's entries: one per receipt handle, ids by position."""
    return [{"id": str(i), "receipt_handle": h, "visibility_timeout_ms": visibility_timeout_ms}
            for i, h in enumerate(handles)]


def _entry_size(entry: dict[str, Any]) -> int:
    """What a send entry counts against a batch's bytes, as the broker counts it: the body, and each attribute's
    name and value (a number as its decimal text)."""
    size = len(entry["body"])
    for name, value in entry.get("attributes", {}).items():
        size += len(name.encode()) + (len(value) if isinstance(value, bytes) else len(str(value).encode()))
    return size


def _send_body(body: bytes, attributes: Any, delay_s: float | None, group_id: str | None, dedup_id: str | None,
               **unknown: Any) -> dict[str, Any]:
    if unknown:
        raise TypeError(f"unknown message keys {sorted(unknown)}")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"a message body must be bytes, got {type(body).__name__} (encode str yourself, as "
                        "body.encode())")
    out: dict[str, Any] = {"body": bytes(body)}
    if attributes:
        out["attributes"] = dict(attributes)
    if delay_s is not None:
        out["delay_ms"] = _seconds_to_ms(delay_s, "delay_s")
    if group_id is not None:
        out["group_id"] = group_id
    if dedup_id is not None:
        out["dedup_id"] = dedup_id
    return out
