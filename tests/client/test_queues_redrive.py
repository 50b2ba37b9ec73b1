# Dead-letter redrive through the client over TCP, on Trio's MockClock moved only by the test (so the broker's one
# timer runs each move at its exact time): start, progress, cancel, a second task to completion, and every
# message back in its own source queue with its id, body and attributes.
from __future__ import annotations

import pytest
import trio
import trio.testing

from millpond.client.errors import InvalidParameterValueError, ResourceNotFoundError
from millpond.client.redrive import MoveTask


async def jump(clock: trio.testing.MockClock, seconds: float) -> None:
    clock.jump(seconds)
    await trio.testing.wait_all_tasks_blocked()  # the broker's timer ran what was due


async def test_a_redrive_over_tcp_moves_at_its_rate_and_can_be_cancelled(mock_clock, client):
    await client.create_queue("dlq")
    sent: dict[str, tuple[str, bytes, dict]] = {}
    for src in ("a", "b"):
        await client.create_queue(src, visibility_timeout_s=1.0, dead_letter_queue="dlq", max_receive_count=1)
        q = client.queue(src)
        for i in range(5):
            body, attrs = f"{src}-{i}".encode(), {"i": i, "src": src}
            sent[(await q.send(body, attributes=attrs)).message_id] = (src, body, attrs)
        assert len(await q.receive(10, wait_s=0.0)) == 5
    await jump(mock_clock, 1.0)
    for src in ("a", "b"):
        assert await client.queue(src).receive(10, wait_s=0.0) == []  # past max_receive_count: moved to dlq
    dlq = client.queue("dlq")
    assert (await dlq.attributes()).messages_visible == 10
    with pytest.raises(InvalidParameterValueError):
        await client.queue("a").start_redrive()  # not a dead-letter queue

    handle = await dlq.start_redrive(messages_per_second=4)
    with pytest.raises(InvalidParameterValueError):
        await dlq.start_redrive()  # one running task per queue
    await jump(mock_clock, 1.0)
    [task] = await dlq.redrive_tasks()
    assert type(task) is MoveTask
    assert (task.task_handle, task.status, task.messages_moved, task.messages_to_move) == (handle, "RUNNING", 4, 10)
    assert (task.destination, task.messages_per_second, task.failure_reason) == (None, 4, None)
    assert await dlq.cancel_redrive() == 4
    with pytest.raises(ResourceNotFoundError):
        await dlq.cancel_redrive("dlq:0123456789abcdef")
    await jump(mock_clock, 10.0)
    assert (await dlq.attributes()).messages_visible == 6  # the rest stays

    second = await dlq.start_redrive(messages_per_second=100)
    await jump(mock_clock, 1.0)
    tasks = await dlq.redrive_tasks()
    assert [(t.task_handle, t.status, t.messages_moved) for t in tasks] == [(second, "COMPLETED", 6),
                                                                            (handle, "CANCELLED", 4)]
    got = []
    for src in ("a", "b"):
        for m in await client.queue(src).receive(10, wait_s=0.0):
            got.append(m)
            assert sent[m.message_id] == (src, m.body, m.attributes)
            assert (m.receive_count, m.dead_letter_source) == (1, None)
    assert sorted(m.message_id for m in got) == sorted(sent)
