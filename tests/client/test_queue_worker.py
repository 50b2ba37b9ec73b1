# The worker runner (`Queue.worker`, Lambda's SQS trigger) against the in-process broker in virtual time: deletes on
# success, failures back after the visibility timeout or a backoff, partial batch failures (batchItemFailures),
# FIFO group order kept past a failure, the heartbeat keeping a long handler's message hidden, stopping (finishing,
# or past the grace cancelling and releasing), and the blocking twin against the broker subprocess.
from __future__ import annotations

import threading

import pytest
import trio

from millpond.client import QueueMessage
from millpond.client.sync import connect as sync_connect
from millpond.client.worker import WAIT_S_DEFAULT, failed_ids


async def _send(q, bodies, **kw) -> None:
    for b in bodies:
        await q.send(b, **kw)


async def _until(predicate, timeout_s: float = 600.0) -> None:
    with trio.fail_after(timeout_s):
        while not predicate():
            await trio.sleep(0.1)


async def test_per_message_handler_deletes_successes_and_failures_come_back_after_the_timeout(client,
                                                                                             autojump_clock):
    await client.create_queue("jobs", visibility_timeout_s=30.0)
    q = client.queue("jobs")
    await _send(q, [b"m%d" % i for i in range(25)] + [b"flaky"])
    calls: list[tuple[bytes, int, float]] = []

    async def handler(m: QueueMessage) -> None:
        calls.append((m.body, m.receive_count, trio.current_time()))
        if m.body == b"flaky" and m.receive_count == 1:
            raise RuntimeError("first time unlucky")

    start = trio.current_time()
    async with q.worker(handler, batch_size=10, concurrency=2, wait_s=1.0) as w:
        await _until(lambda: w.statistics().processed == 26)
        stats = w.statistics()
    assert (stats.processed, stats.failed, stats.in_flight) == (26, 1, 0)
    assert sorted(b for b, _, _ in calls if b != b"flaky") == sorted(b"m%d" % i for i in range(25))
    flaky = [c for c in calls if c[0] == b"flaky"]
    assert [c[1] for c in flaky] == [1, 2]
    assert flaky[1][2] - flaky[0][2] >= 30.0 and flaky[0][2] - start < 1.0
    info = await q.attributes()
    assert (info.messages_visible, info.messages_in_flight) == (0, 0)


async def test_batch_handler_reports_item_failures_as_lambda(client, autojump_clock):
    await client.create_queue("jobs", visibility_timeout_s=10.0)
    q = client.queue("jobs")
    await q.send_batch([b"a", b"b", b"c", b"d"])
    batches: list[list[tuple[bytes, int]]] = []

    async def handler(msgs: list[QueueMessage]):
        batches.append([(m.body, m.receive_count) for m in msgs])
        if len(batches) == 1:
            return {"batchItemFailures": [{"itemIdentifier": m.message_id} for m in msgs if m.body in b"bd"]}
        return None

    async with q.worker(handler, batch=True, batch_size=10, wait_s=1.0) as w:
        await _until(lambda: w.statistics().processed == 4)
    assert sorted(batches[0]) == [(b"a", 1), (b"b", 1), (b"c", 1), (b"d", 1)]
    assert sorted(batches[1]) == [(b"b", 2), (b"d", 2)]  # only the listed ones came back
    assert len(batches) == 2


async def test_a_raising_batch_handler_fails_the_whole_batch_and_failed_messages_may_be_listed(client,
                                                                                              autojump_clock):
    await client.create_queue("jobs", visibility_timeout_s=5.0)
    q = client.queue("jobs")
    await q.send_batch([b"a", b"b"])
    seen: list[tuple[bytes, int]] = []

    async def handler(msgs):
        seen.extend((m.body, m.receive_count) for m in msgs)
        if msgs[0].receive_count == 1:
            raise ValueError("boom")
        return [m for m in msgs if m.body == b"b" and m.receive_count == 2]  # failed messages, as a list

    async with q.worker(handler, batch=True, wait_s=1.0) as w:
        await _until(lambda: w.statistics().processed == 2)
        assert w.statistics().failed == 3
    assert sorted(seen) == [(b"a", 1), (b"a", 2), (b"b", 1), (b"b", 2), (b"b", 3)]


async def test_a_batch_handler_answer_of_the_wrong_shape_stops_the_worker(client, autojump_clock):
    await client.create_queue("jobs")
    q = client.queue("jobs")
    await q.send(b"a")
    async with q.worker(lambda msgs: {"itemFailures": []}, batch=True, wait_s=1.0) as w:
        with pytest.raises(TypeError, match="batchItemFailures"):
            await w.wait()
    info = await q.attributes()
    assert (info.messages_visible, info.messages_in_flight) == (0, 1)  # failed: back after its timeout


