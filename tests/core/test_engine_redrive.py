# Dead-letter redrive tasks through the engine, with literal times and no Trio: the engine's deadline and tick
# drive the moves (as the server's one timer does), the moves are journaled, and a restart over the same data
# directory resumes a running task or reports a finished one.
from __future__ import annotations

from millpond.broker.core.queues.api import (
    CancelMessageMoveTask,
    CreateQueue,
    GetQueueAttributes,
    ListMessageMoveTasks,
    MoveTaskCancelled,
    MoveTaskInfo,
    MoveTaskStarted,
    ReceiveMessages,
    SendMessage,
    StartMessageMoveTask,
)

from enginekit import T0_MS, answer, ctx, make_engine


def fill_dlq(engine, n: int) -> None:
    answer(engine, CreateQueue("dlq"))
    answer(engine, CreateQueue("q", dead_letter_queue="dlq", max_receive_count=1))
    for i in range(n):
        answer(engine, SendMessage("q", b"m%d" % i), 0.0)
    assert len(answer(engine, ReceiveMessages("q", max_messages=n), 0.0).messages) == n
    assert answer(engine, ReceiveMessages("q", max_messages=n), 30.0).messages == ()  # all moved to dlq


def counts(engine, name: str, now: float) -> tuple[int, int]:
    info = answer(engine, GetQueueAttributes(name), now)
    return info.messages_visible, info.messages_in_flight


def test_the_engines_timer_drives_a_task_and_a_restart_resumes_it(tmp_path):
    engine = make_engine(tmp_path, fsync="never")
    fill_dlq(engine, 8)
    started = answer(engine, StartMessageMoveTask("dlq", messages_per_second=4), 40.0)
    assert type(started) is MoveTaskStarted and started.task_handle.startswith("dlq:")
    assert engine.queues.next_deadline() == 40.25
    engine.tick(ctx(41.0))
    [task] = answer(engine, ListMessageMoveTasks("dlq"), 41.0).tasks
    assert task == MoveTaskInfo(started.task_handle, "RUNNING", "dlq", None, 4, 4, 8, None, T0_MS + 40_000)
    assert counts(engine, "q", 41.0) == (4, 0) and counts(engine, "dlq", 41.0) == (4, 0)
    engine.close()

    again = make_engine(tmp_path, opened_at=100.0, fsync="never")
    [task] = answer(again, ListMessageMoveTasks("dlq"), 100.0).tasks
    assert (task.status, task.messages_moved, task.messages_to_move) == ("RUNNING", 4, 8)
    assert again.queues.next_deadline() == 100.25  # resumes at its rate from the restart
    again.tick(ctx(100.5))
    assert counts(again, "q", 100.5) == (6, 0)
    cancelled = answer(again, CancelMessageMoveTask(started.task_handle), 100.5)
    assert cancelled == MoveTaskCancelled(6)
    again.tick(ctx(200.0))
    assert counts(again, "dlq", 200.0) == (2, 0)
    again.close()

    third = make_engine(tmp_path, opened_at=300.0, fsync="never")
    [task] = answer(third, ListMessageMoveTasks("dlq", max_results=10), 300.0).tasks
    assert (task.status, task.messages_moved) == ("CANCELLED", 6)
    got = answer(third, ReceiveMessages("q", max_messages=10), 300.0).messages
    assert sorted(m.body for m in got) == [b"m%d" % i for i in range(6)]
    assert counts(third, "dlq", 300.0) == (2, 0)
    third.close()


def test_a_completed_task_is_reported_after_a_restart(tmp_path):
    engine = make_engine(tmp_path, fsync="never")
    fill_dlq(engine, 3)
    answer(engine, StartMessageMoveTask("dlq", messages_per_second=100), 40.0)
    engine.tick(ctx(41.0))
    engine.close()
    again = make_engine(tmp_path, opened_at=50.0, fsync="never")
    [task] = answer(again, ListMessageMoveTasks("dlq"), 50.0).tasks
    assert (task.status, task.messages_moved, task.messages_to_move) == ("COMPLETED", 3, 3)
    assert counts(again, "q", 50.0) == (3, 0) and counts(again, "dlq", 50.0) == (0, 0)
    again.close()
