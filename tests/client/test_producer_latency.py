# When the producer sends a partial batch, end to end against a real broker: a lone awaited send pays one round
# trip, not the linger (async and blocking producers); a caller awaiting a record behind a batch in flight gets it
# sent with that batch's answer; a busy producer's batches still fill. linger_s is set far beyond each test's
# deadline, so a batch that waited for it would fail the test rather than slow it down.
from __future__ import annotations

import time

import trio

from millpond.client.sync import connect as sync_connect

LONG_LINGER_S = 30.0


async def test_a_lone_awaited_send_does_not_wait_for_linger(client):
    await client.create_topic("lone")
    async with client.producer(linger_s=LONG_LINGER_S) as p:
        with trio.fail_after(10):
            offsets = [(await p.send("lone", b"%d" % i)).offset for i in range(20)]
    assert offsets == list(range(20)) and p.statistics().batches_sent == 20


async def test_an_awaited_record_behind_a_batch_in_flight_goes_with_its_answer(client):
    await client.create_topic("behind")
    async with client.producer(linger_s=LONG_LINGER_S) as p:
        first = p.send("behind", b"first")
        with trio.fail_after(10):
            while not (first._follow().sent or first.done()):
                await trio.sleep(0)  # let the sender take the first batch (it goes at once: the producer was idle)
            second = p.send("behind", b"second")  # opened while the first is in flight: it would linger...
            assert (await second).offset == 1  # ...but a caller awaits it
        assert (await first).offset == 0


async def test_concurrent_awaited_sends_share_batches_without_lingering(client):
    await client.create_topic("many")
    async with client.producer(linger_s=LONG_LINGER_S) as p:

        async def sender(i: int) -> None:
            for j in range(10):
                await p.send("many", b"%d-%d" % (i, j))

        with trio.fail_after(10):
            async with trio.open_nursery() as n:
                for i in range(50):
                    n.start_soon(sender, i)
    s = p.statistics()
    assert s.records_sent == 500 and s.batches_sent <= 125  # records sent meanwhile went together


async def test_a_busy_producers_batches_fill_rather_than_follow_each_answer(client):
    # The bench's loop: send, yield now and then, never await a record. After the first batch (sent at once), the
    # answers in flight do not cut batches short: they fill to batch_bytes (linger is out of reach here).
    await client.create_topic("busy")
    batch_bytes = 65536
    n = 20_000
    async with client.producer(linger_s=LONG_LINGER_S, batch_bytes=batch_bytes) as p:
        for i in range(n):
            p.send("busy", b"x" * 100)
            if i % 64 == 63:
                await trio.sleep(0)
        with trio.fail_after(10):
            await p.flush()
    s = p.statistics()
    per_batch = batch_bytes // 130  # a record of 100 bytes is counted as about 130 against batch_bytes
    assert s.records_sent == n and s.batches_sent <= n // per_batch + 3


def test_the_blocking_producer_sends_a_lone_record_at_once(daemon):
    with sync_connect(daemon, client_id="lone-sync") as c:
        c.create_topic("lone-sync")
        with c.producer(linger_s=LONG_LINGER_S) as p:
            start = time.monotonic()
            offsets = [p.send("lone-sync", b"%d" % i).result(timeout=10).offset for i in range(20)]
            assert time.monotonic() - start < 10
        assert offsets == list(range(20))
