# The queues' live state as checkpoint records of __millpond_queues (broker/core/log/internal.py says what a
# checkpoint is and why each record restates its part of the state as it is when written): the fan-out marks, each
# queue (attributes, incarnation, next sequence number), its messages with their receive counts and timeouts, its
# FIFO deduplication window, its redrive tasks. Reads the manager's state (queue.py's deduplication window has no
# event of its own: an entry outlives its message, so it is read and restored here); owns the record layout.
# Pure: times arrive as arguments (monotonic s, stored as wall-clock ms as the journal's events are); must not know
# about storage, requests, clocks or trio.
from __future__ import annotations

from collections import deque
from typing import Any, Iterator

import msgpack

from millpond.broker.core.queues.attributes import QueueAttributes
from millpond.broker.core.queues.manager import QueueManager
from millpond.broker.core.queues.queue import Message, Queue
from millpond.broker.core.queues.redrive import RUNNING, TASKS_KEPT, MoveTask

ROWS_PER_RECORD = 256  # messages (or deduplication ids) per record at most: one record per message would cost more
ROW_BYTES_GUESS = 128  # a row's packed size until a record was packed
_pack = msgpack.Packer(use_bin_type=True).pack


class QueueStateWriter:
    """``StateWriter`` (internal.py) over a ``QueueManager``: the queues existing when it starts, each read again
    when its records are written (a queue deleted meanwhile is skipped; one created meanwhile is in the events). A
    record holds at most ``rows_per_record`` messages, fewer when the step's budget is smaller (a small step must
    stay small: packing 256 messages takes about 0.15 ms)."""

    def __init__(self, manager: QueueManager, rows_per_record: int = ROWS_PER_RECORD) -> None:
        self.manager = manager
        self.rows = rows_per_record
        self._now = 0.0
        self._now_ms = 0
        self._left = 0  # bytes the step may still write
        self._row_bytes = ROW_BYTES_GUESS  # a row's packed size, from the last record packed
        self._records = self._values()

    def chunk(self, now_ms: int, now: float | None, budget_bytes: int) -> list[tuple[bytes | None, bytes]] | None:
        self._now, self._now_ms = (0.0 if now is None else now), now_ms  # the times of the records it writes
        self._left = budget_bytes
        out: list[tuple[bytes | None, bytes]] = []
        for value in self._records:
            out.append((None, value))
            self._left -= len(value)
            if self._left <= 0:
                break
        return out or None

    def _ms(self, t: float) -> int:
        return self._now_ms + round((t - self._now) * 1000)

    def _take(self) -> int:
        """Rows for the next record: what the step's budget has room for, at least one."""
        return max(1, min(self.rows, self._left // self._row_bytes))

    def _packed(self, kind: str, q: Queue, rows: list[Any]) -> bytes:
        value = _pack([kind, q.name, q.incarnation, rows])
        self._row_bytes = max(1, len(value) // len(rows))
        return value

    def _values(self) -> Iterator[bytes]:
        m = self.manager
        queues = list(m.queues.values())
        for q in queues:
            if m.queues.get(q.name) is q:
                yield _pack(["queue", q.name, q.attrs.to_record(), q.incarnation, q.created_ms, q.modified_ms,
                             q.next_seq])
        for q in queues:
            seqs = list(q.messages)
            i = 0
            while i < len(seqs) and m.queues.get(q.name) is q:
                n = self._take()
                rows = [self._message(msg) for seq in seqs[i:i + n] if (msg := q.messages.get(seq)) is not None]
                i += n
                if rows:
                    yield self._packed("messages", q, rows)
            dedup = list(q._dedup) if q.fifo else []
            i = 0
            while i < len(dedup) and m.queues.get(q.name) is q:
                n = self._take()
                rows = [[d, self._ms(e[0]), e[1], e[2]] for d in dedup[i:i + n]
                        if (e := q._dedup.get(d)) is not None]
                i += n
                if rows:
                    yield self._packed("dedup", q, rows)
            if m.queues.get(q.name) is q:  # after its messages: a running task's messages are all loaded by then
                running = m.tasks.running.get(q.name)
                yield _pack(["tasks", q.name, q.incarnation, [_task(t) for t in m.tasks.recent.get(q.name, ())],
                             None if running is None else running.handle])
        # last: a fan-out send replayed before its queue's record is skipped, its mark with it; this restates it
        yield _pack(["origins", [[sub, sorted(marks.items())] for sub, marks in m.origins.items()]])

    def _message(self, msg: Message) -> list[Any]:
        received = msg.receive_count > 0
        return [msg.seq, msg.message_id, msg.body, msg.attributes, msg.sent_ms, self._ms(msg.enqueued_at),
                self._ms(msg.visible_at), msg.group_id, msg.dedup_id, msg.source, msg.receive_count,
                msg.first_receive_ms, self._ms(msg.received_at) if received else None]


def _task(t: MoveTask) -> list[Any]:
    return [t.handle, t.destination, t.rate_given, t.started_ms, t.to_move, t.moved, t.status, t.failure_reason,
            t.bound]


def load(manager: QueueManager, value: bytes, now: float, now_ms: int) -> None:
    """Restore one checkpoint record into ``manager`` (replay at ``now``/``now_ms``). What the manager holds
    already is kept: a queue, message or deduplication id there was replayed from the event that made it, and every
    event after that, so it is as the record says (and a message's sequence number is never placed twice); a
    queue's redrive tasks are replaced (their oldest may predate the replay). A record of a queue that is gone, or
    was created again since, is skipped. Raises
    ``ValueError``, ``TypeError``, ``KeyError``, ``IndexError`` or ``msgpack.UnpackException`` for a record that is
    not one."""
    fields = msgpack.unpackb(value, raw=False)
    if not isinstance(fields, list) or not fields or not isinstance(fields[0], str):
        raise ValueError(f"not a queue checkpoint record: {fields!r}"[:200])
    kind = fields[0]

    def mono(t_ms: int) -> float:
        return now + (int(t_ms) - now_ms) / 1000

    if kind == "origins":
        for sub, marks in fields[1]:
            mine = manager.origins.setdefault(sub, {})
            for partition, offset in marks:
                mine[partition] = max(mine.get(partition, 0), offset)
        return
    if kind == "queue":
        _, name, attrs_record, incarnation, created_ms, modified_ms, next_seq = fields
        attrs = QueueAttributes.from_record(attrs_record)
        q = manager.queues.get(name)
        if q is None or q.incarnation != incarnation:
            if q is not None:
                manager.tasks.dropped(name)
            q = manager.queues[name] = Queue(name, attrs, incarnation, created_ms)
            q.modified_ms = modified_ms
            q.next_seq = next_seq
        return
    q = manager.queues.get(fields[1])
    if q is None or q.incarnation != fields[2]:
        return
    if kind == "messages":
        for (seq, mid, body, attributes, sent_ms, enqueued_ms, visible_ms, group_id, dedup_id, source, count,
             first_ms, received_ms) in fields[3]:
            if seq in q.messages:
                continue  # its send was replayed, and every event after it: it is as this row says
            msg = Message(seq, mid, body, attributes, sent_ms, mono(enqueued_ms), mono(visible_ms), group_id, None,
                          source)
            q.apply_send(msg, now)  # without its deduplication id: the window is restored as it was, below
            msg.dedup_id = dedup_id
            if count:
                q.apply_receive(seq, count, mono(visible_ms), mono(received_ms), first_ms, now)
    elif kind == "dedup":
        for dedup_id, expires_ms, mid, seq in fields[3]:
            if dedup_id in q._dedup:
                continue  # replayed from its send on, as a message
            expires = mono(expires_ms)
            q._dedup[dedup_id] = (expires, mid, seq)
            q._dedup_expiry.add((expires, dedup_id))
    elif kind == "tasks":  # the queue's last record: every message of it is loaded
        seqs = list(q.messages)
        if any(a > b for a, b in zip(seqs, seqs[1:])):  # sends replayed before the rows of older messages
            stored = sorted(q.messages.items())
            q.messages.clear()
            q.messages.update(stored)  # dict order is seq order again, as redrive.py relies on
        tasks = manager.tasks
        tasks.dropped(q.name)
        kept: deque[MoveTask] = deque(maxlen=TASKS_KEPT)
        for handle, destination, rate_given, started_ms, to_move, moved, status, failure, bound in fields[3]:
            t = MoveTask(handle, q, destination, rate_given, started_ms, now)
            t.bound, t.to_move, t.moved, t.status, t.failure_reason = bound, to_move, moved, status, failure
            # still to move: what it held at the start and holds now (seqs below the bound came before the start)
            t.pending = [s for s in q.messages if s < bound] if status == RUNNING else []
            if handle == fields[4]:
                tasks.running[q.name] = t
            kept.append(t)
        if kept:
            tasks.recent[q.name] = kept
    else:
        raise ValueError(f"unknown queue checkpoint record {kind!r}")


__all__ = ["QueueStateWriter", "ROWS_PER_RECORD", "load"]
