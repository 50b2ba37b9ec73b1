# Stopping a producer that cannot deliver quickly (a limit policy throttles it to 1,000 records/s), against a broker
# subprocess in real time: close(timeout_s=...) is bounded and fails the rest with TimeoutError; leaving the block by
# an exception waits for nothing and fails the rest with that exception. Async under Trio and asyncio, and blocking.
from __future__ import annotations

import asyncio
import time

import anyio
import pytest
import trio

from millpond.client import connect
from millpond.broker.wire.errors import MillpondError
from millpond.client.sync import connect as sync_connect

pytestmark = pytest.mark.slow

N = 5000  # 5 s at the policy's rate: far more than any bound below


class Boom(Exception):
    pass


def throttle(daemon: str) -> None:
    with sync_connect(daemon, client_id="admin") as admin:
        admin.create_topic("t")
        admin.set_limit("slow", scope="client:app-*", unit="records", rate=1000, burst=100)


def stored(daemon: str) -> int:
    with sync_connect(daemon) as c:
        return c.list_offsets("t", 0, "latest")[0]


def outcomes(handles: list) -> tuple[int, list[BaseException]]:
    """How many handles were acknowledged, and the errors of the others (each must be settled)."""
    acked, errors = 0, []
    for h in handles:
        assert h.done()
        try:
            h.result(0)
        except Exception as exc:
            errors.append(exc)
        else:
            acked += 1
    return acked, errors


async def async_outcomes(handles: list) -> tuple[int, list[BaseException]]:
    acked, errors = 0, []
    for h in handles:
        assert h.done()
        try:
            await h
        except Exception as exc:
            errors.append(exc)
        else:
            acked += 1
    return acked, errors


def check(daemon: str, stats, acked: int, errors: list[BaseException], kind: type) -> None:
    assert acked == stats.records_sent and len(errors) == stats.records_failed == N - acked
    assert 0 < acked < N and all(type(e) is kind for e in errors)
    assert stats.records_buffered == 0
    assert stored(daemon) >= acked  # a batch on its way when it gave up may be stored too


async def _async_close(daemon: str, now) -> tuple:
    async with connect(daemon, client_id="app-1") as c:
        p = c.producer(on_throttled=lambda policy, retry_after_s: 1 / 0)  # a failing callback changes nothing
        await p.__aenter__()
        handles = [p.send("t", b"%d" % i, partition=0) for i in range(200)]
        await handles[-1]  # through the burst: throttled from now on
        handles += [p.send("t", b"%d" % i, partition=0) for i in range(200, N)]
        start = now()
        await p.close(timeout_s=0.5)
        took = now() - start
        await p.close(timeout_s=0.5)  # a second close does nothing
        return await async_outcomes(handles), p.statistics(), took


async def _async_raise(daemon: str, now) -> tuple:
    async with connect(daemon, client_id="app-1") as c:
        start = None
        try:
            async with c.producer() as p:
                handles = [p.send("t", b"%d" % i, partition=0) for i in range(200)]
                await handles[-1]  # through the burst: throttled from now on
                handles += [p.send("t", b"%d" % i, partition=0) for i in range(200, N)]
                start = now()
                raise Boom()
        except Boom:
            took = now() - start
        return await async_outcomes(handles), p.statistics(), took


@pytest.mark.parametrize("runner", ["trio", "asyncio"])
def test_async_close_with_a_timeout_is_bounded(daemon, runner):
    throttle(daemon)
    if runner == "trio":
        (acked, errors), stats, took = trio.run(_async_close, daemon, time.monotonic)
    else:
        (acked, errors), stats, took = asyncio.run(_async_close(daemon, time.monotonic))
    assert took < 1.5, took
    check(daemon, stats, acked, errors, TimeoutError)


@pytest.mark.parametrize("runner", ["trio", "asyncio"])
def test_leaving_an_async_block_by_an_exception_waits_for_nothing(daemon, runner):
    throttle(daemon)
    if runner == "trio":
        (acked, errors), stats, took = trio.run(_async_raise, daemon, time.monotonic)
    else:
        (acked, errors), stats, took = asyncio.run(_async_raise(daemon, time.monotonic))
    assert took < 0.5, took
    check(daemon, stats, acked, errors, Boom)


