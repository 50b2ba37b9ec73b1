# Push delivery over TCP against the in-process broker: 4 subscribers with a prefetch window of 5 drain 2,000
# messages, each acked once, and neither the broker's count nor the client's ever passes 5 unacknowledged; a nack
# brings a message back; a subscriber whose connection closes hands its messages back at once (well before their
# visibility timeout), as does leaving the `async with` block; a refused subscribe raises on entering.
from __future__ import annotations

import socket
import struct

import pytest
import trio

from millpond.broker.server.embedded import open_broker
from millpond.broker.wire import errors
from millpond.client import connect

from tests.server.serverkit import RawClient

MESSAGES = 2000
PREFETCH = 5


async def test_four_subscribers_with_prefetch_5_drain_2000_messages_never_holding_more_than_5():
    acked: list[bytes] = []
    held_max = [0] * 4
    async with open_broker(None, fsync="never") as broker, connect(broker.address, client_id="push") as c:
        await c.create_queue("jobs", visibility_timeout_s=60.0)
        q = c.queue("jobs")
        for i in range(0, MESSAGES, 10):
            await q.send_batch([b"m%d" % j for j in range(i, i + 10)])
        stats = []

        async def subscriber(n: int) -> None:
            async with connect(broker.address, client_id=f"sub{n}") as own:
                async with own.queue("jobs").subscribe(prefetch=PREFETCH) as sub:
                    async for msg in sub:
                        # the client's view: delivered (handed out or buffered) and not yet acked
                        held_max[n] = max(held_max[n], sub.statistics().unacked)
                        await trio.sleep(0)  # let the others run: the four share the queue
                        await msg.ack()
                        acked.append(msg.body)
                        if len(acked) == MESSAGES:
                            break
                    stats.append(sub.statistics())
                    done.set()

        done = trio.Event()
        with trio.fail_after(60):
            async with trio.open_nursery() as n:
                for i in range(4):
                    n.start_soon(subscriber, i)
                await done.wait()
                n.cancel_scope.cancel()
        info = await q.attributes()
    assert sorted(acked) == sorted(b"m%d" % i for i in range(MESSAGES))  # each exactly once
    assert (info.messages_visible, info.messages_in_flight) == (0, 0)
    assert max(held_max) <= PREFETCH
    assert stats and all(0 < s.broker_unacked_max <= PREFETCH for s in stats)
    assert max(held_max) > 1  # the window was used, not one message at a time


async def test_a_nack_brings_the_message_back_and_leaving_the_block_hands_back_the_rest():
    async with open_broker(None, fsync="never") as broker, connect(broker.address, client_id="push") as c:
        await c.create_queue("q", visibility_timeout_s=300.0)
        q = c.queue("q")
        for body in (b"a", b"b", b"c"):
            await q.send(body)
        async with q.subscribe(prefetch=3) as sub:
            got = []
            async for msg in sub:
                got.append(msg)
                if len(got) == 3:
                    break
            assert [m.body for m in got] == [b"a", b"b", b"c"]
            await got[0].nack()
            again = await sub.__anext__()
            assert (again.body, again.receive_count) == (b"a", 2)
            await again.ack()
            s = sub.statistics()
            assert (s.delivered, s.acked, s.nacked, s.unacked, s.broker_unacked) == (4, 1, 1, 2, 2)
        info = await q.attributes()
        assert (info.messages_visible, info.messages_in_flight) == (2, 0)  # b and c, at once
        back = await q.receive(10)
        assert sorted((m.body, m.receive_count) for m in back) == [(b"b", 2), (b"c", 2)]


async def test_a_refused_subscribe_raises_on_entering():
    async with open_broker(None, fsync="never") as broker, connect(broker.address, client_id="push") as c:
        with pytest.raises(errors.UnknownQueueError):
            async with c.queue("nope").subscribe(prefetch=1):
                pass
        await c.create_queue("q")
        with pytest.raises(errors.InvalidParameterValueError, match="prefetch"):
            async with c.queue("q").subscribe(prefetch=1001):
                pass
        assert await c.list_queues() == ["q"]  # the connection still serves


async def test_closing_a_subscribers_connection_returns_its_messages_at_once():
    async with open_broker(None, fsync="never") as broker, connect(broker.address, client_id="other") as c:
        await c.create_queue("q", visibility_timeout_s=3600.0)
        q = c.queue("q")
        for i in range(8):
            await q.send(b"m%d" % i)
        stream = await trio.open_tcp_stream(broker.host, broker.port)
        raw = RawClient(stream)
        await raw.ok("hello", {"protocol_version": 1, "client_id": "leaving"})
        await raw.send("queue_subscribe", {"queue": "q", "subscription": 1, "prefetch": 5})
        pushed = await raw.ok("queue_deliver", {"subscription": 1, "wait_ms": 0})
        assert [m["body"] for m in pushed["messages"]] == [b"m%d" % i for i in range(5)] and pushed["unacked"] == 5
        assert (await q.attributes()).messages_in_flight == 5
        start = trio.current_time()
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        await stream.aclose()
        got = []
        with trio.fail_after(10):
            while len(got) < 8:
                got += await q.receive(10, wait_s=5.0)
        assert trio.current_time() - start < 10  # not the hour of their visibility timeout
        assert sorted((m.body, m.receive_count) for m in got) == sorted(
            [(b"m%d" % i, 2) for i in range(5)] + [(b"m%d" % i, 1) for i in range(5, 8)])
