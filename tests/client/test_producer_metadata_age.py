# A running producer asks for its topics' partition counts again every metadata_max_age_s (Kafka's
# metadata.max.age.ms): after a topic grows, keyed records map by the new count and reach the new partitions, with
# nothing lost or duplicated, for the async and the blocking producer; the value is checked, and the
# millisecond spelling is refused with the name to use.
from __future__ import annotations

import time

import pytest
import trio

from millpond.broker.wire.partitioner import partition_for_key
from millpond.client.sync import connect as sync_connect

from clientkit import drain


async def test_a_running_producer_learns_a_grown_topic_within_metadata_max_age_s(broker, client):
    await client.create_topic("grow", partitions=2)
    keys = [b"k%d" % i for i in range(64)]
    async with client.producer(metadata_max_age_s=0.2) as p:
        before = [await p.send("grow", b"before", key=k) for k in keys]
        assert {m.partition for m in before} == {partition_for_key(k, 2) for k in keys}
        await client.add_partitions("grow", 8)
        with trio.fail_after(5):  # the sender asks again within metadata_max_age_s
            while p._acc.counts["grow"] != 8:
                await trio.sleep(0.01)
        after = [await p.send("grow", b"after", key=k) for k in keys]
    assert [m.partition for m in after] == [partition_for_key(k, 8) for k in keys]
    assert max(m.partition for m in after) >= 2  # the new partitions are used
    async with client.consumer("grow", auto_offset_reset="earliest") as c:
        got = await drain(c, 128)
    assert sorted((r.key, r.value) for r in got) == sorted([(k, b"before") for k in keys] + [(k, b"after") for k in keys])


async def test_metadata_max_age_s_is_checked(client):
    with pytest.raises(ValueError, match="metadata_max_age_s must be > 0 seconds"):
        client.producer(metadata_max_age_s=0)
    with pytest.raises(TypeError, match="metadata_max_age_s"):
        client.producer(metadata_max_age_ms=1000)


def test_the_blocking_producer_takes_it_too(daemon):
    with sync_connect(daemon) as c:
        c.create_topic("sgrow", partitions=1)
        with c.producer(metadata_max_age_s=0.2) as p:
            assert p.send("sgrow", b"a", key=b"a").result().partition == 0
            c.add_partitions("sgrow", 4)
            deadline = time.monotonic() + 5  # the sender asks again within metadata_max_age_s
            while p._acc.counts["sgrow"] != 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            parts = {p.send("sgrow", b"b", key=b"k%d" % i).result().partition for i in range(32)}
    assert parts == {partition_for_key(b"k%d" % i, 4) for i in range(32)} and len(parts) > 1