def test_blocking_close_with_a_timeout_is_bounded(daemon):
    throttle(daemon)
    with sync_connect(daemon, client_id="app-1") as c:
        opened = time.monotonic()
        told: list[tuple] = []
        p = c.producer(on_throttled=lambda policy, retry_after_s: told.append((policy, retry_after_s)))
        handles = [p.send("t", b"%d" % i, partition=0) for i in range(200)]
        handles[-1].result(10)  # through the burst: throttled from now on
        handles += [p.send("t", b"%d" % i, partition=0) for i in range(200, N)]
        start = time.monotonic()
        p.close(timeout_s=0.5)
        took = time.monotonic() - start
        p.close(timeout_s=0.5)
        stats = p.statistics()
        lived = time.monotonic() - opened
    assert took < 1.5, took
    # several batches wait out THROTTLED at once: the wall-clock time is their union, not their sum
    assert stats.throttle_policy == "slow" and 0 < stats.throttle_time_s <= lived + 0.5
    assert stats.throttle_wait_s >= stats.throttle_time_s - 1e-6
    # the callback heard every THROTTLED answer that was waited out
    assert len(told) == stats.throttled and {policy for policy, _ in told} == {"slow"}
    assert abs(sum(s for _, s in told) - stats.throttle_wait_s) < 1e-6
    acked, errors = outcomes(handles)
    check(daemon, stats, acked, errors, TimeoutError)


def test_leaving_a_blocking_block_by_an_exception_waits_for_nothing(daemon):
    throttle(daemon)
    with sync_connect(daemon, client_id="app-1") as c:
        with pytest.raises(Boom):
            with c.producer() as p:
                handles = [p.send("t", b"%d" % i, partition=0) for i in range(200)]
                handles[-1].result(10)  # through the burst: throttled from now on
                handles += [p.send("t", b"%d" % i, partition=0) for i in range(200, N)]
                start = time.monotonic()
                raise Boom()
        took = time.monotonic() - start
        stats = p.statistics()
    assert took < 0.5, took
    acked, errors = outcomes(handles)
    check(daemon, stats, acked, errors, Boom)


# ---- a broker that is gone: close(timeout_s=...) and leaving by an exception still end, every handle settled ----

def _killed_under(tmp_path, produce) -> None:
    """Start a broker, let ``produce(address, kill)`` send to it and call ``kill()`` to SIGKILL it."""
    import signal

    from tests.daemonproc import start_daemon, stop_daemon

    broker, port = start_daemon(tmp_path / "data", tmp_path / "broker.log")

    def kill() -> None:
        broker.send_signal(signal.SIGKILL)
        broker.wait()

    try:
        with sync_connect(f"127.0.0.1:{port}") as admin:
            admin.create_topic("t")
        produce(f"127.0.0.1:{port}", kill)
    finally:
        stop_daemon(broker)


def _gone_check(handles: list, stats, kind: type) -> None:
    acked, errors = outcomes(handles)  # each settled: none left waiting for a connection that never comes
    assert acked == stats.records_sent == 200 and len(errors) == stats.records_failed == len(handles) - 200
    assert all(isinstance(e, kind) for e in errors) and stats.records_buffered == 0


@pytest.mark.parametrize("how", ["close", "exception"])
def test_a_blocking_producer_ends_when_the_broker_is_gone(tmp_path, how):
    def produce(address: str, kill) -> None:
        # reconnect attempts far longer than the close bound: the bound alone must end it
        with sync_connect(address, reconnect_timeout_s=600) as c:
            p = c.producer(delivery_timeout_s=600)
            handles = [p.send("t", b"%d" % i, partition=0) for i in range(200)]
            handles[-1].result(10)
            kill()
            handles += [p.send("t", b"%d" % i, partition=0) for i in range(200, 1200)]
            if how == "close":
                p.close(timeout_s=0.5)
            else:
                with pytest.raises(Boom), p:
                    raise Boom()
            _gone_check(handles, p.statistics(), TimeoutError if how == "close" else Boom)

    _killed_under(tmp_path, produce)


def test_an_async_producer_closes_within_its_bound_when_the_broker_is_gone(tmp_path):
    async def produce_async(address: str, kill) -> None:
        async with connect(address, reconnect_timeout_s=600) as c:
            p = c.producer(delivery_timeout_s=600)
            async with p:
                handles = [p.send("t", b"%d" % i, partition=0) for i in range(200)]
                await handles[-1]
                await trio.to_thread.run_sync(kill)
                handles += [p.send("t", b"%d" % i, partition=0) for i in range(200, 1200)]
                await trio.sleep(0.2)  # the sender has taken a batch and waits for a connection
                await p.close(timeout_s=0.5)
            acked, errors = await async_outcomes(handles)
            stats = p.statistics()
            assert acked == stats.records_sent == 200 and len(errors) == stats.records_failed == 1000
            assert all(isinstance(e, TimeoutError) for e in errors) and stats.records_buffered == 0

    _killed_under(tmp_path, lambda address, kill: trio.run(produce_async, address, kill))


# ---- a record sent once the producer is closing or closed is refused at once, never left unresolved ----

CLOSED = "the producer is closed: a record sent now would never be delivered"


