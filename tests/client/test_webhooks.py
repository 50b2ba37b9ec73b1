# Webhook subscriptions end to end: a broker, the client over loopback TCP and a small HTTP server on Trio's sockets
# and h11 in the test. Real time with short delays: the POST runs in a worker thread, and under a virtual clock the
# server runs worker-thread work inline, which would block the very event loop this test's HTTP server answers on.
from __future__ import annotations

import json

import pytest
import trio

from millpond.broker.server.embedded import open_broker
from millpond.client import DeliveryPolicy, connect
from millpond.client.errors import InvalidParameterValueError
from tests.webhookkit import Hook


async def test_a_webhook_failing_twice_gets_the_record_on_the_third_attempt_with_the_same_message_id(tmp_path):
    hook = Hook([500, 503, 200])
    async with trio.open_nursery() as n:
        url = await hook.start(n)
        async with open_broker(tmp_path, fsync="always") as b, connect(b.address) as c:
            await c.create_topic("prices", partitions=1)
            s = await c.subscribe("prices", url=url, min_delay_s=0.05, max_delay_s=0.2)
            assert (s.url, s.queue) == (url, None)
            assert s.delivery == DeliveryPolicy(4, 0.05, 0.2, 3600.0, 15.0, 4, None, 0.2)
            meta = await c.publish("prices", '{"sku": 7}', headers={"region": "eu"}, key="sku-7")
            await hook.wait_for(3)
            with trio.fail_after(5):
                while (await c.describe_subscription(s.id)).delivered < 1:
                    await trio.sleep(0.01)
            d = await c.describe_subscription(s.id)
            assert (d.delivered, d.failed, d.lag, d.partitions[0].cursor) == (1, 0, 0, 1)
            assert len(hook.got) == 3
        n.cancel_scope.cancel()
    ids = {h["x-millpond-message-id"] for h, _ in hook.got}
    assert len(ids) == 1
    assert [h["x-millpond-attempt"] for h, _ in hook.got] == ["1", "2", "3"]
    headers, body = hook.got[2]
    env = json.loads(body)
    assert env["MessageId"] == ids.pop() and env["Message"] == '{"sku": 7}' and env["Key"] == "sku-7"
    assert (env["Topic"], env["Partition"], env["Offset"]) == ("prices", meta.partition, meta.offset)
    assert env["MessageAttributes"] == {"region": {"Type": "String", "Value": "eu"}}
    assert headers["x-millpond-topic"] == "prices" and headers["x-millpond-subscription-id"] == s.id
    assert headers["content-type"] == "text/plain; charset=UTF-8"
    assert headers["host"] == f"127.0.0.1:{hook.port}"


async def test_a_webhook_that_always_fails_sends_the_record_to_the_dead_letter_queue(tmp_path):
    hook = Hook([500])
    async with trio.open_nursery() as n:
        url = await hook.start(n)
        async with open_broker(tmp_path, fsync="always") as b, connect(b.address) as c:
            await c.create_topic("prices", partitions=1)
            await c.create_queue("dead")
            s = await c.subscribe("prices", url=url, dead_letter_queue="dead", attempts_max=3, min_delay_s=0.02,
                                  max_delay_s=0.05)
            await c.publish("prices", "lost")
            [msg] = await c.queue("dead").receive(1, wait_s=10.0)
            assert len(hook.got) == 3
            env = json.loads(msg.body)
            assert (env["Message"], env["SubscriptionId"]) == ("lost", s.id)
            assert env["MessageId"] == hook.got[0][0]["x-millpond-message-id"]
            d = await c.describe_subscription(s.id)
            assert (d.delivered, d.failed, d.dead_lettered, d.partitions[0].cursor) == (0, 1, 1, 1)
        n.cancel_scope.cancel()


async def test_a_webhook_to_an_address_not_allowed_is_refused_at_subscribe_time(tmp_path):
    async with open_broker(tmp_path, fsync="never") as b, connect(b.address) as c:
        await c.create_topic("prices", partitions=1)
        with pytest.raises(InvalidParameterValueError, match="not in the broker's webhook_allow list"):
            await c.subscribe("prices", url="http://169.254.169.254/latest/meta-data/")
        with pytest.raises(InvalidParameterValueError, match="scheme must be http or https"):
            await c.subscribe("prices", url="file:///etc/passwd")
        assert await c.subscriptions("prices") == []


async def test_one_slow_endpoint_does_not_delay_another_subscriptions_deliveries(tmp_path):
    slow, fast = Hook([200], delay_s=30.0), Hook([200])
    async with trio.open_nursery() as n:
        slow_url, fast_url = await slow.start(n), await fast.start(n)
        async with open_broker(tmp_path, fsync="always") as b, connect(b.address) as c:
            await c.create_topic("prices", partitions=2)
            s_slow = await c.subscribe("prices", url=slow_url, timeout_s=1.0, attempts_max=1)
            await c.subscribe("prices", url=fast_url)
            with trio.fail_after(0.9):  # before the slow endpoint's first request could even time out
                for i in range(20):
                    await c.publish("prices", f"p{i}", key=f"k{i}")
                await fast.wait_for(20)
            assert sorted(json.loads(body)["Message"] for _, body in fast.got) == sorted(f"p{i}" for i in range(20))
            assert len(slow.got) <= 4 and slow.answered == 0  # its concurrency bound, none answered
            assert (await c.describe_subscription(s_slow.id)).delivered == 0
        n.cancel_scope.cancel()