def test_failed_ids_shapes():
    m = QueueMessage("id1", "h", b"", {}, 1, 0, 0, None, None, None, None)
    assert failed_ids(None, [m]) == set() == failed_ids({"batchItemFailures": []}, [m]) == failed_ids([], [m])
    assert failed_ids({"batchItemFailures": [{"itemIdentifier": "id1"}]}, [m]) == {"id1"} == failed_ids([m], [m])
    assert failed_ids(["id1"], [m]) == {"id1"}
    for bad in ("id1", ["id2"], {"batchItemFailures": [{"itemIdentifier": "nope"}]}):
        with pytest.raises(TypeError):
            failed_ids(bad, [m])


async def test_backoff_doubles_per_receive(client, autojump_clock):
    await client.create_queue("jobs", visibility_timeout_s=300.0)
    q = client.queue("jobs")
    await q.send(b"x")
    times: list[float] = []

    async def handler(m):
        times.append(trio.current_time())
        if m.receive_count < 4:
            raise RuntimeError("not yet")

    async with q.worker(handler, backoff_s=2.0, wait_s=20.0) as w:
        await _until(lambda: w.statistics().processed == 1)
    gaps = [round(b - a, 1) for a, b in zip(times, times[1:])]
    assert gaps == [2.0, 4.0, 8.0]  # not the queue's 300 s


async def test_the_heartbeat_keeps_a_long_handlers_message_hidden(client, autojump_clock):
    await client.create_queue("jobs", visibility_timeout_s=10.0)
    q = client.queue("jobs")
    await q.send(b"slow")
    stolen: list[QueueMessage] = []

    async def handler(m):
        await trio.sleep(100.0)  # ten visibility timeouts

    async def thief() -> None:
        stolen.extend(await q.receive(wait_s=20.0))

    async with q.worker(handler, wait_s=1.0) as w:
        await trio.sleep(0.5)
        async with trio.open_nursery() as n:
            for _ in range(5):
                n.start_soon(thief)
        await _until(lambda: w.statistics().processed == 1)
    assert stolen == []


async def test_without_heartbeat_a_long_handlers_message_comes_back(client, autojump_clock):
    await client.create_queue("jobs", visibility_timeout_s=10.0)
    q = client.queue("jobs")
    await q.send(b"slow")

    async def handler(m):
        await trio.sleep(100.0)

    async with q.worker(handler, wait_s=1.0, heartbeat=False):
        await trio.sleep(0.5)
        [m] = await q.receive(wait_s=20.0)
        assert m.receive_count == 2
        await q.delete(m)


async def test_fifo_a_failure_fails_the_rest_of_its_group_so_order_is_kept(client, autojump_clock):
    await client.create_queue("f.fifo", content_based_deduplication=True, visibility_timeout_s=5.0)
    q = client.queue("f.fifo")
    await q.send_batch([{"body": b"g1-%d" % i, "group_id": "g1"} for i in range(1, 5)])
    handled: list[bytes] = []
    failed_once: set[bytes] = set()

    async def handler(m):
        if m.body == b"g1-2" and m.body not in failed_once:
            failed_once.add(m.body)
            raise RuntimeError("once")
        handled.append(m.body)

    async with q.worker(handler, batch_size=10, wait_s=1.0) as w:
        await _until(lambda: w.statistics().processed == 4)
    assert handled == [b"g1-1", b"g1-2", b"g1-3", b"g1-4"]


async def test_stop_lets_a_running_handler_finish_and_delete(client, autojump_clock):
    await client.create_queue("jobs")
    q = client.queue("jobs")
    await q.send(b"x")
    started = trio.Event()
    finished: list[float] = []

    async def handler(m):
        started.set()
        await trio.sleep(5.0)
        finished.append(trio.current_time())

    async with q.worker(handler, wait_s=1.0) as w:
        await started.wait()
    assert len(finished) == 1 and w.statistics().processed == 1
    info = await q.attributes()
    assert (info.messages_visible, info.messages_in_flight) == (0, 0)


