# Gathered acks of push delivery (client/subscription.py): `msg.ack()`s made together go in one queue_ack request,
# each returns once its own delete is durable (fsync always: the journal's high watermark covers it) with its own
# error if refused; acks made before a nack, or before leaving the block, reach the broker first.
from __future__ import annotations

import dataclasses

import pytest
import trio

from millpond.broker.server.embedded import open_broker
from millpond.broker.wire import errors
from millpond.client import connect
from millpond.client._connection import Connection


@pytest.fixture
def requests_sent(monkeypatch):
    """(api, number of receipt handles) of every queue_ack and queue_nack a client connection sends."""
    sent: list[tuple[str, int]] = []
    request = Connection.request

    async def spy(self, api, body, timeout_s, on_late=None):
        if api in ("queue_ack", "queue_nack"):
            sent.append((api, len(body["receipt_handles"])))
        return await request(self, api, body, timeout_s, on_late)

    monkeypatch.setattr(Connection, "request", spy)
    return sent


async def _pushed(sub, n):
    got = []
    async for msg in sub:
        got.append(msg)
        if len(got) == n:
            return got


async def test_acks_made_together_go_in_one_request_and_each_returns_once_its_delete_is_durable(
        tmp_path, requests_sent):
    async with open_broker(tmp_path, fsync="always") as broker, connect(broker.address, client_id="w") as c:
        await c.create_queue("q", visibility_timeout_s=300.0)
        q = c.queue("q")
        await q.send_batch([b"m%d" % i for i in range(10)])
        core = broker.engine.queues
        returned = []
        async with q.subscribe(prefetch=10) as sub:
            got = await _pushed(sub, 10)
            requests_sent.clear()

            async def ack(msg):
                await msg.ack()
                plog = core.journal.plog
                seq = int(msg.receipt_handle.split(":")[1])
                # the delete is applied and on disk: nothing is written past the synced end
                returned.append((msg.body, seq in core.manager.queues["q"].messages,
                                 plog.high_watermark == plog.log_end_offset))

            async with trio.open_nursery() as n:
                for msg in got:
                    n.start_soon(ack, msg)
            assert requests_sent == [("queue_ack", 10)]
            s = sub.statistics()
            assert (s.acked, s.unacked, s.broker_unacked) == (10, 0, 0)
        assert sorted(returned) == [(b"m%d" % i, False, True) for i in range(10)]
        info = await q.attributes()
        assert (info.messages_visible, info.messages_in_flight) == (0, 0)


async def test_a_refused_ack_in_a_gathered_request_raises_for_that_message_only(requests_sent):
    async with open_broker(None, fsync="never") as broker, connect(broker.address, client_id="w") as c:
        await c.create_queue("q", visibility_timeout_s=300.0)
        q = c.queue("q")
        await q.send_batch([b"a", b"b", b"c"])
        async with q.subscribe(prefetch=3) as sub:
            a, b, cc = await _pushed(sub, 3)
            forged = dataclasses.replace(b, receipt_handle="0123456789abcdef:1:1")  # another queue's handle
            outcomes = {}

            async def ack(msg, name):
                try:
                    await msg.ack()
                    outcomes[name] = None
                except errors.MillpondError as exc:
                    outcomes[name] = type(exc)

            requests_sent.clear()
            async with trio.open_nursery() as n:
                for msg, name in ((a, "a"), (forged, "forged"), (cc, "c")):
                    n.start_soon(ack, msg, name)
            assert requests_sent == [("queue_ack", 3)]
            assert outcomes == {"a": None, "forged": errors.ReceiptHandleInvalidError, "c": None}
            await b.ack()
        info = await q.attributes()
        assert (info.messages_visible, info.messages_in_flight) == (0, 0)


async def test_acks_made_before_a_nack_reach_the_broker_before_it(requests_sent):
    async with open_broker(None, fsync="never") as broker, connect(broker.address, client_id="w") as c:
        await c.create_queue("q", visibility_timeout_s=300.0)
        q = c.queue("q")
        await q.send_batch([b"m%d" % i for i in range(6)])
        async with q.subscribe(prefetch=6) as sub:
            got = await _pushed(sub, 6)
            requests_sent.clear()
            async with trio.open_nursery() as n:
                for msg in got[:5]:
                    n.start_soon(msg.ack)
                await trio.sleep(0)
                await trio.sleep(0)  # the acks are made; the nack comes after them
                await got[5].nack()
            assert requests_sent == [("queue_ack", 5), ("queue_nack", 1)]
            again = await sub.__anext__()
            assert (again.body, again.receive_count) == (b"m5", 2)
            await again.ack()
        info = await q.attributes()
        assert (info.messages_visible, info.messages_in_flight) == (0, 0)


async def test_acks_outstanding_when_the_block_is_left_still_delete_their_messages():
    async with open_broker(None, fsync="never") as broker, connect(broker.address, client_id="w") as c:
        await c.create_queue("q", visibility_timeout_s=300.0)
        q = c.queue("q")
        await q.send_batch([b"m%d" % i for i in range(8)])
        failures = []

        async def ack(msg):
            try:
                await msg.ack()
            except errors.MillpondError as exc:
                failures.append(exc)

        async with trio.open_nursery() as n:
            async with q.subscribe(prefetch=8) as sub:
                got = await _pushed(sub, 8)
                for msg in got[:4]:
                    n.start_soon(ack, msg)
                await trio.sleep(0)  # four acks gathered, not yet answered
                for msg in got[4:]:
                    n.start_soon(ack, msg)  # these run once the block is left
        assert failures == []
        info = await q.attributes()
        assert (info.messages_visible, info.messages_in_flight) == (0, 0)
