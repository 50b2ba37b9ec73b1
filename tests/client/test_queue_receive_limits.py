# A receive policy over loopback TCP, in virtual time: the client's receive gets at most the policy's room, and
# once a receive is answered THROTTLED the client waits its retry_after_s and asks again (no error reaches the
# application); another client id is not held back; a push subscription throttled by the policy gets its next
# messages once the retry-after has passed.
from __future__ import annotations

import trio

from millpond.client import connect


async def test_a_throttled_receive_is_retried_after_its_retry_after(broker, client, autojump_clock):
    await client.request("limits_set", {"policy": {
        "name": "recv", "scope": "client:test", "unit": "records", "operation": "receive",
        "params": {"rate": 10, "burst": 5}}})  # 5 messages at once, then 10 a second
    q = client.queue((await client.create_queue("jobs")).name)
    await q.send_batch([b"m%d" % i for i in range(10)])
    await q.send_batch([b"n%d" % i for i in range(10)])
    start = trio.current_time()
    first = await q.receive(10, wait_s=0.0)
    assert [m.body for m in first] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    second = await q.receive(10, wait_s=0.0)  # THROTTLED at once: the client waits 100 ms and asks again
    assert [m.body for m in second] == [b"m5"]
    assert 0.1 <= trio.current_time() - start < 0.2
    async with connect(broker.address, client_id="reporter") as other:
        got = await other.queue("jobs").receive(10, wait_s=0.0)
    assert [m.body for m in got] == [b"m6", b"m7", b"m8", b"m9"] + [b"n%d" % i for i in range(6)]
    [policy] = [p for p in await client.list_limits() if p.name == "recv"]
    assert (policy.stats.admitted, policy.stats.throttled) == (2, 1)


async def test_a_push_subscription_throttled_by_a_receive_policy_waits_and_gets_the_rest(client, autojump_clock):
    await client.request("limits_set", {"policy": {
        "name": "recv", "scope": "queue:jobs", "unit": "records", "operation": "receive",
        "params": {"rate": 10, "burst": 5}}})
    q = client.queue((await client.create_queue("jobs")).name)
    await q.send_batch([b"m%d" % i for i in range(8)])
    start = trio.current_time()
    seen = []
    async with q.subscribe(prefetch=100) as sub:
        async for m in sub:
            seen.append((m.body, trio.current_time() - start))
            await sub.ack(m)
            if len(seen) == 8:
                break
    assert [body for body, _ in seen] == [b"m%d" % i for i in range(8)]
    assert max(t for _, t in seen[:5]) < 0.1 <= min(t for _, t in seen[5:])  # 5 at once, then 10 a second
    assert seen[-1][1] < 0.5
