# The busy poll (BrokerConfig.busy_poll_s, connect(busy_poll_s=...)): after a request the broker's event loop keeps
# polling for busy_poll_s of wall time, then sleeps; it stands aside while a worker thread runs; it is off at 0 and
# under a virtual clock; `millpond serve` polls by default and an embedded broker does not. The async client polls
# while a task awaits an answer, never for a request nobody awaits, stops once the answer is in, and pauses while
# answers come after its window. The poll's wall clock is a fake the tests move; the loop runs a few turns between
# steps (no sleeping); the fake broker answers when a test lets it.
from __future__ import annotations

import threading

import pytest
import trio

from millpond.broker.cli.serve import SERVE_BUSY_POLL_S, daemon_config
from millpond.broker.config import BrokerConfig
from millpond.broker.core.outcomes import Answer, Offload
from millpond.broker.server.embedded import open_broker
from millpond.broker.server.loop import RequestLoop
from millpond.broker.wire.errors import InvalidConfigError
from millpond.broker.wire.frames import FrameDecoder, decode_request, encode_response
from millpond.client import _connection as client_connection
from millpond.client import connect

from tests.server.test_loop import Codec, Conn, Engine, feed


class WallClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def turns(n: int = 20) -> None:
    """Let every task run a few times (the poll task decides at each of its turns)."""
    for _ in range(n):
        await trio.lowlevel.checkpoint()


async def _loop(nursery, script, busy_poll_s, clock=None):
    loop = RequestLoop(Engine(script), Codec(), fsync="never", fsync_interval_s=1.0, busy_poll_s=busy_poll_s,
                       poll_clock=clock or WallClock())
    await nursery.start(loop.run)
    return loop


async def test_after_a_request_the_loop_polls_for_its_window_and_then_sleeps(nursery):
    clock = WallClock()
    loop = await _loop(nursery, {"a": lambda ctx: Answer("A")}, busy_poll_s=1.0, clock=clock)
    await turns()
    assert loop.statistics()["polling"] is False  # nothing served yet: asleep
    conn = Conn()
    feed(loop, conn, b"1:a")
    assert conn.sent == [b"1=A"]
    await turns()
    assert loop.statistics()["polling"] is True
    clock.t += 0.999
    await turns()
    assert loop.statistics()["polling"] is True  # still within the window
    clock.t += 0.002
    await turns()
    assert loop.statistics()["polling"] is False  # 1 s of wall time from the request: over
    feed(loop, conn, b"2:a")  # the next request opens a new window
    await turns()
    assert loop.statistics()["polling"] is True


async def test_a_loop_with_busy_poll_0_never_polls(nursery):
    loop = await _loop(nursery, {"a": lambda ctx: Answer("A")}, busy_poll_s=0.0)
    conn = Conn()
    for cid in range(5):
        feed(loop, conn, b"%d:a" % cid)
        await turns()
        assert loop.statistics()["polling"] is False
    assert len(conn.sent) == 5


async def test_the_busy_poll_stands_aside_while_a_worker_thread_runs(nursery):
    started, release = threading.Event(), threading.Event()

    def work():
        started.set()
        release.wait(10)
        return "W"

    loop = await _loop(nursery, {"slow": lambda ctx: Offload(work, lambda ctx, result: Answer(result)),
                                 "a": lambda ctx: Answer("A")}, busy_poll_s=1.0)
    conn = Conn()
    feed(loop, conn, b"1:slow")
    await trio.to_thread.run_sync(started.wait)
    await turns()
    # within the window (the clock stands still), but the worker thread needs the GIL to hand its result back
    assert loop.statistics()["polling"] is False
    release.set()
    with trio.fail_after(5):
        while not conn.sent:  # the worker thread hands its result back
            await trio.sleep(0.001)
    assert conn.sent == [b"1=W"]
    feed(loop, conn, b"2:a")
    await turns()
    assert loop.statistics()["polling"] is True


async def test_under_a_virtual_clock_the_loop_does_not_poll(nursery, autojump_clock):
    loop = await _loop(nursery, {"a": lambda ctx: Answer("A")}, busy_poll_s=1.0)
    conn = Conn()
    feed(loop, conn, b"1:a")
    await trio.sleep(0.5)  # virtual: jumps at once, which a polling task would forbid
    assert loop.statistics()["polling"] is False
    assert conn.sent == [b"1=A"]


@pytest.mark.parametrize("bad", [-0.001, 1.5, "0.5", True])
def test_busy_poll_s_out_of_range_or_not_a_number_is_refused_by_name(bad):
    with pytest.raises(InvalidConfigError, match="busy_poll_s must be 0-1 seconds"):
        BrokerConfig(busy_poll_s=bad)


