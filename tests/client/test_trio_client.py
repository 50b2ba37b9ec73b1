# The async client under Trio against the real broker over loopback: admin, produce/consume, seeks, errors.
from __future__ import annotations

from collections import defaultdict

import pytest
import trio

from millpond.broker.wire.partitioner import partition_for_key
from millpond.client import RecordMetadata, connect
from millpond.client.errors import (
    ConnectionClosedError,
    InvalidTopicNameError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from clientkit import drain


async def test_admin_round_trip(client):
    answer = await client.create_topic("orders", partitions=3, retention_s=3600, segment_bytes=1 << 20)
    assert answer["config"] == {"retention_s": 3600.0, "retention_bytes": -1, "segment_bytes": 1 << 20,
                                "segment_s": 604_800.0, "index_interval_bytes": 4096}  # seconds, not the wire's ms
    assert "orders" in await client.list_topics()
    d = await client.describe_topic("orders")
    assert [p.partition for p in d.partitions] == [0, 1, 2]
    assert d.config["retention_s"] == 3600.0 and d.config["segment_bytes"] == 1 << 20
    assert all(p.log_end_offset == 0 and p.high_watermark == 0 for p in d.partitions)
    assert await client.metadata(["orders", "nope"]) == {"orders": 3}
    with pytest.raises(TopicAlreadyExistsError):
        await client.create_topic("orders")
    with pytest.raises(InvalidTopicNameError):
        await client.create_topic("bad/name")
    await client.delete_topic("orders")
    assert "orders" not in await client.list_topics()
    with pytest.raises(UnknownTopicOrPartitionError):
        await client.describe_topic("orders")


async def test_10k_keyed_records_complete_in_order_per_key_on_the_right_partition(client):
    await client.create_topic("keyed", partitions=4)
    keys = [b"key-%d" % i for i in range(37)]
    async with client.producer(linger_s=0.002, batch_bytes=16384) as p:
        handles = [p.send("keyed", b"%d" % i, key=keys[i % 37]) for i in range(10_000)]
    metas = [await h for h in handles]
    assert all(isinstance(m, RecordMetadata) for m in metas)
    for i, m in enumerate(metas):
        assert m.partition == partition_for_key(keys[i % 37], 4)
    assert p.statistics().records_sent == 10_000 and p.statistics().records_failed == 0
    async with client.consumer("keyed", auto_offset_reset="earliest") as cons:
        got = await drain(cons, 10_000)
    per_key = defaultdict(list)
    for r in got:
        assert r.partition == partition_for_key(r.key, 4)
        per_key[r.key].append(int(r.value))
    assert sorted(sum(per_key.values(), [])) == list(range(10_000))
    for k, values in per_key.items():
        assert values == sorted(values), k
    offsets = {(m.partition, m.offset) for m in metas}
    assert offsets == {(r.partition, r.offset) for r in got}


async def test_seek_beginning_end_timestamp_and_position(client):
    await client.create_topic("s")
    async with client.producer() as p:
        for i in range(10):
            p.send("s", b"%d" % i, partition=0, timestamp_ms=1_000 + i * 100)
    async with client.consumer(auto_offset_reset="latest") as cons:
        cons.assign([("s", 0)])
        assert await cons.position("s", 0) == 10  # latest
        cons.seek_to_beginning()
        assert [r.value for r in await drain(cons, 10)] == [b"%d" % i for i in range(10)]
        assert await cons.position("s", 0) == 10
        cons.seek_to_timestamp(1_450)
        got = await drain(cons, 5)
        assert [(r.offset, r.timestamp_ms) for r in got] == [(i, 1_000 + i * 100) for i in range(5, 10)]
        cons.seek("s", 0, 3)
        assert (await drain(cons, 1))[0].offset == 3
        cons.seek_to_end()
        assert await cons.position("s", 0) == 10
        assert await cons.getmany(timeout_s=0.2) == []
        cons.seek_to_timestamp(10**13)  # after every record: the end
        assert await cons.position("s", 0) == 10
        # a new record arrives while we wait at the end
        async with client.producer() as p:
            p.send("s", b"late", partition=0)
        assert [r.value for r in await drain(cons, 1)] == [b"late"]


async def test_offset_out_of_range_follows_auto_offset_reset(client):
    await client.create_topic("oor")
    async with client.producer() as p:
        for i in range(5):
            p.send("oor", b"%d" % i)
    async with client.consumer(["oor"], auto_offset_reset="earliest") as cons:
        cons.assign([("oor", 0)])
        cons.seek("oor", 0, 1000)  # past the end: OFFSET_OUT_OF_RANGE -> earliest
        assert [r.offset for r in await drain(cons, 5)] == [0, 1, 2, 3, 4]
    async with client.consumer(auto_offset_reset="latest") as cons:
        cons.assign([("oor", 0)])
        cons.seek("oor", 0, 1000)  # -> latest
        assert await cons.getmany(timeout_s=0.3) == []
        assert await cons.position("oor", 0) == 5
    assert (await client.list_offsets("oor", 0, "earliest"))[0] == 0
    assert (await client.list_offsets("oor", 0, "latest"))[0] == 5


async def test_fetch_skips_records_below_the_asked_offset(client):
    await client.create_topic("skip")
    async with client.producer(linger_s=1) as p:  # one batch of 10
        for i in range(10):
            p.send("skip", b"%d" % i)
    async with client.consumer() as cons:
        cons.assign([("skip", 0)])
        cons.seek("skip", 0, 7)
        assert [r.offset for r in await drain(cons, 3)] == [7, 8, 9]


async def test_producer_errors_reach_handles(client):
    async with client.producer() as p:
        h = p.send("no-such-topic", b"v")
        with pytest.raises(TypeError, match="value"):
            p.send("no-such-topic", "str value")
    with pytest.raises(UnknownTopicOrPartitionError):
        await h
    assert p.statistics().records_failed == 1


async def test_unknown_topic_consumer_raises(client):
    async with client.consumer("ghost") as cons:
        with pytest.raises(UnknownTopicOrPartitionError):
            await cons.getmany(timeout_s=5)


async def test_connect_refused_is_one_clear_error():
    with pytest.raises(ConnectionClosedError, match="cannot connect to 127.0.0.1:1: .*refused"):
        async with connect("127.0.0.1:1"):
            pass


async def _run_broker(data_dir, port, stop: trio.Event, *, task_status=trio.TASK_STATUS_IGNORED):
    from millpond.broker.server.embedded import open_broker

    async with open_broker(data_dir, port=port, fsync="never") as b:
        task_status.started(b.port)
        await stop.wait()


async def test_reconnect_after_broker_restart(tmp_path, nursery):
    stop1, stop2 = trio.Event(), trio.Event()
    port = await nursery.start(_run_broker, tmp_path, 0, stop1)
    async with connect(("127.0.0.1", port), reconnect_backoff_s=(0.01, 0.1), reconnect_timeout_s=1) as c:
        await c.create_topic("r")
        async with c.producer() as p:
            assert (await p.send("r", b"before")).offset == 0
        async with c.consumer("r", auto_offset_reset="earliest") as cons:
            assert [r.value for r in await drain(cons, 1)] == [b"before"]
            stop1.set()  # the broker goes away under a consumer with a fetch in flight
            with trio.fail_after(10):
                while not c._conn.closed:
                    await trio.sleep(0.01)
            with pytest.raises(ConnectionClosedError):
                await c.list_topics()  # no broker: bounded reconnect attempts fail with a clear error
            await nursery.start(_run_broker, tmp_path, port, stop2)
            async with c.producer() as p:
                m = await p.send("r", b"after")
            assert m.offset == 1 and c.reconnects == 1
            assert [r.value for r in await drain(cons, 1)] == [b"after"]  # re-fetched from its position
    stop2.set()


async def test_a_partition_with_a_backlog_does_not_starve_the_others(client):
    await client.create_topic("busy", partitions=2)
    async with client.producer(linger_s=0, batch_bytes=4096) as p:  # small batches: a fetch can stop early
        for i in range(400):
            p.send("busy", b"x" * 1000, partition=0)
        last = p.send("busy", b"quiet", partition=1)
    assert (await last).offset == 0
    # each fetch carries at most ~8 KiB: partition 0 alone would need ~50 fetches to drain
    async with client.consumer("busy", auto_offset_reset="earliest", fetch_bytes=8192) as cons:
        seen = []
        with trio.fail_after(10):
            while b"quiet" not in seen:
                seen += [r.value for r in await cons.getmany()]
    assert len(seen) < 100  # the quiet partition's record came within the first few fetches
