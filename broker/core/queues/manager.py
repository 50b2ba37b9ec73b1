# Every queue of a broker and the rules between a caller and a queue, as Amazon SQS defines them: create (same
# attributes: idempotent), delete, attributes, purge, send (delays, FIFO groups, deduplication), receive (receipt
# handles, receive counts, lazy dead-letter redrive), delete and change visibility by receipt handle. Each change
# is an event applied to the queues (queue.py) and kept in `events` for the journal to append; replay applies the
# same events. Pure: `now` monotonic seconds and `now_ms` wall-clock ms are handed in; must not know about
# storage, waiting, clocks or any protocol.
from __future__ import annotations

import hashlib
import math
import re
import secrets
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

from sortedcontainers import SortedSet

from millpond.broker.core.queues.attributes import (
    DELAY_S_MAX,
    VISIBILITY_TIMEOUT_S_MAX,
    QueueAttributes,
    check_attributes,
    check_id,
    check_message_attributes,
    check_queue_name,
    check_seconds,
    message_size,
)
from millpond.broker.core.queues.ids import MessageIds
from millpond.broker.core.queues.queue import IN_FLIGHT, VISIBLE, Message, Queue
from millpond.broker.core.queues.redrive import MoveTasks
from millpond.broker.wire.errors import (
    InvalidConfigError,
    InvalidParameterValueError,
    MillpondError,
    MissingParameterError,
    QueueAlreadyExistsError,
    QueueFullError,
    ReceiptHandleInvalidError,
    UnknownQueueError,
)

