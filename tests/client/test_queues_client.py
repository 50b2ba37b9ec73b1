# The client's queues: `create_queue`, `queue(name)` with send, send_batch, receive (long poll), delete,
# change_visibility, purge and attributes; Trio against the in-process broker, and the blocking twin against the
# broker subprocess.
from __future__ import annotations

import re

import trio

from millpond.client import QueueInfo, QueueMessage, SendResult
from millpond.client.errors import (
    InvalidConfigError,
    InvalidParameterValueError,
    MissingParameterError,
    QueueAlreadyExistsError,
    ReceiptHandleInvalidError,
)
from millpond.client.sync import connect as sync_connect


async def test_send_receive_delete_and_change_visibility(client):
    info = await client.create_queue("jobs", visibility_timeout_s=5.0, delay_s=0.0)
    assert type(info) is QueueInfo and (info.visibility_timeout_s, info.retention_s, info.fifo) == (5.0, 345_600.0,
                                                                                                    False)
    assert await client.create_queue("jobs", visibility_timeout_s=5.0) == info  # same attributes: idempotent
    try:
        await client.create_queue("jobs", visibility_timeout_s=6.0)
        raise AssertionError("created twice")
    except QueueAlreadyExistsError:
        pass
    q = client.queue("jobs")
    sent = await q.send(b"one", attributes={"kind": "email", "try": 1})
    assert type(sent) is SendResult and sent.sequence_number is None
    [m] = await q.receive(10, wait_s=1.0)
    assert type(m) is QueueMessage
    assert (m.message_id, m.body, m.attributes, m.receive_count) == (sent.message_id, b"one",
                                                                     {"kind": "email", "try": 1}, 1)
    assert await q.receive(wait_s=0.0) == []
    await q.change_visibility(m, 0.0)
    [again] = await q.receive()
    assert again.receive_count == 2
    await q.delete(m)  # the older handle: succeeds, deletes nothing
    assert (await q.attributes()).messages_in_flight == 1
    await q.delete(again)
    await q.delete(again)  # again: succeeds
    assert ((await q.attributes()).messages_in_flight, (await q.attributes()).messages_visible) == (0, 0)
    try:
        await q.delete("garbage")
        raise AssertionError("deleted with garbage")
    except ReceiptHandleInvalidError:
        pass
    assert await client.list_queues() == ["jobs"]
    await client.delete_queue("jobs")
    assert await client.list_queues() == []


async def test_a_long_poll_receive_returns_when_a_message_is_sent(client):
    q = client.queue((await client.create_queue("q")).name)
    got: list = []

    async def worker() -> None:
        got.extend(await q.receive(wait_s=10.0))

    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            n.start_soon(worker)
            await trio.sleep(0.05)
            await q.send(b"ping")
    assert [m.body for m in got] == [b"ping"]


async def test_batches_and_fifo(client):
    await client.create_queue("f.fifo", content_based_deduplication=True)
    q = client.queue("f.fifo")
    results = await q.send_batch([{"body": b"a", "group_id": "g"}, b"no group", {"body": b"b", "group_id": "g"},
                                  {"body": b"a", "group_id": "g"}])
    assert [r.sequence_number if isinstance(r, SendResult) else type(r) for r in results] == [
        1, MissingParameterError, 2, 1]  # the last one is a duplicate of the first: its number, not stored
    msgs = await q.receive(10)
    assert [m.body for m in msgs] == [b"a", b"b"]
    assert await q.delete_batch(msgs) == [None, None]
    try:
        await q.send(b"x", group_id="g", delay_s=1.0)
        raise AssertionError("a FIFO message took a delay")
    except InvalidParameterValueError:
        pass
    await q.purge()
    assert (await client.queue_attributes("f.fifo")).messages_visible == 0


def test_the_blocking_client_mirrors_the_queue_api(daemon):
    with sync_connect(daemon, client_id="blocking") as c:
        c.create_queue("dlq")
        c.create_queue("q", visibility_timeout_s=0.0, dead_letter_queue="dlq", max_receive_count=1)
        q = c.queue("q")
        assert q.send(b"poison").sequence_number is None
        assert [m.body for m in q.receive(wait_s=1.0)] == [b"poison"]
        assert q.receive(wait_s=0.0) == []  # a second receive would pass max_receive_count: moved to the DLQ
        [dead] = c.queue("dlq").receive()
        assert (dead.body, dead.dead_letter_source) == (b"poison", "q")
        assert q.send_batch([b"a", b"b"])[1].message_id
        [m] = q.receive()
        q.change_visibility(m, 10.0)
        assert q.delete_batch([m]) == [None]
        assert q.set_attributes(visibility_timeout_s=7.0).visibility_timeout_s == 7.0
        q.purge()
        assert c.queue_attributes("q").messages_visible == 0 and c.list_queues() == ["dlq", "q"]
        c.delete_queue("q")


