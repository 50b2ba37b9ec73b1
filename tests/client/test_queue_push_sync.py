# Push delivery from the blocking client and under asyncio against the broker as a process: iterate, ack, nack and
# leave; and a subscriber process killed with SIGKILL hands its unacknowledged messages back at once (its connection
# ends with a reset, which the broker sees at once), not after their hour-long visibility timeout.
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from millpond.client import connect as aconnect
from millpond.client.sync import SyncPushedMessage, connect

SUBSCRIBER = """
import sys, time
from millpond.client.sync import connect
with connect(sys.argv[1], client_id="doomed") as c:
    with c.queue("q").subscribe(prefetch=3) as sub:
        for i, msg in enumerate(sub):
            print(msg.body.decode(), flush=True)
            if i == 2:
                time.sleep(3600)  # holds three, acks none
"""


def test_the_blocking_client_subscribes_acks_and_nacks(daemon):
    with connect(daemon, client_id="sync") as c:
        c.create_queue("q", visibility_timeout_s=600.0)
        q = c.queue("q")
        for i in range(5):
            q.send(b"m%d" % i)
        seen = []
        with q.subscribe(prefetch=2) as sub:
            for msg in sub:
                assert type(msg) is SyncPushedMessage
                seen.append((msg.body, msg.receive_count))
                if msg.body == b"m1" and msg.receive_count == 1:
                    msg.nack()
                else:
                    msg.ack()
                if len(seen) == 6:
                    break
            s = sub.statistics()
            assert (s.prefetch, s.delivered, s.acked, s.nacked) == (2, s.delivered, 5, 1)
            assert s.broker_unacked_max <= 2
        assert sorted(seen) == sorted([(b"m%d" % i, 1) for i in range(5)] + [(b"m1", 2)])
        info = q.attributes()
        assert (info.messages_visible, info.messages_in_flight) == (0, 0)


def test_the_async_client_subscribes_under_asyncio(daemon):
    async def main() -> list[bytes]:
        async with aconnect(daemon, client_id="asyncio") as c:
            await c.create_queue("q")
            q = c.queue("q")
            for i in range(20):
                await q.send(b"m%d" % i)
            got = []
            async with asyncio.timeout(10), q.subscribe(prefetch=4) as sub:
                async for msg in sub:
                    got.append(msg.body)
                    await msg.ack()
                    if len(got) == 20:
                        break
                assert 0 < sub.statistics().broker_unacked_max <= 4
            assert (await q.attributes()).messages_visible == 0
            return got

    assert asyncio.run(main()) == [b"m%d" % i for i in range(20)]


def test_a_killed_subscriber_hands_its_messages_back_at_once(daemon):
    with connect(daemon, client_id="survivor") as c:
        c.create_queue("q", visibility_timeout_s=3600.0)
        q = c.queue("q")
        for i in range(5):
            q.send(b"m%d" % i)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, daemon], stdout=subprocess.PIPE, env=env)
        try:
            held = [proc.stdout.readline().strip() for _ in range(3)]
            assert held == [b"m0", b"m1", b"m2"]
            assert q.attributes().messages_in_flight == 3
            killed_at = time.monotonic()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            got = []
            while len(got) < 5 and time.monotonic() - killed_at < 10:
                got += q.receive(10, wait_s=2.0)
        finally:
            proc.kill()
            proc.wait(10)
            proc.stdout.close()
        assert time.monotonic() - killed_at < 10  # not the hour of their visibility timeout
        assert sorted((m.body, m.receive_count) for m in got) == [
            (b"m0", 2), (b"m1", 2), (b"m2", 2), (b"m3", 1), (b"m4", 1)]