_HANDLE = re.compile(r"([0-9a-f]{16}):([0-9]{1,19}):([0-9]{1,19})")
Event = tuple  # ("create"|"attrs"|"drop"|"purge"|"send"|"recv"|"vis"|"del"|"mv*", queue name, ...): see apply()


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as a receive hands it out, with its system attributes (as SQS ReceiveMessage's)."""

    message_id: str
    receipt_handle: str
    body: bytes
    attributes: dict[str, Any]
    receive_count: int  # ApproximateReceiveCount, this delivery included
    sent_ms: int  # SentTimestamp, wall-clock ms
    first_receive_ms: int  # ApproximateFirstReceiveTimestamp, wall-clock ms
    group_id: str | None
    dedup_id: str | None
    sequence_number: int | None  # FIFO queues: the message's place in the queue
    dead_letter_source: str | None  # DeadLetterQueueSourceArn: the queue it was moved from


class Outgoing(NamedTuple):
    """One message for ``QueueManager.send_batch``: ``send``'s arguments. Hot paths build it with
    ``tuple.__new__(Outgoing, (...))`` (a NamedTuple's own ``__new__`` costs a Python frame per message)."""

    body: bytes
    attributes: dict[str, Any] | None = None
    delay_s: float | None = None  # standard queues; None: the queue's delay
    group_id: str | None = None
    dedup_id: str | None = None
    message_id: str | None = None  # None: a new one from ids.py
    origin: tuple[str, int, int] | None = None  # fan-out: (subscription id, partition, offset)


class QueueManager:
    """The queues. Each call first runs the timers of the queue it touches; ``tick(now)`` runs every queue's.
    A refused call raises a ``MillpondError`` subclass and changes nothing. After a call, ``events`` holds what it
    changed (``take_events()``), ``wake`` was called with each queue that may now deliver."""

    def __init__(self, wake: Callable[[str], None] = lambda name: None, *, messages_max: int = 1_000_000) -> None:
        self.queues: dict[str, Queue] = {}
        self.messages_max = messages_max  # per queue: a send past it is refused (QUEUE_FULL); moves never are
        self.wake = wake
        self.events: list[Event] = []
        self._deadlines: SortedSet = SortedSet()  # (deadline, name) per queue with a timer
        self._deadline_of: dict[str, float] = {}
        # queues whose deadline may have moved: rescheduled once, when the deadlines are next read (next_deadline,
        # tick), rather than once per message of a batch
        self._stale: set[str] = set()
        self._ids = MessageIds()
        self.tasks = MoveTasks(self)  # dead-letter redrive tasks, each driven by its DLQ's timer
        # fan-out's exactly-once check: subscription id -> partition -> next record offset already sent (journaled
        # with the send itself, so a crash between the send and the subscription's cursor save cannot duplicate)
        self.origins: dict[str, dict[int, int]] = {}

    def take_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    # -- time -----------------------------------------------------------------------------------------------------
    def next_deadline(self) -> float:
        """When ``tick`` next has work (monotonic seconds; ``inf``: nothing scheduled)."""
        if self._stale:
            self._reschedule_stale()
        return self._deadlines[0][0] if self._deadlines else math.inf

    def tick(self, now: float) -> None:
        """Run every queue's timers due at ``now`` (visibility timeouts and delays ending, retention, the
        deduplication window, redrive tasks' moves), waking the queues where a message became visible."""
        self._reschedule_stale()
        while self._deadlines and self._deadlines[0][0] <= now:
            self._advance(self.queues[self._deadlines[0][1]], now, step=True)
            self._reschedule_stale()

    def _advance(self, q: Queue, now: float, step: bool = False) -> Queue:
        if q.advance(now):
            self.wake(q.name)
        if step:  # moves only from tick, so a refused request never leaves moves unwritten behind it
            self.tasks.step(q, now)
        self._stale.add(q.name)
        return q

    def _reschedule_stale(self) -> None:
        """Put each queue whose timers changed since the last call back in ``_deadlines`` at its next deadline."""
        stale, self._stale = self._stale, set()
        deadline_of, deadlines = self._deadline_of, self._deadlines
        for name in stale:
            old = deadline_of.get(name)
            q = self.queues.get(name)
            d = math.inf if q is None else min(q.next_deadline(), self.tasks.deadline(q))
            if d == old:
                continue  # most requests leave the queue's next deadline where it was: no sorted-set churn
            if old is not None:
                del deadline_of[name]
                deadlines.discard((old, name))
            if d != math.inf:
                deadline_of[name] = d
                deadlines.add((d, name))

    def queue(self, name: str, now: float) -> Queue:
        """Queue ``name`` with its timers run to ``now``. Raises ``UnknownQueueError``."""
        q = self.queues.get(name)
        if q is None:
            raise UnknownQueueError(f"queue {name!r} does not exist", queue=name)
        return self._advance(q, now)

    # -- events ---------------------------------------------------------------------------------------------------
    def emit(self, event: Event, now: float) -> None:
        self.apply(event, now)
        self.events.append(event)

    def apply(self, event: Event, now: float) -> None:
        """Apply one event (live, or replayed from the journal: an event for a queue that is gone is skipped)."""
        kind, name = event[0], event[1]
        if kind == "create":
            attrs = QueueAttributes.from_record(event[2])
            self.queues[name] = Queue(name, attrs, event[3], event[4])
            return
        q = self.queues.get(name)
        if q is None:
            return
        if kind == "send":
            _, _, seq, mid, body, attributes, sent_ms, enqueued_at, visible_at, group_id, dedup_id, source = event[:12]
            if len(event) > 12:  # sent by a fan-out subscription: (subscription id, partition, offset)
                sub, partition, offset = event[12]
                self._mark(sub, partition, offset + 1)
            q.apply_send(Message(seq, mid, body, attributes, sent_ms, enqueued_at, visible_at, group_id, dedup_id,
                                 source), now)
            if visible_at <= now:
                self.wake(name)
        elif kind == "recv":
            q.apply_receive(event[2], event[3], event[4], event[5], event[6], now)
        elif kind == "vis":
            q.apply_visibility(event[2], event[3], now)
            if event[3] <= now:
                self.wake(name)
        elif kind == "del":
            q.apply_delete(event[2])
            if q.fifo:
                self.wake(name)  # its group may deliver again
        elif kind == "purge":
            q.apply_purge()
        elif kind == "attrs":
            q.apply_attributes(QueueAttributes.from_record(event[2]), event[3])
        elif kind == "drop":
            del self.queues[name]
            self.tasks.dropped(name)
            self.wake(name)  # its long polls answer UNKNOWN_QUEUE
        elif kind in ("mvstart", "mvmoved", "mvend"):
            self.tasks.apply(event, q, now)
        else:
            raise ValueError(f"unknown queue event {kind!r}")
        self._stale.add(name)

    # -- queues ---------------------------------------------------------------------------------------------------
    def create(self, name: str, attrs: QueueAttributes, now: float, now_ms: int) -> Queue:
        """Create queue ``name`` (as SQS CreateQueue): with equal attributes an existing queue is answered as it is;
        different ones raise ``QueueAlreadyExistsError``. A dead-letter queue must exist and be of the same type.
        Raises ``InvalidQueueNameError``, ``InvalidConfigError``."""
        check_attributes(check_queue_name(name), attrs)
        existing = self.queues.get(name)
        if existing is not None:
            if existing.attrs != attrs:
                raise QueueAlreadyExistsError(f"queue {name!r} exists with other attributes", queue=name)
            return self._advance(existing, now)
        self._check_dead_letter_queue(name, attrs)
        self.emit(("create", name, attrs.to_record(), secrets.token_hex(8), now_ms), now)
        return self.queues[name]

    def _check_dead_letter_queue(self, name: str, attrs: QueueAttributes) -> None:
        if attrs.dead_letter_queue is None:
            return
        dlq = self.queues.get(attrs.dead_letter_queue)
        if dlq is None:
            raise InvalidConfigError(f"queue {name!r}: dead-letter queue {attrs.dead_letter_queue!r} does not exist",
                                     attribute="dead_letter_queue")
        if dlq.fifo != attrs.fifo:
            raise InvalidConfigError(f"queue {name!r}: the dead-letter queue of a {'FIFO' if attrs.fifo else 'standard'}"
                                     " queue must be one too", attribute="dead_letter_queue")

    def set_attributes(self, name: str, changes: dict[str, Any], now: float, now_ms: int) -> Queue:
        """Change some attributes (as SQS SetQueueAttributes); a queue's type never changes. Raises
        ``UnknownQueueError``, ``InvalidConfigError``."""
        q = self.queue(name, now)
        if "fifo" in changes and changes["fifo"] != q.fifo:
            raise InvalidConfigError("a queue's type (fifo) cannot change", attribute="fifo")
        record = {**q.attrs.to_record(), **changes}
        attrs = check_attributes(name, QueueAttributes.from_record(record))
        self._check_dead_letter_queue(name, attrs)
        if attrs != q.attrs:
            self.emit(("attrs", name, attrs.to_record(), now_ms), now)
        return q

    def delete(self, name: str, now: float) -> None:
        """Delete a queue and its messages (as SQS DeleteQueue). Raises ``UnknownQueueError``."""
        self.queue(name, now)
        self.emit(("drop", name), now)

    def purge(self, name: str, now: float) -> None:
        """Delete every message, delayed and in flight too, and clear the FIFO deduplication window (as SQS
        PurgeQueue, done at once). Raises ``UnknownQueueError``."""
        self.queue(name, now)
        self.emit(("purge", name), now)

    # -- messages -------------------------------------------------------------------------------------------------
    def send(self, name: str, body: bytes, now: float, now_ms: int, *, attributes: dict[str, Any] | None = None,
             delay_s: float | None = None, group_id: str | None = None,
             dedup_id: str | None = None, check_only: bool = False, message_id: str | None = None,
             origin: tuple[str, int, int] | None = None) -> tuple[str, int | None]:
        """Store one message (as SQS SendMessage); returns ``(message id, sequence number or None)``. ``delay_s``
        (0-900 s) overrides the queue's delay on standard queues; FIFO queues take the queue's only. A FIFO message
        needs ``group_id`` and a deduplication id (``dedup_id``, or the SHA-256 of the body with content-based
        deduplication); one whose id was sent within 5 minutes is accepted and not stored: the first one's id and
        sequence number are answered. A queue holding ``messages_max`` messages refuses a send. ``check_only``:
        raise what a send would raise now, store nothing (answers ``("", None)``). Raises
        ``UnknownQueueError``, ``InvalidParameterValueError``, ``MissingParameterError``, ``QueueFullError``.

        A message id is a UUID string from ids.py, unique across restarts. Fan-out's sends give ``message_id``
        and ``origin`` ``(subscription id, partition, offset)``, journaled with the message: ``origin_next`` then
        answers past that offset."""
        entry = Outgoing(body, attributes, delay_s, group_id, dedup_id, message_id, origin)
        if check_only:
            self._admissible(self.queue(name, now), entry)
            return "", None
        result = self.send_batch(name, (entry,), now, now_ms)[0]
        if isinstance(result, MillpondError):
            raise result
        return result

    def send_batch(self, name: str, entries: Sequence[Outgoing], now: float, now_ms: int, *,
                   stop_at_error: bool = False) -> list[tuple[str, int | None] | MillpondError]:
        """Store several messages in order, each as ``send`` would (as SQS SendMessageBatch: an answer per entry,
        a refused entry does not stop the others); returns, per entry, ``(message id, sequence number or None)``
        or the ``MillpondError`` refusing it. ``stop_at_error``: nothing after the first refused entry is looked
        at (the list ends with that error), so a caller that must keep order (fan-out) can handle it and go on.
        One call runs the queue's timers once, wakes its waiters once and moves its deadline once. Raises
        ``UnknownQueueError`` (nothing stored)."""
        q = self.queue(name, now)
        fifo = q.fifo
        events = self.events
        messages = q.messages
        results: list[tuple[str, int | None] | MillpondError] = []
        append = results.append
        default_delay, bytes_max, depth_max = q.attrs.delay_s, q.attrs.message_bytes_max, self.messages_max
        visible = False
        run: list[Any] | None = None  # [subscription, partition, next offset] of the fan-out marks to set
        stored: list[Message] = []  # not yet applied to the queue: one call applies them together
        for e in entries:
            body, attributes, delay_s, group_id, dedup_id, mid, origin = e
            if (fifo or attributes or delay_s is not None or group_id is not None or dedup_id is not None or not body
                    or len(body) > bytes_max or len(messages) + len(stored) >= depth_max):
                if stored:  # what is checked next sees the queue with them (its depth, FIFO duplicates)
                    q.apply_sends(stored, now)
                    stored = []
                try:
                    attributes, dedup_id, duplicate = self._admissible(q, e)
                except MillpondError as exc:
                    append(exc)
                    if stop_at_error:
                        break
                    continue
                if duplicate is not None:
                    append(duplicate)
                    continue
            else:  # the common case, checked above: a body within bounds, nothing else
                attributes = {}
            seq = q.next_seq + len(stored)
            if mid is None:
                mid = self._ids.next()
            body = bytes(body)
            visible_at = now + (default_delay if delay_s is None else delay_s)
            if origin is None:
                event: Event = ("send", name, seq, mid, body, attributes, now_ms, now, visible_at, group_id,
                                dedup_id, None)
            else:
                event = ("send", name, seq, mid, body, attributes, now_ms, now, visible_at, group_id, dedup_id,
                         None, origin)
                sub, partition, offset = origin
                if run is None or run[0] != sub or run[1] != partition:
                    if run is not None:
                        self._mark(run[0], run[1], run[2])
                    run = [sub, partition, offset + 1]
                elif offset >= run[2]:
                    run[2] = offset + 1
            # the same change apply() makes of the event, without reading it back
            stored.append(Message(seq, mid, body, attributes, now_ms, now, visible_at, group_id, dedup_id, None))
            events.append(event)
            append((mid, seq if fifo else None))
            if visible_at <= now:
                visible = True
        if stored:
            q.apply_sends(stored, now)
        if run is not None:
            self._mark(run[0], run[1], run[2])
        if visible:
            self.wake(name)
        self._stale.add(name)
        return results

    def _mark(self, sub: str, partition: int, next_offset: int) -> None:
        """Fan-out subscription ``sub`` has sent records of ``partition`` below ``next_offset``."""
        marks = self.origins.get(sub)
        if marks is None:
            marks = self.origins[sub] = {}
        if marks.get(partition, 0) < next_offset:
            marks[partition] = next_offset

    def _admissible(self, q: Queue, e: Outgoing) -> tuple[dict[str, Any], str | None, tuple[str, int] | None]:
        """``(attributes, deduplication id, duplicate)`` of a message ``q`` would take now: ``duplicate`` is the
        ``(message id, seq)`` a FIFO deduplication id was sent with within 5 minutes (then nothing is stored).
        Raises what ``send`` raises."""
        body, attributes = e.body, e.attributes
        if not body:
            raise InvalidParameterValueError("the message body must not be empty", parameter="body")
        if attributes:
            size = message_size(body, check_message_attributes(attributes))
        else:
            attributes, size = {}, len(body)
        if size > q.attrs.message_bytes_max:
            raise InvalidParameterValueError(
                f"message must be at most {q.attrs.message_bytes_max} bytes, got {size} (body and attributes)",
                parameter="body")
        delay_s, group_id, dedup_id = e.delay_s, e.group_id, e.dedup_id
        if delay_s is not None:
            check_seconds("delay_s", delay_s, DELAY_S_MAX)
        if group_id is not None:
            check_id("group_id", group_id)
        if dedup_id is not None:
            check_id("dedup_id", dedup_id)
        if q.fifo:
            if delay_s is not None:
                raise InvalidParameterValueError(
                    f"value {delay_s:g} for parameter delay_s is invalid: a FIFO queue takes the queue's delay only",
                    parameter="delay_s")
            if group_id is None:
                raise MissingParameterError(f"queue {q.name!r} is FIFO: a message needs a group_id",
                                            parameter="group_id")
            if dedup_id is None:
                if not q.attrs.content_based_deduplication:
                    raise InvalidParameterValueError(
                        f"queue {q.name!r} is FIFO without content-based deduplication: a message needs a dedup_id",
                        parameter="dedup_id")
                dedup_id = hashlib.sha256(body).hexdigest()
            duplicate = q.duplicate_of(dedup_id)
            if duplicate is not None:
                return attributes, dedup_id, duplicate
        elif dedup_id is not None:
            raise InvalidParameterValueError("dedup_id is valid on FIFO queues only", parameter="dedup_id")
        if len(q.messages) >= self.messages_max:
            raise QueueFullError(f"queue {q.name!r} holds {len(q.messages)} messages, its bound (queue_messages_max)",
                                 queue=q.name, messages_max=self.messages_max)
        return attributes, dedup_id, None

    def origin_next(self, subscription: str, partition: int) -> int:
        """The offset after the last record of ``partition`` that fan-out subscription ``subscription`` sent into
        any queue (0: none)."""
        marks = self.origins.get(subscription)
        return 0 if marks is None else marks.get(partition, 0)

    def forget_origin(self, subscription: str) -> None:
        """Drop the marks of a subscription that is gone."""
        self.origins.pop(subscription, None)

    def receive(self, name: str, max_messages: int, now: float, now_ms: int, *,
                visibility_timeout_s: float | None = None, bytes_max: int | None = None) -> list[Delivery]:
        """Up to ``max_messages`` visible messages (as SQS ReceiveMessage, without waiting: the caller long-polls).
        Each delivery mints a new receipt handle, counts one more receive and hides the message for the queue's
        visibility timeout or ``visibility_timeout_s`` (0-43,200 s). ``bytes_max``: messages stop before their
        sizes (as ``message_size``) pass it, one message always goes (an answer frame's room). A message whose receive count would exceed the
        redrive policy's ``max_receive_count`` is moved to the dead-letter queue instead (as SQS, lazily, at
        receive time; not moved if that queue was deleted since). Raises ``UnknownQueueError``,
        ``InvalidParameterValueError``."""
        q = self.queue(name, now)
        if max_messages < 1:
            raise InvalidParameterValueError(f"max_messages must be >= 1, got {max_messages}",
                                             parameter="max_messages")
        timeout = q.attrs.visibility_timeout_s if visibility_timeout_s is None else check_seconds(
            "visibility_timeout_s", visibility_timeout_s, VISIBILITY_TIMEOUT_S_MAX)
        limit = q.attrs.max_receive_count
        dlq = self.queues.get(q.attrs.dead_letter_queue or "")
        if dlq is not None:
            self._advance(dlq, now)
        chosen: list[Message] = []
        moved: list[Message] = []
        room = math.inf if bytes_max is None else bytes_max
        for m in q.deliverable():
            if dlq is not None and limit is not None and m.receive_count + 1 > limit:
                moved.append(m)
                continue
            room -= message_size(m.body, m.attributes)
            if room < 0 and chosen:
                break
            chosen.append(m)
            if len(chosen) == max_messages:
                break
        for m in moved:
            self._move(q, m, dlq, now)  # type: ignore[arg-type]
        out = []
        for m in chosen:
            first_ms = now_ms if m.first_receive_ms < 0 else m.first_receive_ms
            self.emit(("recv", name, m.seq, m.receive_count + 1, now + timeout, now, first_ms), now)
            out.append(self._delivery(q, m))
        return out

    def _move(self, q: Queue, m: Message, dlq: Queue, now: float) -> None:
        """Move a dead letter: a new message of the dead-letter queue with the same id, body, attributes and
        enqueue time (retention keeps counting from the first send, as SQS); FIFO: same group, and the message id
        as its deduplication id (as SQS)."""
        dedup = m.message_id if dlq.fifo else None
        self.emit(("send", dlq.name, dlq.next_seq, m.message_id, m.body, m.attributes, m.sent_ms, m.enqueued_at, now,
                   m.group_id, dedup, q.name), now)
        self.emit(("del", q.name, m.seq), now)

    @staticmethod
    def _delivery(q: Queue, m: Message) -> Delivery:
        return Delivery(m.message_id, f"{q.incarnation}:{m.seq}:{m.receive_count}", m.body, m.attributes,
                        m.receive_count, m.sent_ms, m.first_receive_ms, m.group_id, m.dedup_id,
                        m.seq if q.fifo else None, m.source)

    def _handle(self, q: Queue, handle: str) -> tuple[int, int]:
        found = _HANDLE.fullmatch(handle) if isinstance(handle, str) else None
        if found is None or found.group(1) != q.incarnation:
            raise ReceiptHandleInvalidError(f"the receipt handle {str(handle)[:100]!r} is not valid for queue "
                                            f"{q.name!r}", queue=q.name)
        seq, n = int(found.group(2)), int(found.group(3))
        m = q.messages.get(seq)
        if seq >= q.next_seq or n < 1 or (m is not None and n > m.receive_count):
            raise ReceiptHandleInvalidError(f"the receipt handle {handle!r} was never given out by queue {q.name!r}",
                                            queue=q.name)
        return seq, n

    def delete_message(self, name: str, receipt_handle: str, now: float) -> None:
        """Delete a message by receipt handle (as SQS DeleteMessage). The newest handle deletes it, in flight or
        visible again; deleting again, or a message already gone, succeeds; an older handle, after the message was
        received again, succeeds and deletes nothing (SQS: "might not be deleted"; here never, so a new delivery is
        not lost). FIFO queues refuse a handle whose visibility timeout ended (as SQS: "the receipt handle has
        expired"). Raises ``UnknownQueueError``, ``ReceiptHandleInvalidError``, ``InvalidParameterValueError``."""
        q = self.queue(name, now)
        seq, n = self._handle(q, receipt_handle)
        m = q.messages.get(seq)
        if m is None or n < m.receive_count:
            return
        if q.fifo and m.state != IN_FLIGHT:
            raise InvalidParameterValueError(f"the receipt handle {receipt_handle!r} has expired", queue=name)
        self.emit(("del", name, seq), now)

    def change_visibility(self, name: str, receipt_handle: str, visibility_timeout_s: float, now: float) -> None:
        """Hide an in-flight message for ``visibility_timeout_s`` (0-43,200 s) counted from now, for this delivery
        only; 0 makes it visible at once (as SQS ChangeMessageVisibility). The total since the receive may not pass
        12 hours. A delivery whose timeout already ended, or an older handle, changes nothing and succeeds (as
        SQS); a deleted message is an error. Raises ``UnknownQueueError``, ``ReceiptHandleInvalidError``,
        ``InvalidParameterValueError``."""
        q = self.queue(name, now)
        check_seconds("visibility_timeout_s", visibility_timeout_s, VISIBILITY_TIMEOUT_S_MAX)
        seq, n = self._handle(q, receipt_handle)
        m = q.messages.get(seq)
        if m is None:
            raise InvalidParameterValueError(
                "the message does not exist or is not available for a visibility timeout change", queue=name)
        if n < m.receive_count or m.state != IN_FLIGHT:
            return
        if now + visibility_timeout_s - m.received_at > VISIBILITY_TIMEOUT_S_MAX:
            raise InvalidParameterValueError(
                f"visibility_timeout_s {visibility_timeout_s:g} would keep the message in flight past 12 hours "
                f"since it was received ({now - m.received_at:g} s ago)", parameter="visibility_timeout_s")
        self.emit(("vis", name, seq, now + visibility_timeout_s), now)

    # -- counts ---------------------------------------------------------------------------------------------------
    def counts(self, name: str, now: float) -> tuple[int, int, int]:
        """``(visible, in flight, delayed)`` messages (SQS's ApproximateNumberOfMessages, ...NotVisible,
        ...Delayed), exact here."""
        q = self.queue(name, now)
        return q.counts[VISIBLE], q.counts[IN_FLIGHT], q.counts[0]


__all__ = ["Delivery", "Event", "Outgoing", "QueueManager"]