async def test_wall_clock_times_of_queues_subscriptions_and_redrives_are_epoch_seconds(client):
    import time

    before = time.time()
    info = await client.create_queue("dlq")
    await client.create_topic("t")
    sub = await client.subscribe("t", queue="dlq")
    await client.create_queue("src", dead_letter_queue="dlq", max_receive_count=1)
    await client.queue("dlq").start_redrive()
    [task] = await client.queue("dlq").redrive_tasks()
    after = time.time()
    # floats of seconds since the epoch (SQS's CreatedTimestamp is epoch seconds), not the wire's milliseconds
    for seconds in (info.created_s, info.modified_s, sub.created_s, task.started_s):
        assert isinstance(seconds, float) and before - 1 <= seconds <= after + 1
    # a message's own timestamps stay epoch milliseconds, as a record's timestamp_ms
    await client.queue("src").send(b"x")
    [m] = await client.queue("src").receive(wait_s=0.0)
    assert isinstance(m.sent_ms, int) and before * 1000 - 1000 <= m.sent_ms <= time.time() * 1000 + 1000


async def test_a_negative_or_non_number_time_is_refused_in_seconds_under_its_own_name(client):
    # the wire carries milliseconds; a caller who wrote seconds hears about seconds, before anything is sent
    cases = [
        (lambda: client.create_queue("t", visibility_timeout_s=-1),
         "visibility_timeout_s must be >= 0 seconds, got -1"),
        (lambda: client.create_queue("t", delay_s=float("nan")), "delay_s must be a number of seconds, got nan"),
        (lambda: client.create_queue("t", retention_s="60"), "retention_s must be a number of seconds, got '60'"),
        (lambda: client.queue("t").receive(1, wait_s=-0.5), "wait_s must be >= 0 seconds, got -0.5"),
        (lambda: client.queue("t").send(b"x", delay_s=True), "delay_s must be a number of seconds, got True"),
        (lambda: client.queue("t").change_visibility("handle", -3),
         "visibility_timeout_s must be >= 0 seconds, got -3"),
        (lambda: client.create_queue("t", visibility_timeout_s=float("inf")),
         "visibility_timeout_s must be a finite number of seconds, got inf"),
        (lambda: client.queue("t").receive(1, wait_s=1e300), "wait_s must be at most 9223372036854774 seconds, "
                                                               "got 1e+300"),
    ]
    for call, said in cases:
        try:
            await call()
            raise AssertionError(f"accepted: {said}")
        except InvalidConfigError as exc:
            assert exc.message == said
            assert "_ms" not in exc.message
    assert await client.list_queues() == []  # nothing reached the broker


async def test_a_long_poll_its_caller_gave_up_gives_back_what_it_takes_after_all(client):
    await client.create_queue("late", visibility_timeout_s=30.0)
    q = client.queue("late")
    with trio.move_on_after(0.2):
        await q.receive(wait_s=10.0)  # given up; the broker still holds the long poll
    sent = await q.send(b"taken by the abandoned poll")
    [m] = await q.receive(wait_s=5.0)  # made receivable again at once, not after its 30 s timeout
    assert (m.message_id, m.body, m.receive_count) == (sent.message_id, b"taken by the abandoned poll", 2)
    with trio.move_on_after(0.2):
        await q.receive(10, wait_s=10.0)
    await q.send_batch([b"a", b"b", b"c"])
    got = []
    with trio.fail_after(5.0):
        while len(got) < 3:
            got += await q.receive(10, wait_s=1.0)
    assert sorted(g.body for g in got) == [b"a", b"b", b"c"]
    info = await q.attributes()
    assert (info.messages_visible, info.messages_in_flight) == (0, 4)



async def test_a_request_larger_than_the_brokers_frame_bound_is_refused_and_the_connection_lives_on(client):
    from millpond.client.errors import FrameTooLargeError

    await client.create_queue("big")
    q = client.queue("big")
    limit = client._conn.protocol.limits.frame_bytes_max
    got = []

    async def poll() -> None:
        got.extend(await q.receive(wait_s=5.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)  # a long poll on the same connection, under way
        await trio.sleep(0.1)
        try:
            await q.send(b"x" * (limit + 1))
            raise AssertionError("sent")
        except FrameTooLargeError as exc:
            size = int(re.search(r"a request of (\d+) bytes", exc.message).group(1))
            assert limit + 1 < size < limit + 200
            assert exc.message.endswith(f"exceeds the broker's frame_bytes_max={limit}; nothing was sent")
        await q.send(b"after")
    assert [m.body for m in got] == [b"after"]
    await client.create_topic("big-topic")
    try:
        await client.publish("big-topic", b"x" * (limit + 1))
        raise AssertionError("published")
    except FrameTooLargeError:
        pass
    assert (await q.send(b"still connected")).message_id


async def test_a_body_that_is_not_bytes_or_a_message_without_one_is_refused_naming_it(client):
    await client.create_queue("typed")
    q = client.queue("typed")
    for bad in ("text", 5, None):
        try:
            await q.send(bad)
            raise AssertionError("sent")
        except TypeError as exc:
            assert str(exc) == (f"a message body must be bytes, got {type(bad).__name__} (encode str yourself, as "
                                "body.encode())")
    try:
        await q.send_batch([b"fine", {"nobody": 1}])
        raise AssertionError("sent")
    except TypeError as exc:
        assert str(exc).startswith("send_batch: message 1 has no 'body'")
    assert [r.message_id is not None for r in await q.send_batch([b"a", {"body": b"b", "delay_s": 0}])] == [True] * 2
    assert (await q.attributes()).messages_visible == 2  # nothing of the refused calls was sent
