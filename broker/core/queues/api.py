# The queues' requests and their handlers (SQS's API, in millpond's names and units): queues, attributes, purge,
# send and send-batch (through the limits' admission check, as a produce), receive with long polling (bounded by
# the limits' receive policies), delete and change visibility by receipt handle, one at a time or in batches. Every
# change is journaled and answered once durable; a receive with nothing to give waits on its queue's wake key.
# Sans-IO like every core: must not know about any wire protocol, sockets, clocks or trio.
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from millpond.broker.core.log import LogManager, PartitionLog
from millpond.broker.core.outcomes import Answer, Context, Outcome, Wait
from millpond.broker.core.queues.attributes import (
    BATCH_BYTES_MAX,
    BATCH_ENTRIES_MAX,
    RECEIVE_WAIT_S_MAX,
    QueueAttributes,
    check_entry_id,
    check_seconds,
    message_size,
)
from millpond.broker.core.queues.journal import QueueJournal
from millpond.broker.core.queues.manager import Delivery, Outgoing, QueueManager
from millpond.broker.core.queues.queue import Queue
from millpond.broker.core.queues.redrive import MoveTask
from millpond.broker.wire.errors import InvalidParameterValueError, InvalidRequestError, MillpondError

RECEIVE_MESSAGES_MAX = 1000  # SQS allows 10 per receive; millpond allows more (docs/protocol.md)

MessageAttributes = dict[str, str | int | float | bytes]


def queue_key(name: str) -> Hashable:
    """The wake key of one queue: woken when a message may have become receivable, or the queue was deleted."""
    return ("queue", name)


# -- requests -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SetQueueAttributes:
    """As SQS SetQueueAttributes: the fields given change; ``dead_letter_queue=""`` removes the redrive policy."""

    name: str
    visibility_timeout_s: float | None = None
    delay_s: float | None = None
    retention_s: float | None = None
    message_bytes_max: int | None = None
    receive_wait_s: float | None = None
    dead_letter_queue: str | None = None
    max_receive_count: int | None = None
    content_based_deduplication: bool | None = None


@dataclass(frozen=True, slots=True)
class CreateQueue(SetQueueAttributes):
    """As SQS CreateQueue; ``None``: SQS's default (attributes.QueueAttributes); ``fifo`` None: from the name."""

    fifo: bool | None = None


@dataclass(frozen=True, slots=True)
class GetQueueAttributes:
    name: str


@dataclass(frozen=True, slots=True)
class DeleteQueue:
    name: str


@dataclass(frozen=True, slots=True)
class PurgeQueue:
    name: str


@dataclass(frozen=True, slots=True)
class ListQueues:
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class SendMessage:
    queue: str
    body: bytes
    attributes: MessageAttributes | None = None
    delay_s: float | None = None  # standard queues only; None: the queue's delay
    group_id: str | None = None  # FIFO queues: required
    dedup_id: str | None = None  # FIFO queues: required unless content-based deduplication


@dataclass(frozen=True, slots=True)
class SendEntry:
    id: str  # the caller's name for the entry in the answer: 1-80 characters of [A-Za-z0-9_-], distinct
    body: bytes
    attributes: MessageAttributes | None = None
    delay_s: float | None = None
    group_id: str | None = None
    dedup_id: str | None = None


@dataclass(frozen=True, slots=True)
class SendMessageBatch:
    queue: str
    entries: tuple[SendEntry, ...]


@dataclass(frozen=True, slots=True)
class ReceiveMessages:
    queue: str
    max_messages: int = 1  # 1-1000 (SQS: 1-10)
    wait_s: float | None = None  # long poll, 0-20 s; None: the queue's receive_wait_s
    visibility_timeout_s: float | None = None  # None: the queue's
    max_bytes: int | None = None  # bodies and attributes of the answer; None: the broker's bound (one always goes)


@dataclass(frozen=True, slots=True)
class DeleteMessage:
    queue: str
    receipt_handle: str


