# The idempotent producer (the default): several batches per partition in flight, and a connection lost
# mid-flight resends them without storing any twice or out of order.
from __future__ import annotations

import socket

import pytest
import trio

from clientkit import drain


def lose_an_answer(monkeypatch, after: int) -> None:
    """Make the broker store the ``after``-th produce and then drop the connection instead of answering it: the
    client cannot know the batch was stored, and sends it again."""
    from millpond.broker.server.connection import Connection
    from millpond.broker.wire.frames import decode_response

    original = Connection.send
    seen = 0

    def send(self, pieces):
        nonlocal seen
        _, code, body = decode_response(b"".join(bytes(p) for p in pieces)[4:])
        if code == 0 and isinstance(body, dict) and ("base_offset" in body or "results" in body):
            seen += 1
            if seen == after:  # stored, and the answer never leaves
                self.stream.socket.shutdown(socket.SHUT_RDWR)
                return
        original(self, pieces)

    monkeypatch.setattr(Connection, "send", send)


@pytest.mark.parametrize("idempotent", [True, False])
async def test_a_lost_answer_stores_the_batch_once_only_when_idempotent(client, monkeypatch, idempotent):
    await client.create_topic("idem", partitions=2)
    n = 20_000
    lose_an_answer(monkeypatch, after=3)
    async with client.producer(linger_s=0, batch_bytes=8192, retry_backoff_s=(0.001, 0.01),
                               idempotent=idempotent) as p:
        handles = [p.send("idem", b"%d" % i, partition=i % 2) for i in range(n)]
    stats = p.statistics()
    assert stats.records_failed == 0 and stats.retries >= 1
    metas = [await h for h in handles]
    async with client.consumer("idem", auto_offset_reset="earliest") as cons:
        got = await drain(cons, n)
        got += await cons.getmany(timeout_s=0.2)
    if idempotent:
        for part in (0, 1):
            assert [m.offset for m in metas if m.partition == part] == list(range(n // 2))
            assert [int(r.value) for r in got if r.partition == part] == list(range(part, n, 2))
    else:  # at least once: the batch whose answer was lost is stored twice, in order
        assert len(got) > n
        for part in (0, 1):
            values = [int(r.value) for r in got if r.partition == part]
            assert sorted(set(values)) == list(range(part, n, 2))


async def test_an_answer_that_never_comes_times_out_and_the_batch_is_stored_once(broker, monkeypatch, autojump_clock):
    """The broker stores a batch and holds its answer (the connection stays up): after ``request_timeout_s`` the
    producer gives up on that request, sends the batch again and is answered with the first offsets."""
    from millpond.broker.server.connection import Connection
    from millpond.broker.wire.frames import decode_response
    from millpond.client import connect

    original = Connection.send
    held = []

    def send(self, pieces):
        _, code, body = decode_response(b"".join(bytes(p) for p in pieces)[4:])
        if code == 0 and isinstance(body, dict) and ("base_offset" in body or "results" in body) and not held:
            held.append((self, pieces, body))  # stored, and its answer held back until the retry is through
            return
        original(self, pieces)

    monkeypatch.setattr(Connection, "send", send)
    async with connect(broker.address, client_id="slow", request_timeout_s=0.3) as c:
        await c.create_topic("held")
        async with c.producer(linger_s=0, retry_backoff_s=(0.001, 0.01)) as p:
            t0 = trio.current_time()
            with trio.fail_after(10):
                first = await p.send("held", b"a")
            waited = trio.current_time() - t0
            conn, pieces, _ = held[0]
            original(conn, pieces)  # too late: the client gave up on that request and drops its answer
            second = await p.send("held", b"b")
        stats = p.statistics()
        async with c.consumer("held", auto_offset_reset="earliest") as cons:
            got = await drain(cons, 2)
            got += await cons.getmany(timeout_s=0.2)
    assert held[0][2]["base_offset"] == 0  # a lone awaited send is a produce of its own
    assert (first.offset, second.offset) == (0, 1)  # the retry was recognised, not stored again
    assert 0.3 <= waited < 5 and stats.retries == 1 and stats.records_failed == 0
    assert [r.value for r in got] == [b"a", b"b"]


async def test_without_idempotence_one_batch_per_partition_is_in_flight(client):
    await client.create_topic("plain")
    async with client.producer(linger_s=0, batch_bytes=4096, idempotent=False) as p:
        for i in range(2000):
            p.send("plain", b"x" * 100, partition=0)
        peak = 0
        with trio.fail_after(10):
            while p.statistics().records_sent < 2000:
                peak = max(peak, p._acc._in_flight.get(("plain", 0), 0))
                await trio.sleep(0)
    assert peak == 1 and p._acc.producer_id == -1


async def test_idempotent_producer_pipelines_batches_of_one_partition(client):
    await client.create_topic("pipe")
    async with client.producer(linger_s=0, batch_bytes=4096) as p:
        for i in range(5000):
            p.send("pipe", b"x" * 100, partition=0)
        peak = 0
        with trio.fail_after(10):
            while p.statistics().records_sent < 5000:
                peak = max(peak, p._acc._in_flight.get(("pipe", 0), 0))
                await trio.sleep(0)
    assert 2 <= peak <= 5 and p._acc.producer_id >= 0


async def test_a_batch_refused_out_of_order_for_ever_fails_after_delivery_timeout_s(broker, client, monkeypatch, autojump_clock):
    """A broker that keeps answering OUT_OF_ORDER_SEQUENCE (its producer state lost) is not retried for ever: the
    batch fails with that error once it is delivery_timeout_s old."""
    from millpond.broker.core.log.api import Produce
    from millpond.broker.wire.errors import OutOfOrderSequenceError

    await client.create_topic("ooo")

    def refuse(req, ctx):
        raise OutOfOrderSequenceError("expected sequence 7")

    monkeypatch.setitem(broker.engine._handlers, Produce, refuse)
    async with client.producer(linger_s=0, delivery_timeout_s=0.5) as p:
        handle = p.send("ooo", b"x")
        t0 = trio.current_time()
        with trio.fail_after(10), pytest.raises(OutOfOrderSequenceError, match="expected sequence 7"):
            await handle
        waited = trio.current_time() - t0
    assert 0.5 <= waited < 5 and p.statistics().records_failed == 1
