# Dead-letter redrive tasks (as SQS StartMessageMoveTask / CancelMessageMoveTask / ListMessageMoveTasks): moving
# the messages a dead-letter queue held when the task started back to their source queues, or to one queue, at a
# fixed rate. A task is driven by its DLQ's timer in the manager (`deadline`, then `step` from `tick`), and every
# change is an event ("mvstart", "mvmoved", "mvend", plus the moves' own "send" and "del"), so replay rebuilds
# it. Pure: times are monotonic seconds handed in; must not know about storage, waiting, clocks or any protocol.
from __future__ import annotations

import math
import secrets
from collections import deque
from typing import TYPE_CHECKING

from millpond.broker.core.queues.queue import Message, Queue
from millpond.broker.wire.errors import InvalidParameterValueError, ResourceNotFoundError

if TYPE_CHECKING:
    from millpond.broker.core.queues.manager import QueueManager

RUNNING, COMPLETED, CANCELLED, FAILED = "RUNNING", "COMPLETED", "CANCELLED", "FAILED"
RATE_DEFAULT = 500  # messages/s when none is given (SQS's largest fixed rate; SQS picks its own then)
RATE_MAX = 10_000  # SQS: 500
TASKS_KEPT = 10  # per dead-letter queue, the most recent first (as SQS ListMessageMoveTasks)


class MoveTask:
    """One redrive task. ``pending``: seqs the DLQ held at the start, oldest first (``head`` skips those gone);
    ``base``/``n``: the rate's schedule, the next move being due at ``base + (n + 1) / rate`` (``base`` None: no
    message could move at the last step, so the next one moves as soon as it can, without a catch-up burst)."""

    __slots__ = ("handle", "source", "destination", "rate_given", "rate", "started_ms", "to_move", "moved",
                 "status", "failure_reason", "bound", "pending", "head", "base", "n")

    def __init__(self, handle: str, source: Queue, destination: str | None, rate_given: int | None,
                 started_ms: int, now: float) -> None:
        self.handle = handle
        self.source = source.name
        self.destination = destination
        self.rate_given = rate_given
        self.rate = rate_given or RATE_DEFAULT
        self.started_ms = started_ms
        self.pending = list(source.messages)  # dict order is seq order: seqs only grow
        self.head = 0
        self.bound = source.next_seq  # messages arriving after the start are not moved (as SQS)
        self.to_move = len(self.pending)
        self.moved = 0
        self.status = RUNNING
        self.failure_reason: str | None = None
        self.base: float | None = now
        self.n = 0

    def remaining(self, q: Queue) -> bool:
        """Whether a message the DLQ held at the start is still there (moved, deleted or expired ones are not)."""
        while self.head < len(self.pending) and self.pending[self.head] not in q.messages:
            self.head += 1
        if self.head == len(self.pending):
            self.pending, self.head = [], 0
            return False
        return True

    def next_message(self, q: Queue) -> Message | None:
        """The oldest message to move that is visible now (FIFO: a group with a message in flight waits)."""
        m = next(q.deliverable(), None)
        return m if m is not None and m.seq < self.bound else None

    def due(self) -> float:
        return -math.inf if self.base is None else self.base + (self.n + 1) / self.rate


