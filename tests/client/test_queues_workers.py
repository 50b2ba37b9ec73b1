# Workers over TCP against the in-process broker, in virtual time: 4 workers drain 20,000 messages while a random
# 5% of handler calls fail; every message is deleted exactly once in the end, failed ones came back after their
# visibility timeout, and poison messages (always failing), like the few that failed 3 times by chance, end in the
# dead-letter queue.
from __future__ import annotations

import random

import trio

from millpond.broker.server.embedded import open_broker
from millpond.client import connect

MESSAGES = 20_000
VISIBILITY_S = 30.0


async def test_four_workers_drain_20000_messages_with_failures_and_poison_in_the_dlq(autojump_clock):
    rng = random.Random(5)
    poison = {b"m%d" % i for i in rng.sample(range(MESSAGES), 20)}
    deleted: list[bytes] = []
    failed_at: dict[bytes, float] = {}  # a failed delivery's time, until the message comes back
    came_back_after: list[float] = []
    failures: dict[bytes, int] = {}
    async with open_broker(None, fsync="never") as broker, connect(broker.address, client_id="workers") as c:
        await c.create_queue("dlq")
        await c.create_queue("jobs", visibility_timeout_s=VISIBILITY_S, dead_letter_queue="dlq",
                             max_receive_count=3)
        q = c.queue("jobs")
        for i in range(0, MESSAGES, 10):
            results = await q.send_batch([b"m%d" % j for j in range(i, i + 10)])
            assert all(r.message_id for r in results)

        async def worker() -> None:
            idle_since = trio.current_time()
            while trio.current_time() - idle_since < 3 * VISIBILITY_S:  # until nothing came for a while
                got = await q.receive(10, wait_s=20.0)
                if got:
                    idle_since = trio.current_time()
                done = []
                for m in got:
                    if m.body in failed_at:
                        came_back_after.append(trio.current_time() - failed_at.pop(m.body))
                    if m.body in poison or rng.random() < 0.05:
                        failed_at[m.body] = trio.current_time()
                        failures[m.body] = failures.get(m.body, 0) + 1
                        continue  # a failed handler: no delete, the message comes back
                    done.append(m)
                if done:
                    assert await q.delete_batch(done) == [None] * len(done)
                    deleted.extend(m.body for m in done)

        async with trio.open_nursery() as n:
            for _ in range(4):
                n.start_soon(worker)
        dead = []
        while got := await c.queue("dlq").receive(10):
            dead += [m.body for m in got]
        jobs = await q.attributes()
    unlucky = {b for b, n in failures.items() if n == 3 and b not in poison}  # failed 3 times by chance
    assert len(deleted) == len(set(deleted)) == MESSAGES - len(poison) - len(unlucky)
    assert set(deleted) | poison | unlucky == {b"m%d" % i for i in range(MESSAGES)}
    assert sorted(dead) == sorted(poison | unlucky)  # moved at their 4th receive (max_receive_count 3)
    assert max(failures.values()) == 3
    assert (jobs.messages_visible, jobs.messages_in_flight, jobs.messages_delayed) == (0, 0, 0)
    assert len(came_back_after) > 1000 and min(came_back_after) >= VISIBILITY_S
