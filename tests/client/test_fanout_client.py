# Fan-out through the client over loopback TCP: publish with headers to a topic with three queue subscriptions (one
# filtered), every queue receives exactly what it should; subscribe, list, describe, unsubscribe; the blocking twin
# and the client under asyncio (keyed publishes into a FIFO queue) against the broker subprocess.
from __future__ import annotations

import asyncio
import json

import trio

from millpond.broker.server.embedded import open_broker
from millpond.broker.wire.partitioner import partition_for_key
from millpond.client import SubscriptionDescription, SubscriptionInfo, connect
from millpond.client.errors import (
    InvalidParameterValueError,
    UnknownQueueError,
    UnknownSubscriptionError,
    UnknownTopicOrPartitionError,
)
from millpond.client.sync import connect as sync_connect


async def _drain(q, expected, deadline_s=30.0):
    got = []
    with trio.move_on_after(deadline_s):
        while len(got) < expected:
            msgs = await q.receive(1000, wait_s=1.0, visibility_timeout_s=600.0)
            got.extend(msgs)
    # nothing more arrives: no duplicate
    assert await q.receive(1000, wait_s=0.2) == []
    return got


async def test_a_thousand_published_records_reach_three_subscribed_queues_exactly_as_they_should(tmp_path):
    async with open_broker(tmp_path, fsync="always") as b, connect(b.address, client_id="fan") as c:
        await c.create_topic("events", partitions=3)
        for q in ("all", "raw", "big"):
            await c.create_queue(q)
        everything = await c.subscribe("events", queue="all")
        raw = await c.subscribe("events", queue="raw", raw=True)
        big = await c.subscribe("events", queue="big", filter_policy={"size": [{"numeric": [">=", 900]}]})
        assert all(type(s) is SubscriptionInfo for s in (everything, raw, big))
        sent = {}

        async def publish(lo, hi):
            for i in range(lo, hi):
                meta = await c.publish("events", f"v{i}", headers={"size": str(i), "kind": "k"}, key=f"key{i % 7}")
                sent[i] = meta

        async with trio.open_nursery() as n:
            for lo in range(0, 1000, 100):
                n.start_soon(publish, lo, lo + 100)
        all_msgs = await _drain(c.queue("all"), 1000)
        raw_msgs = await _drain(c.queue("raw"), 1000)
        big_msgs = await _drain(c.queue("big"), 100)
        envs = [json.loads(m.body) for m in all_msgs]
        assert sorted(int(e["Message"][1:]) for e in envs) == list(range(1000))
        for e in envs:
            i = int(e["Message"][1:])
            assert (e["Partition"], e["Offset"], e["Key"]) == (sent[i].partition, sent[i].offset, f"key{i % 7}")
            assert e["MessageAttributes"] == {"size": {"Type": "String", "Value": str(i)},
                                              "kind": {"Type": "String", "Value": "k"}}
        assert sorted(m.body for m in raw_msgs) == sorted(f"v{i}".encode() for i in range(1000))
        assert all(m.attributes == {"size": m.body.decode()[1:], "kind": "k"} for m in raw_msgs)
        assert sorted(int(json.loads(m.body)["Message"][1:]) for m in big_msgs) == list(range(900, 1000))
        # one partition's records arrive in offset order
        for p in range(3):
            offsets = [e["Offset"] for e in envs if e["Partition"] == p]
            assert offsets == sorted(offsets)
        d = await c.describe_subscription(big.id)
        assert type(d) is SubscriptionDescription
        assert (d.delivered, d.filtered_out, d.failed, d.lag, d.lag_s) == (100, 900, 0, 0, 0.0)
        assert sum(p.high_watermark for p in d.partitions) == 1000 and d.last_delivery_lag_s >= 0
        listed = await c.subscriptions("events")
        assert {s.id for s in listed} == {everything.id, raw.id, big.id}
        await c.unsubscribe(big.id)
        await c.publish("events", "late", headers={"size": "950"})
        assert [json.loads(m.body)["Message"] for m in await _drain(c.queue("all"), 1)] == ["late"]
        assert await c.queue("big").receive(10, wait_s=0.2) == []


async def test_refusals_name_what_was_wrong(client):
    await client.create_topic("t")
    await client.create_queue("q")
    for call, error, text in [
        (client.subscribe("nope", queue="q"), UnknownTopicOrPartitionError, "nope"),
        (client.subscribe("t", queue="nope"), UnknownQueueError, "nope"),
        (client.subscribe("t", queue="q", filter_policy={"price": [{"numeric": ["<", "cheap"]}]}),
         InvalidParameterValueError, "price"),
        (client.subscribe("t", queue="q", start="yesterday"), InvalidParameterValueError, "start"),
        (client.describe_subscription("nope"), UnknownSubscriptionError, "nope"),
        (client.publish("nope", "v"), UnknownTopicOrPartitionError, "nope"),
    ]:
        try:
            await call
            raise AssertionError(f"no {error.__name__}")
        except error as exc:
            assert text in str(exc)


def test_the_blocking_client_subscribes_publishes_and_describes(daemon):
    with sync_connect(daemon) as c:
        c.create_topic("orders", 1)
        c.create_queue("shipping")
        s = c.subscribe("orders", queue="shipping", raw=True, start="beginning")
        meta = c.publish("orders", b"o-1", headers={"region": "eu"}, key="c-9")
        q = c.queue("shipping")
        got = []
        for _ in range(100):
            got += q.receive(10, wait_s=0.5)
            if got:
                break
        assert [(m.body, m.attributes) for m in got] == [(b"o-1", {"region": "eu"})]
        assert [x.id for x in c.subscriptions("orders")] == [s.id]
        d = c.describe_subscription(s.id)
        assert (d.delivered, d.partitions[0].cursor) == (1, meta.offset + 1)
        c.unsubscribe(s.id)
        assert c.subscriptions() == []


def test_the_client_under_asyncio_publishes_with_keys_to_a_fifo_queue_in_per_key_order(daemon):
    async def main():
        async with connect(daemon, client_id="aio-fanout") as c:
            await c.create_topic("keyed", partitions=3)
            await c.create_queue("ordered.fifo")
            await c.subscribe("keyed", queue="ordered.fifo", raw=True)
            metas = [await c.publish("keyed", b"%d" % i, key=b"k%d" % (i % 4)) for i in range(40)]
            assert [m.partition for m in metas[:4]] == [partition_for_key(b"k%d" % i, 3) for i in range(4)]
            q = c.queue("ordered.fifo")
            got: dict[str, list[int]] = {}
            async with asyncio.timeout(20):
                while sum(map(len, got.values())) < 40:
                    msgs = await q.receive(10, wait_s=1.0)
                    for m in msgs:
                        got.setdefault(m.group_id, []).append(int(m.body))
                    for m in msgs:
                        await q.delete(m)
            return got

    got = asyncio.run(main())
    assert got == {f"k{k}": list(range(k, 40, 4)) for k in range(4)}