@dataclass(frozen=True, slots=True)
class DeleteEntry:
    id: str
    receipt_handle: str


@dataclass(frozen=True, slots=True)
class DeleteMessageBatch:
    queue: str
    entries: tuple[DeleteEntry, ...]


@dataclass(frozen=True, slots=True)
class ChangeVisibility:
    queue: str
    receipt_handle: str
    visibility_timeout_s: float


@dataclass(frozen=True, slots=True)
class VisibilityEntry:
    id: str
    receipt_handle: str
    visibility_timeout_s: float


@dataclass(frozen=True, slots=True)
class ChangeVisibilityBatch:
    queue: str
    entries: tuple[VisibilityEntry, ...]


@dataclass(frozen=True, slots=True)
class StartMessageMoveTask:
    """As SQS StartMessageMoveTask: move the messages dead-letter queue ``source`` holds now to ``destination``
    (None: each to the queue it came from) at ``messages_per_second`` (1-10,000; SQS: 1-500; None: 500)."""

    source: str
    destination: str | None = None
    messages_per_second: int | None = None


@dataclass(frozen=True, slots=True)
class CancelMessageMoveTask:
    task_handle: str


@dataclass(frozen=True, slots=True)
class ListMessageMoveTasks:
    source: str
    max_results: int = 1  # 1-10, newest first (as SQS)


# -- answers ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue's attributes and approximate counts (exact here), as SQS GetQueueAttributes with ``All``."""

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
    created_ms: int
    modified_ms: int


@dataclass(frozen=True, slots=True)
class Queues:
    queues: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MessageSent:
    message_id: str
    sequence_number: int | None  # FIFO queues only


@dataclass(frozen=True, slots=True)
class SentEntry:
    id: str
    message_id: str
    sequence_number: int | None


@dataclass(frozen=True, slots=True)
class BatchFailure:
    """One refused entry of a batch: the error's code and name (broker/wire/errors.py) and its message."""

    id: str
    code: int
    name: str
    message: str


@dataclass(frozen=True, slots=True)
class BatchSent:
    successful: tuple[SentEntry, ...]
    failed: tuple[BatchFailure, ...]


@dataclass(frozen=True, slots=True)
class BatchDone:
    successful: tuple[str, ...]  # entry ids
    failed: tuple[BatchFailure, ...]


@dataclass(frozen=True, slots=True)
class Received:
    messages: tuple[Delivery, ...]


@dataclass(frozen=True, slots=True)
class MoveTaskStarted:
    task_handle: str


@dataclass(frozen=True, slots=True)
class MoveTaskCancelled:
    messages_moved: int


@dataclass(frozen=True, slots=True)
class MoveTaskInfo:
    """A redrive task as SQS ListMessageMoveTasks shows it: ``status`` RUNNING, COMPLETED, CANCELLED or FAILED
    (``failure_reason`` then); ``destination`` and ``messages_per_second`` None when not given; ``started_ms``
    wall-clock ms; ``messages_to_move``: what the queue held at the start."""

    task_handle: str
    status: str
    source: str
    destination: str | None
    messages_per_second: int | None
    messages_moved: int
    messages_to_move: int
    failure_reason: str | None
    started_ms: int


@dataclass(frozen=True, slots=True)
class MoveTaskList:
    tasks: tuple[MoveTaskInfo, ...]


