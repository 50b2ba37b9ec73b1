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


async def test_an_awaited_send_writes_its_request_from_the_awaiting_task(client):
    # The awaiting task takes the sender's turn: the batch is written from it, with no hop to the sender task.
    await client.create_topic("inline")
    async with client.producer(linger_s=LONG_LINGER_S) as p:
        await p.send("inline", b"warm")  # connection and metadata in place
        writers = []
        queue = p._queue_batches

        def recording(conn, batches):
            writers.append((trio.lowlevel.current_task(), [b.rows[0][3] for b in batches]))
            queue(conn, batches)

        p._queue_batches = recording
        with trio.fail_after(10):
            assert (await p.send("inline", b"now")).offset == 1
    assert writers[0] == (trio.lowlevel.current_task(), [b"now"])


async def test_awaited_sends_larger_than_the_socket_buffer_arrive_whole(client):
    # A write the socket takes only in part leaves the rest, in order, for the waiting path.
    await client.create_topic("big")
    values = [bytes([65 + i]) * (3 * 1024 * 1024 + i) for i in range(3)]
    async with client.producer(linger_s=LONG_LINGER_S) as p:
        with trio.fail_after(30):
            offsets = [(await p.send("big", v)).offset for v in values]
        small = [p.send("big", b"after-%d" % i) for i in range(5)]
        with trio.fail_after(30):
            offsets += [(await h).offset for h in small]
    assert offsets == list(range(8))
    async with client.consumer(None, auto_offset_reset="earliest") as cons:
        cons.assign([("big", 0)])
        got = []
        with trio.fail_after(30):
            while len(got) < 8:
                got += [r.value for r in await cons.getmany(timeout_s=1)]
    assert got == values + [b"after-%d" % i for i in range(5)]


async def test_awaited_and_unawaited_sends_of_an_idempotent_producer_keep_each_partitions_order(client):
    # Several batches of a partition in flight (idempotent): the awaiting tasks' turns and the sender's never
    # write a partition's batches out of sequence (the broker would refuse them).
    await client.create_topic("order", partitions=3)
    async with client.producer(idempotent=True, linger_s=0.001) as p:

        async def awaiting(i: int) -> None:
            for j in range(30):
                await p.send("order", b"a%d-%d" % (i, j), partition=j % 3)

        with trio.fail_after(30):
            async with trio.open_nursery() as n:
                for i in range(4):
                    n.start_soon(awaiting, i)
                for j in range(300):
                    p.send("order", b"u-%d" % j, partition=j % 3)
                    if j % 7 == 0:
                        await trio.sleep(0)
            await p.flush()
        s = p.statistics()
    assert s.records_sent == 420 and s.records_failed == 0 and s.retries == 0
    async with client.consumer(None, auto_offset_reset="earliest") as cons:
        cons.assign([("order", q) for q in range(3)])
        seen: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
        with trio.fail_after(30):
            while sum(map(len, seen.values())) < 420:
                for r in await cons.getmany(timeout_s=1):
                    seen[r.partition].append(r.value)
    for q in range(3):  # each sender's records in its own order within each partition
        for prefix in [b"a%d-" % i for i in range(4)] + [b"u-"]:
            mine = [int(v.split(b"-")[1]) for v in seen[q] if v.startswith(prefix)]
            assert mine == sorted(mine) and len(mine) == len(set(mine))


async def test_with_linger_0_a_send_while_nothing_is_pending_is_written_by_the_send_call(client):
    await client.create_topic("now")
    async with client.producer(linger_s=0) as p:
        await p.send("now", b"warm")
        conn = client._conn
        sent_before = p.statistics().batches_sent
        handle = p.send("now", b"at once")
        assert handle._follow().sent and not conn._out  # written before send() returned
        later = [p.send("now", b"behind-%d" % i) for i in range(3)]  # behind the one in flight: gathered
        with trio.fail_after(10):
            assert (await handle).offset == 1
            assert [(await h).offset for h in later] == [2, 3, 4]
        assert p.statistics().batches_sent - sent_before == 2


async def test_with_a_linger_records_sent_before_the_task_yields_go_together(client):
    await client.create_topic("burst")
    async with client.producer(linger_s=LONG_LINGER_S) as p:
        await p.send("burst", b"warm")
        sent_before = p.statistics().batches_sent
        handles = [p.send("burst", b"%d" % i) for i in range(50)]
        assert not handles[0]._follow().sent  # the sender's next turn takes them, together
        with trio.fail_after(10):
            assert [(await h).offset for h in handles] == list(range(1, 51))
        assert p.statistics().batches_sent - sent_before == 1


async def test_awaiting_a_record_already_in_flight_polls_for_its_answer(client):
    # linger_s=0: send() wrote it; the await that follows still keeps the loop polling for the answer
    await client.create_topic("polled")
    async with client.producer(linger_s=0) as p:
        await p.send("polled", b"warm")
        conn = client._conn
        handle = p.send("polled", b"in flight")
        assert handle._follow().sent
        conn._poll_until = 0.0
        with trio.fail_after(10):
            assert (await handle).offset == 1
        assert conn._poll_until > 0.0  # the await asked for a poll window
