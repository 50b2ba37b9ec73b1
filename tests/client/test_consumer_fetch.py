# The consumer's fetch answer is applied as it arrives (by the connection's reader); a fetch whose answer never
# comes is given up after request_timeout_s plus its long-poll wait and asked again, and a seek while a fetch is
# parked drops that fetch's late answer.
from __future__ import annotations

import trio

from clientkit import drain


async def test_a_fetch_answer_that_never_comes_is_asked_again_after_the_timeout(broker, monkeypatch, autojump_clock):
    from millpond.broker.server.connection import Connection
    from millpond.broker.wire.frames import decode_response
    from millpond.client import connect

    original = Connection.send
    held = []

    def send(self, pieces):
        _, code, body = decode_response(b"".join(bytes(p) for p in pieces)[4:])
        rows = body.get("partitions") if code == 0 and isinstance(body, dict) else None
        if rows and rows[0][5] and not held:
            held.append(rows)  # the first fetch answer carrying records never leaves
            return
        original(self, pieces)

    async with connect(broker.address, client_id="c", request_timeout_s=0.3) as c:
        await c.create_topic("f")
        async with c.producer() as p:
            for i in range(5):
                await p.send("f", b"%d" % i)
        monkeypatch.setattr(Connection, "send", send)
        async with c.consumer("f", auto_offset_reset="earliest", max_wait_s=0.1) as cons:
            t0 = trio.current_time()
            got = await drain(cons, 5, timeout_s=10)
            waited = trio.current_time() - t0
    assert held and [r.value for r in got] == [b"%d" % i for i in range(5)]
    assert [r.offset for r in got] == list(range(5))  # asked again from the same offset: nothing lost or doubled
    assert waited >= 0.3 + 0.1


async def test_a_seek_while_a_fetch_is_parked_drops_its_answer(client, autojump_clock):
    await client.create_topic("s")
    async with client.producer() as p:
        for i in range(3):
            await p.send("s", b"%d" % i)
    async with client.consumer("s", auto_offset_reset="latest", max_wait_s=5.0) as cons:
        assert await cons.getmany(timeout_s=0.2) == []  # a long poll is parked at the end
        cons.seek("s", 0, 1)
        got = await drain(cons, 2)
    assert [(r.offset, r.value) for r in got] == [(1, b"1"), (2, b"2")]