class MoveTasks:
    """The redrive tasks of a ``QueueManager``: one running task per dead-letter queue at most, and each DLQ's
    ``TASKS_KEPT`` most recent tasks."""

    def __init__(self, manager: QueueManager) -> None:
        self.manager = manager
        self.running: dict[str, MoveTask] = {}  # DLQ name -> its running task
        self.recent: dict[str, deque[MoveTask]] = {}  # DLQ name -> its tasks, newest first

    # -- requests -------------------------------------------------------------------------------------------------
    def start(self, source: str, destination: str | None, rate: int | None, now: float, now_ms: int) -> str:
        """Start moving the messages ``source`` holds now, ``rate`` per second (1-10,000; SQS: 1-500; None: 500),
        to ``destination``, or each to the queue it was moved from (its ``dead_letter_source``). Returns the task
        handle. ``source`` must be the dead-letter queue of some queue and have no running task; ``destination``
        must exist, differ from ``source`` and be of its type (as SQS). Raises ``UnknownQueueError``,
        ``InvalidParameterValueError``."""
        mgr = self.manager
        q = mgr.queue(source, now)
        if not any(o.attrs.dead_letter_queue == source for o in mgr.queues.values()):
            raise InvalidParameterValueError(f"queue {source!r} is not the dead-letter queue of any queue: a redrive "
                                             "task's source must be one (as SQS)", parameter="source")
        if source in self.running:
            raise InvalidParameterValueError(f"queue {source!r} has a running redrive task: one at a time per queue "
                                             "(as SQS)", parameter="source")
        if rate is not None and (isinstance(rate, bool) or not 1 <= rate <= RATE_MAX):
            raise InvalidParameterValueError(f"value {rate} for parameter messages_per_second is invalid: must be "
                                             f"between 1 and {RATE_MAX}", parameter="messages_per_second")
        if destination is not None:
            dest = mgr.queue(destination, now)
            if dest is q:
                raise InvalidParameterValueError("a redrive task's destination must differ from its source",
                                                 parameter="destination")
            if dest.fifo != q.fifo:
                raise InvalidParameterValueError(
                    f"a redrive task moves between queues of one type: {source!r} is "
                    f"{'FIFO' if q.fifo else 'standard'}, {destination!r} is not", parameter="destination")
        handle = f"{source}:{secrets.token_hex(8)}"
        # with the count: a replay runs no timers between events, so the DLQ may still hold messages that had
        # expired by the start
        mgr.emit(("mvstart", source, handle, destination, rate, now_ms, len(q.messages)), now)
        return handle

    def cancel(self, handle: str, now: float) -> MoveTask:
        """Stop a running task (as SQS CancelMessageMoveTask): what it moved stays moved, the rest stays in the
        dead-letter queue. Raises ``ResourceNotFoundError`` (no such task), ``InvalidParameterValueError`` (it is
        not running)."""
        source = handle.rsplit(":", 1)[0] if isinstance(handle, str) else ""
        task = next((t for t in self.recent.get(source, ()) if t.handle == handle), None)
        if task is None:
            raise ResourceNotFoundError(f"no redrive task with handle {str(handle)[:200]!r}", task_handle=handle)
        if task.status != RUNNING:
            raise InvalidParameterValueError(f"redrive task {handle!r} is {task.status}: only a RUNNING task can be "
                                             "cancelled (as SQS)", parameter="task_handle")
        self.manager.emit(("mvend", source, handle, CANCELLED, None), now)
        return task

    def list(self, source: str, max_results: int, now: float) -> list[MoveTask]:
        """The ``max_results`` (1-10) most recent tasks of ``source``, newest first (as SQS ListMessageMoveTasks).
        Raises ``UnknownQueueError``, ``InvalidParameterValueError``."""
        self.manager.queue(source, now)
        if not 1 <= max_results <= TASKS_KEPT:
            raise InvalidParameterValueError(f"value {max_results} for parameter max_results is invalid: must be "
                                             f"between 1 and {TASKS_KEPT}", parameter="max_results")
        return list(self.recent.get(source, ()))[:max_results]

    # -- time -----------------------------------------------------------------------------------------------------
    def deadline(self, q: Queue) -> float:
        """When ``step(q)`` next has work (``inf``: none, or not before one of the DLQ's own timers)."""
        task = self.running.get(q.name)
        if task is None:
            return math.inf
        if not task.remaining(q):
            return -math.inf
        if task.next_message(q) is None:
            task.base = None  # blocked: the rate does not accrue meanwhile, so no burst once messages are visible
            return math.inf
        return task.due()

    def step(self, q: Queue, now: float) -> None:
        """Move what is due by ``now``: the n-th message at ``start + n / rate``, so ``floor(rate * t)`` messages
        after ``t`` s while they are visible. A task whose messages are all gone completes; one that cannot move a
        message (its destination is gone or of the other type, or it has no source queue) fails."""
        task = self.running.get(q.name)
        if task is None:
            return
        mgr, moved, end = self.manager, 0, None
        while True:
            if not task.remaining(q):
                end = (COMPLETED, None)
                break
            m = task.next_message(q)
            if m is None:
                task.base = None
                break
            if task.base is None:
                task.base, task.n = now, -1
            if task.due() > now:
                break
            name = task.destination or m.source
            dest = mgr.queues.get(name or "")
            if dest is None or dest is q or dest.fifo != q.fifo:
                why = ("has no source queue" if name is None else f"cannot go to queue {name!r}: "
                       + ("it does not exist" if dest is None else "it is the dead-letter queue itself"
                          if dest is q else "it is of the other type"))
                end = (FAILED, f"message {m.message_id} {why}")
                break
            # a new message of the destination (retention from now, as SQS), keeping id, body and attributes
            mgr.emit(("send", dest.name, dest.next_seq, m.message_id, m.body, m.attributes, m.sent_ms, now, now,
                      m.group_id, m.dedup_id if dest.fifo else None, None), now)
            mgr.emit(("del", q.name, m.seq), now)
            moved += 1
            task.n += 1
        if moved:
            mgr.emit(("mvmoved", q.name, task.handle, moved), now)
        if end is not None:
            mgr.emit(("mvend", q.name, task.handle, end[0], end[1]), now)

    # -- events ---------------------------------------------------------------------------------------------------
    def apply(self, event: tuple, q: Queue, now: float) -> None:
        kind = event[0]
        if kind == "mvstart":
            handle, destination, rate, started_ms = event[2:6]
            task = MoveTask(handle, q, destination, rate, started_ms, now)
            if len(event) > 6:  # journals written before the count was: the messages there at replay
                task.to_move = event[6]
            self.running[q.name] = task
            kept = self.recent.setdefault(q.name, deque(maxlen=TASKS_KEPT))
            kept.appendleft(task)
            return
        task = self.running.get(q.name)
        if task is None or task.handle != event[2]:
            return
        if kind == "mvmoved":
            task.moved += event[3]
        elif kind == "mvend":
            task.status, task.failure_reason = event[3], event[4]
            del self.running[q.name]
            task.pending, task.head = [], 0

    def dropped(self, name: str) -> None:
        """Queue ``name`` was deleted: its tasks go with it (a running one ends there)."""
        self.running.pop(name, None)
        self.recent.pop(name, None)


__all__ = ["CANCELLED", "COMPLETED", "FAILED", "MoveTask", "MoveTasks", "RATE_DEFAULT", "RATE_MAX", "RUNNING",
           "TASKS_KEPT"]
