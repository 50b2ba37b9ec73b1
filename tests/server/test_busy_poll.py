# The busy poll (BrokerConfig.busy_poll_s, connect(busy_poll_s=...)): after a request the broker's event loop keeps
# polling for busy_poll_s of wall time, then sleeps; it stands aside while a worker thread runs; it is off at 0 and
# under a virtual clock; `millpond serve` polls by default and an embedded broker does not. The async client polls
# while a task awaits an answer, never during a long poll, and stops once the answer is in. Real time throughout
# (polling is bounded by the wall clock); no timing is asserted, only whether the loop polls.
from __future__ import annotations

import functools
import threading

import pytest
import trio
import trio.testing

from millpond.broker.cli.serve import SERVE_BUSY_POLL_S, daemon_config
from millpond.broker.config import BrokerConfig
from millpond.broker.core.outcomes import Answer, Offload
from millpond.broker.server.embedded import open_broker
from millpond.broker.server.loop import RequestLoop
from millpond.broker.wire.errors import InvalidConfigError
from millpond.broker.wire.frames import FrameDecoder, decode_request, encode_response
from millpond.client import _connection as client_connection
from millpond.client import connect

from tests.server.test_loop import Codec, Conn, Engine


async def _loop(nursery, script, busy_poll_s):
    loop = RequestLoop(Engine(script), Codec(), fsync="never", fsync_interval_s=1.0, busy_poll_s=busy_poll_s)
    await nursery.start(loop.run)
    return loop


async def test_after_a_request_the_loop_polls_for_its_window_and_then_sleeps(nursery):
    loop = await _loop(nursery, {"a": lambda ctx: Answer("A")}, busy_poll_s=1.0)
    await trio.sleep(0.05)
    assert loop.statistics()["polling"] is False  # nothing served yet: asleep
    conn = Conn()
    loop.on_frame(conn, b"1:a")
    assert conn.sent == [b"1=A"]
    await trio.sleep(0.05)
    assert loop.statistics()["polling"] is True
    await trio.sleep(1.2)  # the window (1 s of wall time from the request) is over
    assert loop.statistics()["polling"] is False
    loop.on_frame(conn, b"2:a")  # the next request opens a new window
    await trio.sleep(0.05)
    assert loop.statistics()["polling"] is True


async def test_a_loop_with_busy_poll_0_never_polls(nursery):
    loop = await _loop(nursery, {"a": lambda ctx: Answer("A")}, busy_poll_s=0.0)
    conn = Conn()
    for cid in range(5):
        loop.on_frame(conn, b"%d:a" % cid)
        await trio.sleep(0.01)
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
    loop.on_frame(conn, b"1:slow")
    while not started.is_set():
        await trio.sleep(0.005)
    await trio.sleep(0.05)
    # within the window, but the worker thread needs the GIL to hand its result back
    assert loop.statistics()["polling"] is False
    release.set()
    with trio.fail_after(5):
        while not conn.sent:
            await trio.sleep(0.005)
    assert conn.sent == [b"1=W"]
    loop.on_frame(conn, b"2:a")
    await trio.sleep(0.05)
    assert loop.statistics()["polling"] is True


async def test_under_a_virtual_clock_the_loop_does_not_poll(nursery, autojump_clock):
    loop = await _loop(nursery, {"a": lambda ctx: Answer("A")}, busy_poll_s=1.0)
    conn = Conn()
    loop.on_frame(conn, b"1:a")
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


async def _slow_broker(stream, answered: list, delay_s: float):
    """Answers the handshake at once and every other request after ``delay_s`` (a metadata-shaped empty map)."""
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
                    await trio.sleep(delay_s)
                    answer = {"topics": {}}
                await stream.send_all(encode_response(cid, 0, answer))
                answered.append(api)


async def _start_slow_broker(nursery, answered: list, delay_s: float) -> int:
    listeners = await nursery.start(functools.partial(
        trio.serve_tcp, lambda s: _slow_broker(s, answered, delay_s), 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def test_the_async_client_polls_while_a_task_awaits_an_answer_and_stops_once_it_is_in(nursery):
    answered: list[str] = []
    port = await _start_slow_broker(nursery, answered, 0.3)
    async with connect(f"127.0.0.1:{port}", busy_poll_s=1.0) as c:
        conn = c._conn
        await trio.sleep(0.05)
        assert conn.polling is False  # the handshake's poll ended with its answer
        async with trio.open_nursery() as n:
            n.start_soon(c.request, "metadata", {"topics": []})
            await trio.sleep(0.1)
            assert conn.polling is True  # answer due in 0.3 s: polling, not sleeping
        assert answered[-1] == "metadata"
        await trio.sleep(0.05)
        assert conn.polling is False  # nothing awaited any more


async def test_the_client_does_not_poll_when_busy_poll_is_0_nor_for_requests_nobody_awaits(nursery):
    answered: list[str] = []
    port = await _start_slow_broker(nursery, answered, 0.3)
    async with connect(f"127.0.0.1:{port}", busy_poll_s=0) as c:
        async with trio.open_nursery() as n:
            n.start_soon(c.request, "metadata", {"topics": []})
            await trio.sleep(0.1)
            assert c._conn.polling is False
    async with connect(f"127.0.0.1:{port}", busy_poll_s=1.0) as c:
        conn = c._conn
        await trio.sleep(0.05)  # the handshake's poll has ended
        done = []
        conn.begin_callback("metadata", {"topics": []}, lambda response, error: done.append(error))
        await conn.send_queued()  # written, but no task awaits it (as the producer's sender and a long poll)
        await trio.sleep(0.1)
        assert conn.polling is False
        with trio.fail_after(5):
            while not done:
                await trio.sleep(0.01)
        assert done == [None]


async def test_the_client_stops_polling_when_answers_keep_coming_after_its_window_and_tries_again_later(
        nursery, monkeypatch):
    # answers take 50 ms, the window is 10 ms: every poll runs out (a durable write, a long poll with nothing to read)
    monkeypatch.setattr(client_connection, "POLL_PROBE_S", 0.5)
    answered: list[str] = []
    port = await _start_slow_broker(nursery, answered, 0.05)

    async def polled_while_awaiting(c) -> bool:
        seen = []
        async with trio.open_nursery() as n:
            n.start_soon(c.request, "metadata", {"topics": []})
            await trio.sleep(0.005)
            seen.append(c._conn.polling)
        return seen[0]

    async with connect(f"127.0.0.1:{port}", busy_poll_s=0.01) as c:
        polled = [await polled_while_awaiting(c) for _ in range(40)]  # about 2 s
    assert polled[:3] == [True, True, True]  # polls at first, and a few misses are tolerated...
    assert 1 <= polled[12:].count(True) <= 4  # ...then it pauses, trying one poll every 0.5 s
