# A fsync="always" sync plan over many partitions runs split over several worker threads at once (the filesystem
# commits concurrent fsyncs together; bench/sync_plan.py), a small one in one thread; a failure in any piece fails
# the whole plan, so nothing it covers is acknowledged as durable, and the producer's retry lands every record once.
from __future__ import annotations

import errno
import threading
import time

import trio

from millpond.broker.core.log import file_store
from millpond.broker.server import loop as request_loop
from millpond.broker.server.embedded import open_broker
from millpond.client import connect


class Running:
    """FileSyncPart.run wrapped: how many run at once at most, and on how many threads."""

    def __init__(self, monkeypatch, hold_s: float = 0.02, fail_once: bool = False) -> None:
        self.lock = threading.Lock()
        self.now = self.most = 0
        self.threads: set[int] = set()
        self.fail_once = fail_once
        real = file_store.FileSyncPart.run

        def run(part) -> None:
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
                self.threads.add(threading.get_ident())
                fail, self.fail_once = self.fail_once, False
            try:
                time.sleep(hold_s)  # long enough for the other pieces to start
                if fail:
                    raise OSError(errno.EIO, "Input/output error")
                real(part)
            finally:
                with self.lock:
                    self.now -= 1

        monkeypatch.setattr(file_store.FileSyncPart, "run", run)


async def _produce_to_every_partition(address: str, topic: str, partitions: int) -> list[int]:
    async with connect(address) as c:
        await c.create_topic(topic, partitions=partitions)
        async with c.producer(linger_s=0.05) as p:
            handles = [p.send(topic, b"v%d" % i, partition=i) for i in range(partitions)]
            return [(await h).offset for h in handles]


async def test_a_plan_over_many_partitions_runs_in_several_threads_at_once(tmp_path, monkeypatch):
    running = Running(monkeypatch)
    async with open_broker(tmp_path, fsync="always") as b:
        running.most = 0
        offsets = await _produce_to_every_partition(b.address, "t", 16)
        assert offsets == [0] * 16
        assert 2 <= running.most <= request_loop.SYNC_THREADS
        async with connect(b.address) as c:
            d = await c.describe_topic("t")
            assert [p.log_end_offset for p in d.partitions] == [1] * 16


async def test_a_plan_over_fewer_partitions_than_the_split_runs_in_one_thread(tmp_path, monkeypatch):
    running = Running(monkeypatch)
    async with open_broker(tmp_path, fsync="always") as b:
        running.most = 0
        await _produce_to_every_partition(b.address, "t", request_loop.SYNC_SPLIT_MIN - 1)
        assert running.most == 1


async def test_a_failed_piece_fails_the_plan_and_the_retried_records_land_once(tmp_path, monkeypatch):
    async with open_broker(tmp_path, fsync="always") as b:
        async with connect(b.address) as c:
            await c.create_topic("t", partitions=16)
        running = Running(monkeypatch, fail_once=True)
        async with connect(b.address) as c:
            async with c.producer(linger_s=0.05) as p:
                handles = [p.send("t", b"v%d" % i, partition=i) for i in range(16)]
                assert [(await h).offset for h in handles] == [0] * 16
                assert p.statistics().retries >= 1  # the failed plan answered an error; the batches went again
            assert running.fail_once is False
            d = await c.describe_topic("t")
            assert [p.log_end_offset for p in d.partitions] == [1] * 16  # stored once each: the retry was deduplicated
        assert b.loop.statistics()["fsyncs"] >= 2