async def _send_after_close(daemon: str) -> list[str]:
    seen = []
    async with connect(daemon) as c:
        async with c.producer() as p:
            first = p.send("t", b"before")
        assert (await first).offset == 0  # what was sent before the close is delivered
        with pytest.raises(RuntimeError, match=CLOSED):
            p.send("t", b"after leaving the block")
        seen.append("after the block")
        p2 = c.producer()
        await p2.__aenter__()
        await p2.close()
        with pytest.raises(RuntimeError, match=CLOSED):
            p2.send("t", b"after close()")
        seen.append("after close()")
        try:
            async with c.producer() as p3:
                raise Boom()
        except Boom:
            pass
        with pytest.raises(RuntimeError, match=CLOSED):
            p3.send("t", b"after leaving by an exception")
        seen.append("after an exception")
        never_started = c.producer()
        with pytest.raises(RuntimeError, match="the producer is not started: send inside `async with"):
            never_started.send("t", b"nothing would send it")  # it was buffered, and close() dropped it silently
        await never_started.close()
        def send_while_closing() -> None:  # another task, run while the close waits for the broker's answer
            with pytest.raises(RuntimeError, match=CLOSED):
                p4.send("t", b"while closing")
            seen.append("while closing")

        async with anyio.create_task_group() as tg:
            async with c.producer() as p4:
                handle = p4.send("t", b"in flight at the close")
                tg.start_soon(_call_soon, send_while_closing)  # runs at the close's first wait, the close begun
        assert (await handle).offset == 1  # the close still delivers what came before it
    return seen


async def _call_soon(fn) -> None:
    fn()


@pytest.mark.parametrize("runner", ["trio", "asyncio"])
def test_an_async_send_after_close_raises_at_once(daemon, runner):
    with sync_connect(daemon, client_id="admin") as admin:
        admin.create_topic("t")
    seen = trio.run(_send_after_close, daemon) if runner == "trio" else asyncio.run(_send_after_close(daemon))
    assert seen == ["after the block", "after close()", "after an exception", "while closing"]
    assert stored(daemon) == 2


def test_a_blocking_send_after_close_raises_at_once(daemon):
    with sync_connect(daemon, client_id="admin") as c:
        c.create_topic("t")
        with c.producer() as p:
            p.send("t", b"before")
        with pytest.raises(RuntimeError, match=CLOSED):
            p.send("t", b"after leaving the block")
        p2 = c.producer()
        p2.close()
        with pytest.raises(RuntimeError, match=CLOSED):
            p2.send("t", b"after close()")
        try:
            with c.producer() as p3:
                raise Boom()
        except Boom:
            pass
        with pytest.raises(RuntimeError, match=CLOSED):
            p3.send("t", b"after leaving by an exception")
    assert stored(daemon) == 1


# ---- close() from anywhere: cut short by a cancel scope inside the producer's block, or from another task ----

async def _close_cut_short(daemon: str) -> tuple[int, int]:
    async with connect(daemon, client_id="app-1") as c:
        async with c.producer() as p:
            handles = [p.send("t", b"%d" % i, partition=0) for i in range(200)]
            await handles[-1]  # through the burst: throttled from now on
            handles += [p.send("t", b"%d" % i, partition=0) for i in range(200, N)]
            with anyio.move_on_after(0.2) as scope:
                await p.close()  # would take seconds at the policy's rate
            assert scope.cancelled_caught
            with pytest.raises(RuntimeError, match=CLOSED):
                p.send("t", b"after a close cut short")
        # the block is left cleanly (its task group was never on this task's stack of cancel scopes)
        acked, errors = await async_outcomes(handles)
        stats = p.statistics()
        assert acked == stats.records_sent and len(errors) == stats.records_failed == N - acked
        assert 200 <= acked < N and stats.records_buffered == 0
        async with anyio.create_task_group() as tg, c.producer() as p2:
            last = p2.send("t", b"closed by another task")
            tg.start_soon(p2.close)
            with anyio.fail_after(5):
                while not p2._closed:  # the other task's close has begun
                    await anyio.sleep(0)
            with pytest.raises(RuntimeError, match=CLOSED):
                p2.send("t", b"after another task closed it")
        assert (await last).offset >= acked
        return acked, len(errors)


@pytest.mark.parametrize("runner", ["trio", "asyncio"])
def test_an_async_close_cut_short_inside_the_block_leaves_it_cleanly(daemon, runner):
    throttle(daemon)
    acked, failed = (trio.run(_close_cut_short, daemon) if runner == "trio"
                     else asyncio.run(_close_cut_short(daemon)))
    assert acked + failed == N
    assert stored(daemon) >= acked + 1


class SenderFault(Exception):
    pass