# -- handlers -----------------------------------------------------------------------------------------------------
class QueueApi:
    """Answers the queue requests over one ``QueueManager`` journaled in ``log`` (None: memory only).
    ``when_durable(plog, offset, answer)`` holds an answer until the journal is durable up to ``offset``;
    ``wake`` wakes keys; ``admit(ctx, queue=, records=, nbytes=) -> delay_s`` is the limits' admission check
    of a send (raises when refused); ``receivable(ctx, queue=, wanted=) -> int`` the messages a receive may take
    now (raises ``ThrottledError`` when none) and ``received(ctx, queue=, records=)`` charges what it took (the
    limits' receive policies); ``bytes_max`` bounds the bodies and attributes of one receive's answer;
    ``messages_max`` one queue's depth."""

    def __init__(self, log: LogManager | None, *, wake: Callable[[Hashable], None],
                 when_durable: Callable[[PartitionLog, int, Callable[[], Outcome]], Outcome],
                 admit: Callable[..., float] = lambda ctx, **charge: 0.0,
                 receivable: Callable[..., int] = lambda ctx, *, queue, wanted: wanted,
                 received: Callable[..., None] = lambda ctx, **charge: None, bytes_max: int = 8 * 1024 * 1024,
                 messages_max: int = 1_000_000) -> None:
        self.manager = QueueManager(lambda name: wake(queue_key(name)), messages_max=messages_max)
        self.journal = QueueJournal(log)
        self.when_durable = when_durable
        self.admit = admit
        self.receivable = receivable
        self.received = received
        self.bytes_max = bytes_max
        self._held_until: dict[tuple[str, str], float] = {}  # (queue, client id) -> end of its last shaped send

    def open(self, ctx: Context) -> None:
        """Replay the journal (blocking file work: call before serving)."""
        self.journal.open(self.manager, ctx.now, ctx.now_ms)
        self._journal(ctx)  # what the timers due at open changed (a redrive task completing)

    def next_deadline(self) -> float:
        return self.manager.next_deadline()

    def tick(self, ctx: Context) -> None:
        """Run the queues' timers due at ``ctx.now`` (waking the queues where a message became visible) and
        journal the redrive tasks' moves (nobody waits for them to be durable)."""
        self.manager.tick(ctx.now)
        self._journal(ctx)

    def handlers(self) -> dict[type, Callable[[Any, Context], Outcome]]:
        return {
            CreateQueue: self.create_queue, SetQueueAttributes: self.set_attributes,
            GetQueueAttributes: self.get_attributes, DeleteQueue: self.delete_queue, PurgeQueue: self.purge,
            ListQueues: self.list_queues, SendMessage: self.send, SendMessageBatch: self.send_batch,
            ReceiveMessages: self.receive, DeleteMessage: self.delete, DeleteMessageBatch: self.delete_batch,
            ChangeVisibility: self.change_visibility, ChangeVisibilityBatch: self.change_visibility_batch,
            StartMessageMoveTask: self.start_move_task, CancelMessageMoveTask: self.cancel_move_task,
            ListMessageMoveTasks: self.list_move_tasks,
        }

    def _journal(self, ctx: Context) -> int:
        return self.journal.append(self.manager.take_events(), ctx.now, ctx.now_ms)

    def _durable(self, ctx: Context, value: Any) -> Outcome:
        """``Answer(value)`` once what this request changed, and what came before it, is durable."""
        end = self._journal(ctx)
        plog = self.journal.plog
        return Answer(value) if plog is None else self.when_durable(plog, end, lambda: Answer(value))

    def _info(self, q: Queue) -> QueueInfo:
        a = q.attrs
        visible, in_flight, delayed = q.counts[1], q.counts[2], q.counts[0]
        return QueueInfo(q.name, a.fifo, a.visibility_timeout_s, a.delay_s, a.retention_s, a.message_bytes_max,
                         a.receive_wait_s, a.dead_letter_queue, a.max_receive_count, a.content_based_deduplication,
                         visible, in_flight, delayed, q.created_ms, q.modified_ms)

    # -- queues ---------------------------------------------------------------------------------------------------
    def create_queue(self, req: CreateQueue, ctx: Context) -> Outcome:
        given = {f.name: getattr(req, f.name) for f in dataclasses.fields(req) if f.name != "name"}
        given = {k: v for k, v in given.items() if v is not None}
        given.setdefault("fifo", req.name.endswith(".fifo"))
        q = self.manager.create(req.name, QueueAttributes(**given), ctx.now, ctx.now_ms)
        return self._durable(ctx, self._info(q))

    def set_attributes(self, req: SetQueueAttributes, ctx: Context) -> Outcome:
        changes = {f.name: getattr(req, f.name) for f in dataclasses.fields(req) if f.name != "name"}
        changes = {k: v for k, v in changes.items() if v is not None}
        if changes.get("dead_letter_queue") == "":
            changes["dead_letter_queue"] = changes["max_receive_count"] = None
        q = self.manager.set_attributes(req.name, changes, ctx.now, ctx.now_ms)
        return self._durable(ctx, self._info(q))

    def get_attributes(self, req: GetQueueAttributes, ctx: Context) -> Outcome:
        return Answer(self._info(self.manager.queue(req.name, ctx.now)))

    def delete_queue(self, req: DeleteQueue, ctx: Context) -> Outcome:
        self.manager.delete(req.name, ctx.now)
        return self._durable(ctx, None)

    def purge(self, req: PurgeQueue, ctx: Context) -> Outcome:
        self.manager.purge(req.name, ctx.now)
        return self._durable(ctx, None)

    def list_queues(self, req: ListQueues, ctx: Context) -> Outcome:
        return Answer(Queues(tuple(sorted(n for n in self.manager.queues if n.startswith(req.prefix)))))

    # -- messages -------------------------------------------------------------------------------------------------
    def _admitted(self, ctx: Context, queue: str, records: int, nbytes: int,
                  then: Callable[[Context], Outcome]) -> Outcome:
        """``then(ctx)`` once the limits admit ``records`` messages of ``nbytes`` to ``queue`` (scopes
        ``queue:NAME`` and ``client:ID``, units requests, records and bytes, as a produce): now, or after a shaping
        policy's delay. A client's sends to one queue never overtake its shaped ones (FIFO order holds). Raises
        ``ThrottledError``, ``CostExceedsLimitError``, ``LimitPolicyFailedError``, having changed nothing."""
        self.manager.queue(queue, ctx.now)
        delay_s = self.admit(ctx, queue=queue, records=records, nbytes=nbytes)
        key = (queue, ctx.client_id)
        held = self._held_until.get(key)
        if held is not None and held <= ctx.now:
            del self._held_until[key]
            held = None
        if delay_s <= 0 and held is None:
            return then(ctx)
        until = max(ctx.now + delay_s, held or 0.0)
        self._held_until[key] = until
        return Wait((), until, lambda ctx, _: then(ctx))

    def send(self, req: SendMessage, ctx: Context) -> Outcome:
        """As SQS SendMessage: checked, then admitted (a refused message is not charged), then stored (checked
        again: a shaping delay may have changed the queue)."""
        def go(ctx: Context, check_only: bool = False) -> Any:
            mid, seq = self.manager.send(req.queue, req.body, ctx.now, ctx.now_ms, attributes=req.attributes,
                                         delay_s=req.delay_s, group_id=req.group_id, dedup_id=req.dedup_id,
                                         check_only=check_only)
            return None if check_only else self._durable(ctx, MessageSent(mid, seq))

        go(ctx, check_only=True)
        return self._admitted(ctx, req.queue, 1, message_size(req.body, req.attributes or {}), go)

    def send_batch(self, req: SendMessageBatch, ctx: Context) -> Outcome:
        """As SQS SendMessageBatch: 1-1,000 entries (SQS: 10) with distinct ids, at most 1 MiB together; then an
        answer per entry (a refused entry does not stop the others)."""
        self.manager.queue(req.queue, ctx.now)
        _check_batch("send_message_batch", [e.id for e in req.entries])
        total = sum(message_size(e.body, e.attributes or {}) for e in req.entries)
        if total > BATCH_BYTES_MAX:
            raise InvalidRequestError(f"send_message_batch: the entries come to {total} bytes, more than "
                                      f"{BATCH_BYTES_MAX}", field="entries")
        return self._admitted(ctx, req.queue, len(req.entries), total, lambda ctx: self._send_entries(req, ctx))

    def _send_entries(self, req: SendMessageBatch, ctx: Context) -> Outcome:
        results = self.manager.send_batch(
            req.queue, [Outgoing(e.body, e.attributes, e.delay_s, e.group_id, e.dedup_id) for e in req.entries],
            ctx.now, ctx.now_ms)
        sent, failed = [], []
        for e, result in zip(req.entries, results):
            if isinstance(result, MillpondError):
                failed.append(BatchFailure(e.id, result.code, result.name, result.message))
            else:
                sent.append(SentEntry(e.id, result[0], result[1]))
        return self._durable(ctx, BatchSent(tuple(sent), tuple(failed)))

    def receive(self, req: ReceiveMessages, ctx: Context) -> Outcome:
        """As SQS ReceiveMessage with long polling: answered as soon as at least one message is receivable, or
        with none after ``wait_s``; then once its receive counts and timeouts are durable. The limits' receive
        policies are asked before messages are taken (at the call, and when a long poll is woken) and charged the
        answer: a client or queue past its rate is answered ``ThrottledError`` (``retry_after_s``) and takes
        nothing; one near it gets fewer messages than ``max_messages``."""
        q = self.manager.queue(req.queue, ctx.now)
        if not 1 <= req.max_messages <= RECEIVE_MESSAGES_MAX:
            raise InvalidParameterValueError(
                f"value {req.max_messages} for parameter max_messages is invalid: must be between 1 and "
                f"{RECEIVE_MESSAGES_MAX}", parameter="max_messages")
        wait_s = q.attrs.receive_wait_s if req.wait_s is None else check_seconds("wait_s", req.wait_s,
                                                                                 RECEIVE_WAIT_S_MAX)
        got = self._take(req, ctx)
        if got or wait_s <= 0:
            return self._answer_receive(req, ctx, got)
        keys, until = (queue_key(req.queue),), ctx.now + wait_s

        def resume(ctx: Context, timed_out: bool) -> Outcome:
            got = self._take(req, ctx)
            if got or timed_out:
                return self._answer_receive(req, ctx, got)
            return Wait(keys, until, resume)

        return Wait(keys, until, resume)

    def _answer_receive(self, req: ReceiveMessages, ctx: Context, got: tuple[Delivery, ...]) -> Outcome:
        self.received(ctx, queue=req.queue, records=len(got))
        return self._durable(ctx, Received(got))

    def _take(self, req: ReceiveMessages, ctx: Context) -> tuple[Delivery, ...]:
        q = self.manager.queue(req.queue, ctx.now)
        # nothing visible: nothing to take, the limits need not be asked
        wanted = self.receivable(ctx, queue=req.queue, wanted=req.max_messages) if q.counts[1] else req.max_messages
        got = self.manager.receive(req.queue, wanted, ctx.now, ctx.now_ms,
                                   visibility_timeout_s=req.visibility_timeout_s,
                                   bytes_max=self.bytes_max if req.max_bytes is None else min(req.max_bytes,
                                                                                              self.bytes_max))
        self._journal(ctx)  # dead letters moved while nothing was delivered are written too
        return tuple(got)

    def delete(self, req: DeleteMessage, ctx: Context) -> Outcome:
        self.manager.delete_message(req.queue, req.receipt_handle, ctx.now)
        return self._durable(ctx, None)

    def delete_batch(self, req: DeleteMessageBatch, ctx: Context) -> Outcome:
        self.manager.queue(req.queue, ctx.now)
        _check_batch("delete_message_batch", [e.id for e in req.entries])
        done, failed = [], []
        for e in req.entries:
            try:
                self.manager.delete_message(req.queue, e.receipt_handle, ctx.now)
                done.append(e.id)
            except MillpondError as exc:
                failed.append(BatchFailure(e.id, exc.code, exc.name, exc.message))
        return self._durable(ctx, BatchDone(tuple(done), tuple(failed)))

    def change_visibility(self, req: ChangeVisibility, ctx: Context) -> Outcome:
        self.manager.change_visibility(req.queue, req.receipt_handle, req.visibility_timeout_s, ctx.now)
        return self._durable(ctx, None)

    def change_visibility_batch(self, req: ChangeVisibilityBatch, ctx: Context) -> Outcome:
        self.manager.queue(req.queue, ctx.now)
        _check_batch("change_visibility_batch", [e.id for e in req.entries])
        done, failed = [], []
        for e in req.entries:
            try:
                self.manager.change_visibility(req.queue, e.receipt_handle, e.visibility_timeout_s, ctx.now)
                done.append(e.id)
            except MillpondError as exc:
                failed.append(BatchFailure(e.id, exc.code, exc.name, exc.message))
        return self._durable(ctx, BatchDone(tuple(done), tuple(failed)))

    # -- dead-letter redrive ----------------------------------------------------------------------------------------
    def start_move_task(self, req: StartMessageMoveTask, ctx: Context) -> Outcome:
        """See ``MoveTasks.start``; answered with the task handle once the start is durable."""
        handle = self.manager.tasks.start(req.source, req.destination, req.messages_per_second, ctx.now, ctx.now_ms)
        return self._durable(ctx, MoveTaskStarted(handle))

    def cancel_move_task(self, req: CancelMessageMoveTask, ctx: Context) -> Outcome:
        task = self.manager.tasks.cancel(req.task_handle, ctx.now)
        return self._durable(ctx, MoveTaskCancelled(task.moved))

    def list_move_tasks(self, req: ListMessageMoveTasks, ctx: Context) -> Outcome:
        tasks = self.manager.tasks.list(req.source, req.max_results, ctx.now)
        return Answer(MoveTaskList(tuple(_task_info(t) for t in tasks)))