async def test_past_the_grace_a_handler_is_cancelled_and_its_messages_are_visible_at_once(client, autojump_clock):
    await client.create_queue("jobs", visibility_timeout_s=600.0)
    q = client.queue("jobs")
    await q.send_batch([b"a", b"b", b"c"])
    started = trio.Event()

    async def handler(msgs):
        started.set()
        await trio.sleep(3600.0)

    t0 = trio.current_time()
    async with q.worker(handler, batch=True, wait_s=1.0, shutdown_grace_s=2.0) as w:
        await started.wait()
    assert trio.current_time() - t0 < 5.0
    assert (w.statistics().released, w.statistics().in_flight) == (3, 0)
    got = await q.receive(10, wait_s=0.0)
    assert sorted((m.body, m.receive_count) for m in got) == [(b"a", 2), (b"b", 2), (b"c", 2)]


async def test_cancelling_the_worker_makes_its_messages_visible_at_once(client, autojump_clock):
    await client.create_queue("jobs", visibility_timeout_s=600.0)
    q = client.queue("jobs")
    await q.send(b"a")
    started = trio.Event()

    async def handler(m):
        started.set()
        await trio.sleep(3600.0)

    with trio.move_on_after(10.0):
        async with q.worker(handler, wait_s=1.0):
            await trio.sleep(3600.0)
    assert started.is_set()
    [m] = await q.receive(wait_s=0.0)
    assert (m.body, m.receive_count) == (b"a", 2)


async def test_a_batch_window_gathers_messages_sent_meanwhile(client, autojump_clock):
    await client.create_queue("jobs")
    q = client.queue("jobs")
    sizes: list[int] = []

    async def handler(msgs):
        sizes.append(len(msgs))

    async with q.worker(handler, batch=True, batch_size=50, batch_window_s=10.0, wait_s=20.0) as w:
        for i in range(20):
            await q.send(b"m%d" % i)
            await trio.sleep(0.3)
        await _until(lambda: w.statistics().processed == 20)
    assert sizes == [20]


async def test_option_checks(client):
    q = client.queue("f.fifo")
    for bad in ({"batch_size": 11}, {"batch_window_s": 1.0}, {"concurrency": 0}):
        with pytest.raises(ValueError):
            q.worker(print, **bad)
    with pytest.raises(ValueError):
        client.queue("std").worker(print, batch_size=10_001)
    std = client.queue("std")
    for bad, match in (({"wait_s": 30.0}, r"wait_s must be 0-20 s \(as SQS WaitTimeSeconds\), not 30.0"),
                       ({"wait_s": -1.0}, "wait_s must be 0-20 s"),
                       ({"shutdown_grace_s": -1.0}, "shutdown_grace_s must be 0 or more seconds, not -1.0"),
                       ({"shutdown_grace_s": float("nan")}, "shutdown_grace_s must be 0 or more seconds")):
        with pytest.raises(ValueError, match=match):  # at once: the broker would refuse every poll, or the stop
            std.worker(print, **bad)
    for bad in ({"wait_s": "5"}, {"shutdown_grace_s": None}):
        [(name, value)] = bad.items()
        with pytest.raises(TypeError, match=f"{name} must be a number of seconds, got {value!r}"):
            std.worker(print, **bad)


def test_the_blocking_worker(daemon):
    with sync_connect(daemon, client_id="sync-worker") as c:
        c.create_queue("jobs", visibility_timeout_s=30.0)
        q = c.queue("jobs")
        for i in range(0, 30, 10):
            q.send_batch([b"m%d" % j for j in range(i, i + 10)])
        seen: list[bytes] = []
        lock = threading.Lock()
        done = threading.Event()

        def handler(m: QueueMessage) -> None:
            with lock:
                seen.append(m.body)
                if len(seen) == 30:
                    done.set()

        with q.worker(handler, concurrency=3, wait_s=0.5) as w:
            assert done.wait(30)
        assert w.statistics().processed == 30
        assert sorted(seen) == sorted(b"m%d" % i for i in range(30))
        info = q.attributes()
        assert (info.messages_visible, info.messages_in_flight) == (0, 0)


async def test_leaving_an_idle_workers_block_takes_at_most_its_default_long_poll(client, autojump_clock):
    # The long poll under way is waited for (cancelling it would hide what it brings for a visibility timeout),
    # so it is short by default: leaving the block of a worker on an empty queue takes at most WAIT_S_DEFAULT.
    await client.create_queue("idle")
    q = client.queue("idle")
    async with q.worker(lambda m: None, concurrency=4):
        await trio.sleep(5.0)
        left = trio.current_time()
    assert 0 < trio.current_time() - left <= WAIT_S_DEFAULT + 0.1
    assert WAIT_S_DEFAULT <= 2.0
