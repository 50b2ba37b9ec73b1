# The client's side of dead-letter redrive tasks (SQS StartMessageMoveTask, CancelMessageMoveTask,
# ListMessageMoveTasks): the requests behind `Queue.start_redrive`, `Queue.cancel_redrive` and
# `Queue.redrive_tasks`, and the task record they answer with. Must not know the broker's insides: speaks only the
# protocol's maps (docs/protocol.md "Queues") through `Client.request`.
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from millpond.broker.wire.errors import InvalidParameterValueError

if TYPE_CHECKING:
    from millpond.client.queues import Queue

__all__ = ["MoveTask", "cancel", "start", "tasks"]


@dataclass(frozen=True, slots=True)
class MoveTask:
    """A redrive task, as SQS ListMessageMoveTasks shows one. ``status``: ``"RUNNING"``, ``"COMPLETED"``,
    ``"CANCELLED"`` or ``"FAILED"`` (then ``failure_reason``); ``source``: the dead-letter queue; ``destination``
    and ``messages_per_second`` None when the start did not give them (each message went back to its own source;
    500 messages/s); ``messages_to_move``: what the queue held when the task started; ``started_s``: wall-clock
    epoch seconds (float)."""

    task_handle: str
    status: str
    source: str
    destination: str | None
    messages_per_second: int | None
    messages_moved: int
    messages_to_move: int
    failure_reason: str | None
    started_s: float

    @property
    def running(self) -> bool:
        return self.status == "RUNNING"

    def line(self) -> str:
        """One line for a person: status, progress, where to, rate."""
        to = self.destination or "each message's source queue"
        rate = f"{self.messages_per_second}/s" if self.messages_per_second else "500/s (default)"
        why = f": {self.failure_reason}" if self.failure_reason else ""
        return (f"{self.status} {self.messages_moved}/{self.messages_to_move} moved from {self.source} to {to} at "
                f"{rate}{why}")


def _task(body: dict[str, Any]) -> MoveTask:
    values = {f.name: body[f.name] for f in fields(MoveTask) if f.name != "started_s"}
    return MoveTask(**values, started_s=int(body["started_ms"]) / 1000)


async def start(queue: Queue, to: str | None, messages_per_second: int | None) -> str:
    body: dict[str, Any] = {"source": queue.name}
    if to is not None:
        body["destination"] = to
    if messages_per_second is not None:
        body["messages_per_second"] = messages_per_second
    return (await queue.client.request("start_message_move_task", body))["task_handle"]


async def tasks(queue: Queue, max_results: int) -> list[MoveTask]:
    answer = await queue.client.request("list_message_move_tasks", {"source": queue.name, "max_results": max_results})
    return [_task(t) for t in answer["tasks"]]


async def cancel(queue: Queue, task_handle: str | None) -> int:
    if task_handle is None:
        running = [t for t in await tasks(queue, 1) if t.running]
        if not running:
            raise InvalidParameterValueError(f"queue {queue.name!r} has no running redrive task")
        task_handle = running[0].task_handle
    answer = await queue.client.request("cancel_message_move_task", {"task_handle": task_handle})
    return int(answer["messages_moved"])