def _task_info(t: MoveTask) -> MoveTaskInfo:
    return MoveTaskInfo(t.handle, t.status, t.source, t.destination, t.rate_given, t.moved, t.to_move,
                        t.failure_reason, t.started_ms)


def _check_batch(api: str, ids: list[str]) -> None:
    """1-1,000 entries (SQS: 1-10) with distinct valid ids (as SQS EmptyBatchRequest, TooManyEntriesInBatchRequest,
    BatchEntryIdsNotDistinct, InvalidBatchEntryId): a whole batch refused."""
    if not 1 <= len(ids) <= BATCH_ENTRIES_MAX:
        raise InvalidRequestError(f"{api}: a batch has 1-{BATCH_ENTRIES_MAX} entries, got {len(ids)}",
                                  field="entries")
    for i in ids:
        try:
            check_entry_id(i)
        except MillpondError as exc:
            raise InvalidRequestError(f"{api}: {exc}", field="entries") from None
    if len(set(ids)) != len(ids):
        raise InvalidRequestError(f"{api}: entry ids must be distinct", field="entries")


__all__ = [
    "BatchDone", "BatchFailure", "BatchSent", "CancelMessageMoveTask", "ChangeVisibility", "ChangeVisibilityBatch",
    "CreateQueue", "DeleteEntry", "DeleteMessage", "DeleteMessageBatch", "DeleteQueue", "GetQueueAttributes",
    "ListMessageMoveTasks", "ListQueues", "MessageSent", "MoveTaskCancelled", "MoveTaskInfo", "MoveTaskList",
    "MoveTaskStarted", "PurgeQueue", "QueueApi", "QueueInfo", "Queues", "ReceiveMessages", "Received", "SendEntry",
    "SendMessage", "SendMessageBatch", "SentEntry", "SetQueueAttributes", "StartMessageMoveTask", "VisibilityEntry",
    "queue_key",
]