def test_the_daemon_polls_by_default_and_keeps_a_configured_value():
    assert BrokerConfig().busy_poll_s is None  # the default: decided by who runs the broker
    assert daemon_config(BrokerConfig()).busy_poll_s == SERVE_BUSY_POLL_S == 0.0005
    assert daemon_config(BrokerConfig(busy_poll_s=0)).busy_poll_s == 0
    assert daemon_config(BrokerConfig(busy_poll_s=0.002)).busy_poll_s == 0.002


async def test_an_embedded_broker_does_not_poll_unless_asked():
    async with open_broker(fsync="never") as b:
        assert b.loop.busy_poll_s == 0
    async with open_broker(fsync="never", busy_poll_s=0.001) as b:
        assert b.loop.busy_poll_s == 0.001


# ---- the client ----

LIMITS = {"frame_bytes_max": 1 << 20, "batch_bytes_max": 1 << 19, "requests_in_flight_max": 64,
          "partitions_max": 16, "fetch_bytes_max": 1 << 19}


async def _held_broker(stream, gate: trio.MemoryReceiveChannel):
    """Answers the handshake at once and every other request once the test lets it through ``gate`` (a
    metadata-shaped empty map)."""
    decoder = FrameDecoder(1 << 20)
    async with stream:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            decoder.feed(data)
            while (body := decoder.next_frame_view()) is not None:
                cid, api, _ = decode_request(bytes(body))
                body.release()
                if api == "hello":
                    answer = {"broker_version": "test", "fsync": "never", "limits": LIMITS}
                else:
                    await gate.receive()
                    answer = {"topics": {}}
                await stream.send_all(encode_response(cid, 0, answer))


async def _client(nursery, busy_poll_s: float):
    """A client of a held broker, its poll on a fake wall clock once the handshake is done, and the gate."""
    let_through, gate = trio.open_memory_channel(100)
    listeners = await nursery.start(trio.serve_tcp, lambda s: _held_broker(s, gate), 0)
    port = listeners[0].socket.getsockname()[1]
    return connect(f"127.0.0.1:{port}", busy_poll_s=busy_poll_s), let_through


async def _request_polled(c, let_through, clock: WallClock | None = None, late_s: float = 0.0) -> bool:
    """One awaited request: whether the client polled while waiting; its answer comes ``late_s`` of (fake) wall
    time after it was sent."""
    async with trio.open_nursery() as n:
        n.start_soon(c.request, "metadata", {"topics": []})
        await turns()
        polled = c._conn.polling
        if clock is not None:
            clock.t += late_s
            await turns()
        await let_through.send(None)
    return polled


async def test_the_async_client_polls_while_a_task_awaits_an_answer_and_stops_once_it_is_in(nursery):
    connecting, let_through = await _client(nursery, busy_poll_s=1.0)
    async with connecting as c:
        conn = c._conn
        conn._poll_clock = WallClock()
        await turns()
        assert conn.polling is False  # the handshake's poll ended with its answer
        assert await _request_polled(c, let_through) is True  # the answer is held: polling, not sleeping
        await turns()
        assert conn.polling is False  # nothing awaited any more


async def test_the_client_does_not_poll_when_busy_poll_is_0_nor_for_requests_nobody_awaits(nursery):
    connecting, let_through = await _client(nursery, busy_poll_s=0)
    async with connecting as c:
        assert await _request_polled(c, let_through) is False
    connecting, let_through = await _client(nursery, busy_poll_s=1.0)
    async with connecting as c:
        conn = c._conn
        await turns()  # the handshake's poll has ended
        done = []
        conn.begin_callback("metadata", {"topics": []}, lambda response, error: done.append(error))
        await conn.send_queued()  # written, but no task awaits it (as the producer's sender and a long poll)
        await turns()
        assert conn.polling is False
        await let_through.send(None)
        with trio.fail_after(5):
            while not done:
                await trio.lowlevel.checkpoint()
        assert done == [None]


async def test_the_client_stops_polling_when_answers_keep_coming_after_its_window_and_tries_again_later(nursery):
    # every answer comes 21 ms after its request, the window is 10 ms: each poll runs out (a durable write, a long
    # poll with nothing to read)
    connecting, let_through = await _client(nursery, busy_poll_s=0.01)
    clock = WallClock()
    async with connecting as c:
        c._conn._poll_clock = clock
        polled = [await _request_polled(c, let_through, clock, late_s=0.021) for _ in range(30)]
    # polls while at least half of the recent polls ended with their answer in (weight 0.1 each): 7 misses, then
    # one try at once and one every POLL_PROBE_S (0.1 s: every 5th request here)
    assert client_connection.POLL_PROBE_S == 0.1
    assert polled[:8] == [True] * 8
    assert polled[8:] == ([False] * 4 + [True]) * 4 + [False] * 2
