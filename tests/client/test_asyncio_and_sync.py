# The same client under asyncio (anyio's other backend) and the blocking client, against a broker subprocess.
from __future__ import annotations

import asyncio

import pytest

from millpond.broker.wire.partitioner import partition_for_key
from millpond.client import connect
from millpond.client.errors import OffsetOutOfRangeError, RecordTooLargeError, UnknownTopicOrPartitionError
from millpond.client.sync import connect as sync_connect


def test_asyncio_client_produces_and_consumes(daemon):
    async def main():
        async with connect(daemon, client_id="aio") as c:
            await c.create_topic("aio", partitions=2)
            async with c.producer() as p:
                handles = [p.send("aio", b"%d" % i, key=b"k%d" % (i % 5)) for i in range(2000)]
            metas = [await h for h in handles]
            assert [m.partition for m in metas[:5]] == [partition_for_key(b"k%d" % i, 2) for i in range(5)]
            async with c.consumer("aio", auto_offset_reset="earliest") as cons:
                got = []
                async with asyncio.timeout(10):
                    while len(got) < 2000:
                        got += await cons.getmany()
            assert sorted(int(r.value) for r in got) == list(range(2000))
            return (await c.describe_topic("aio")).records

    assert asyncio.run(main()) == 2000


def test_sync_client_produces_consumes_and_seeks(daemon):
    with sync_connect(daemon, client_id="blocking") as c:
        c.create_topic("sync", partitions=3)
        assert "sync" in c.list_topics()
        with c.producer(linger_s=0.001) as p:
            handles = [p.send("sync", b"v%d" % i, key=b"%d" % (i % 7)) for i in range(5000)]
            first = handles[0].result(timeout=10)
        assert first.partition == partition_for_key(b"0", 3) and first.offset == 0
        assert all(h.done() for h in handles) and p.statistics().records_sent == 5000
        assert sum(p.log_end_offset for p in c.describe_topic("sync").partitions) == 5000
        with c.consumer("sync", auto_offset_reset="earliest") as cons:
            got = []
            for r in cons:
                got.append(r)
                if len(got) == 5000:
                    break
            assert sorted(int(r.value[1:]) for r in got) == list(range(5000))
            cons.seek_to_end()
            assert cons.getmany(timeout_s=0.2) == []
            cons.seek("sync", first.partition, 0)
            assert cons.getmany(max_records=1, timeout_s=10)[0].value == b"v0"
        with c.consumer(auto_offset_reset="earliest") as cons:
            cons.assign([("sync", 0)])
            cons.seek_to_timestamp(first.timestamp_ms)
            assert cons.position("sync", 0) == 0


def test_sync_errors(daemon):
    with sync_connect(daemon) as c:
        with pytest.raises(UnknownTopicOrPartitionError):
            c.describe_topic("missing")
        c.create_topic("small")
        with c.producer() as p:
            with pytest.raises(RecordTooLargeError):
                p.send("small", b"x" * (c.limits.batch_bytes_max + 1))
            h = p.send("missing", b"v")
            with pytest.raises(UnknownTopicOrPartitionError):
                h.result(timeout=10)
        # no position and auto_offset_reset="error": the blocking caller gets the typed error, naming the partition
        with c.consumer(auto_offset_reset="error") as cons:
            cons.assign([("small", 0)])
            with pytest.raises(OffsetOutOfRangeError, match="no position for small/0") as info:
                cons.getmany(timeout_s=10)
        assert (info.value.details["topic"], info.value.details["partition"]) == ("small", 0)


def test_the_blocking_client_inside_an_event_loop_is_refused_by_name_and_works_from_a_worker_thread(daemon):
    # It hung: the blocking client's own loop thread could not be stopped from a thread running a loop.
    import trio

    def blocking_topics() -> list:
        with sync_connect(daemon) as c:
            return c.list_topics()

    async def trio_main():
        with pytest.raises(RuntimeError, match=r"this thread runs an event loop \(trio\): use the async client "
                                               r"\(millpond.client.connect\) here, or run the blocking one in a "
                                               r"worker thread \(trio.to_thread.run_sync\)"):
            blocking_topics()
        return await trio.to_thread.run_sync(blocking_topics)

    async def asyncio_main():
        with pytest.raises(RuntimeError, match=r"this thread runs an event loop \(asyncio\).*\(asyncio.to_thread\)"):
            blocking_topics()
        return await asyncio.to_thread(blocking_topics)

    with sync_connect(daemon) as admin:
        admin.create_topic("mixed")
    assert "mixed" in trio.run(trio_main)
    assert "mixed" in asyncio.run(asyncio_main())

    # A client made in a worker thread, then used or closed from the loop's thread: refused the same way (closing
    # hung under Trio; a call blocked the asyncio loop, or failed under Trio with anyio's vaguer words).
    async def used_from_the_loop(to_thread):
        c = await to_thread(sync_connect, daemon)
        try:
            for call in (c.list_topics, c.close):
                with pytest.raises(RuntimeError, match=r"this thread runs an event loop"):
                    call()
        finally:
            await to_thread(c.close)
        return c.address

    assert trio.run(used_from_the_loop, trio.to_thread.run_sync) == daemon
    assert asyncio.run(used_from_the_loop(asyncio.to_thread)) == daemon


def test_asyncio_tasks_sending_receiving_and_deleting_together_each_get_their_own_answer(daemon):
    # under asyncio, calls gathered into batch requests (client/_gather.py) are shared out as under Trio
    async def main():
        async with connect(daemon, client_id="aio-queues") as c:
            await c.create_queue("aio-gathered")
            q = c.queue("aio-gathered")
            sent = await asyncio.gather(*(q.send(b"m%d" % i) for i in range(25)))
            assert len({s.message_id for s in sent}) == 25
            got = await asyncio.gather(*(q.receive(1, wait_s=1.0) for _ in range(25)))
            assert sorted(len(g) for g in got) == [1] * 25
            assert sorted(g[0].body for g in got) == sorted(b"m%d" % i for i in range(25))
            assert {g[0].message_id for g in got} == {s.message_id for s in sent}
            assert await asyncio.gather(*(q.delete(g[0]) for g in got)) == [None] * 25
            info = await q.attributes()
            return info.messages_visible, info.messages_in_flight

    assert asyncio.run(main()) == (0, 0)