@pytest.mark.parametrize("runner", ["trio", "asyncio"])
def test_a_fault_in_the_sender_is_raised_by_the_producer_not_the_client(daemon, runner, monkeypatch):
    from millpond.client.producer import Producer

    async def broken_sender(self) -> None:
        raise SenderFault("sender")

    async def run() -> int:
        async with connect(daemon) as c:
            with pytest.raises(SenderFault, match="sender"):
                async with c.producer():
                    await anyio.sleep(0.05)
            monkeypatch.undo()
            async with c.producer() as p:  # the client is unharmed: its next producer works
                return (await p.send("t", b"after the fault")).offset

    with sync_connect(daemon, client_id="admin") as admin:
        admin.create_topic("t")
    monkeypatch.setattr(Producer, "_sender", broken_sender)
    offset = trio.run(run) if runner == "trio" else asyncio.run(run())
    assert offset == 0


# ---- closes that overlap, a close cut short by the caller, and a timeout that is not a number ----

async def _overlapping_closes(daemon: str, how: str) -> list:
    async with connect(daemon) as c:
        async with c.producer() as p:
            handles = [p.send("t", b"%d" % i) for i in range(50)]
            if how == "two tasks":
                async with anyio.create_task_group() as tg:
                    tg.start_soon(p.close)
                    tg.start_soon(p.close)
            elif how == "a task and the block's end":
                tg_cm = anyio.create_task_group()
                tg = await tg_cm.__aenter__()
                tg.start_soon(p.close)
            else:  # a bounded close racing the block's end
                tg_cm = anyio.create_task_group()
                tg = await tg_cm.__aenter__()
                tg.start_soon(lambda: p.close(timeout_s=5))
        if how != "two tasks":
            await tg_cm.__aexit__(None, None, None)
        return [(await h).offset for h in handles]


@pytest.mark.parametrize("how", ["two tasks", "a task and the block's end", "a bounded close and the block's end"])
@pytest.mark.parametrize("runner", ["trio", "asyncio"])
def test_closes_that_overlap_settle_every_record_once(daemon, runner, how):
    with sync_connect(daemon, client_id="admin") as admin:
        admin.create_topic("t")
    offsets = (trio.run(_overlapping_closes, daemon, how) if runner == "trio"
               else asyncio.run(_overlapping_closes(daemon, how)))
    assert offsets == list(range(50))
    assert stored(daemon) == 50


async def _close_cancelled(daemon: str) -> tuple[int, list[BaseException]]:
    async with connect(daemon, client_id="app-1") as c:
        p = c.producer()
        await p.__aenter__()
        handles = [p.send("t", b"%d" % i, partition=0) for i in range(200)]
        await handles[-1]  # through the burst: throttled from now on
        handles += [p.send("t", b"%d" % i, partition=0) for i in range(200, N)]
        with anyio.move_on_after(0.2):
            await p.close(timeout_s=30)  # the caller's own scope ends it, long before its bound
        return await async_outcomes(handles)


@pytest.mark.parametrize("runner", ["trio", "asyncio"])
def test_a_close_cut_short_by_the_caller_says_a_record_may_still_be_stored_not_timed_out(daemon, runner):
    throttle(daemon)
    acked, errors = (trio.run(_close_cancelled, daemon) if runner == "trio"
                     else asyncio.run(_close_cancelled(daemon)))
    assert 200 <= acked < N and len(errors) == N - acked
    assert {type(e) for e in errors} == {MillpondError}
    assert all("before the record was acknowledged; a batch already on its way may still have been stored"
               in str(e) for e in errors)
    assert stored(daemon) >= acked


@pytest.mark.parametrize("bad, kind", [("3", TypeError), (True, TypeError), (float("nan"), ValueError)])
def test_a_close_timeout_that_is_not_a_number_is_refused(daemon, bad, kind):
    async def run() -> None:
        async with connect(daemon) as c:
            async with c.producer() as p:
                with pytest.raises(kind, match="timeout_s must be a number of seconds or None"):
                    await p.close(timeout_s=bad)
                p.send("t", b"still open")  # the refused close changed nothing

    with sync_connect(daemon, client_id="admin") as admin:
        admin.create_topic("t")
    trio.run(run)
    assert stored(daemon) == 1


@pytest.mark.parametrize("bad, kind", [("3", TypeError), (float("nan"), ValueError)])
def test_a_blocking_close_with_a_timeout_that_is_not_a_number_changes_nothing(daemon, bad, kind):
    with sync_connect(daemon, client_id="admin") as c:
        c.create_topic("t")
        with c.producer() as p:
            h = p.send("t", b"before")
            with pytest.raises(kind, match="timeout_s must be a number of seconds or None"):
                p.close(timeout_s=bad)
            p.send("t", b"after the refused close")  # still open
        assert h.result(10).offset == 0  # leaving the block closed it, and the client's block is left too
    assert stored(daemon) == 2
