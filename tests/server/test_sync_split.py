# A fsync="always" sync plan over many partitions runs split over several worker threads at once under sync_method
# "fsync" (the filesystem commits concurrent fsyncs together; bench/sync_plan.py), a small one in one thread; under
# "auto" one syncfs covers a plan over many partitions. A failure in any piece, or of the syncfs, fails the whole
# plan, so nothing it covers is acknowledged as durable, and the producer's retry lands every record once.
from __future__ import annotations

import errno
import logging
import threading
import time

import trio

from millpond.broker.core.log import file_store, files, pending
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

        def run(part, data_synced: bool = False) -> None:
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
                self.threads.add(threading.get_ident())
                fail, self.fail_once = self.fail_once, False
            try:
                time.sleep(hold_s)  # long enough for the other pieces to start
                if fail:
                    raise OSError(errno.EIO, "Input/output error")
                real(part, data_synced)
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
    async with open_broker(tmp_path, fsync="always", sync_method="fsync") as b:
        running.most = 0
        offsets = await _produce_to_every_partition(b.address, "t", 16)
        assert offsets == [0] * 16
        assert 2 <= running.most <= request_loop.SYNC_THREADS
        async with connect(b.address) as c:
            d = await c.describe_topic("t")
            assert [p.log_end_offset for p in d.partitions] == [1] * 16


async def test_a_plan_over_fewer_partitions_than_the_split_runs_in_one_thread(tmp_path, monkeypatch):
    running = Running(monkeypatch)
    async with open_broker(tmp_path, fsync="always", sync_method="fsync") as b:
        running.most = 0
        await _produce_to_every_partition(b.address, "t", request_loop.SYNC_SPLIT_MIN - 1)
        assert running.most == 1


async def test_a_failed_piece_fails_the_plan_and_the_retried_records_land_once(tmp_path, monkeypatch):
    async with open_broker(tmp_path, fsync="always", sync_method="fsync") as b:
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


class Syncfs:
    """FilesystemSync.sync wrapped (a stand-in for syncfs(2) where the system lacks it): calls counted, the first
    failing when asked."""

    def __init__(self, monkeypatch, fail_once: bool = False) -> None:
        self.calls = 0
        self.fail_once = fail_once
        if files._syncfs_call() is None:
            monkeypatch.setattr(files, "_syncfs_call", lambda: lambda fd: 0)

        def sync(fs) -> None:
            self.calls += 1
            if self.fail_once:
                self.fail_once = False
                raise OSError(errno.EIO, "syncfs: Input/output error")

        monkeypatch.setattr(files.FilesystemSync, "sync", sync)


def gather_first_plan(monkeypatch, broker, topic: str, partitions: int) -> None:
    """Hold the first sync plan over ``topic`` (in its worker thread, up to 10 s) until every one of its
    ``partitions`` holds a record: the appends made meanwhile gather into the next plan, whatever the pace of the
    machine."""
    real = pending.SyncPlan.run
    held = threading.Event()

    def appended() -> bool:
        t = broker.engine.log.topics.get(topic)
        return t is not None and sum(1 for log in t.partitions if log.log_end_offset >= 1) == partitions

    def run(plan):
        if not held.is_set() and any(log.topic == topic for log, _ in plan.parts):
            held.set()
            deadline = time.monotonic() + 10
            while not appended() and time.monotonic() < deadline:
                time.sleep(0.001)
        return real(plan)

    monkeypatch.setattr(pending.SyncPlan, "run", run)


async def test_under_auto_one_syncfs_covers_a_plan_over_many_partitions(tmp_path, monkeypatch):
    datasyncs = []
    monkeypatch.setattr(file_store, "_datasync", datasyncs.append)
    syncfs = Syncfs(monkeypatch)
    async with open_broker(tmp_path, fsync="always") as b:  # sync_method "auto" is the default
        gather_first_plan(monkeypatch, b, "t", 16)  # at most two plans: at least one over 8 partitions
        syncfs.calls, datasyncs[:] = 0, []
        assert await _produce_to_every_partition(b.address, "t", 16) == [0] * 16
        assert syncfs.calls >= 1 and len(datasyncs) < files.SYNCFS_AUTO_MIN  # only a small first plan fsyncs files
        syncfs.calls = 0
        assert await _produce_to_every_partition(b.address, "small", files.SYNCFS_AUTO_MIN - 1) == [0] * 3
        assert syncfs.calls == 0 and len(datasyncs) >= files.SYNCFS_AUTO_MIN - 1  # a small plan fsyncs each file


async def test_a_failed_syncfs_fails_the_plan_and_the_retried_records_land_once(tmp_path, monkeypatch):
    async with open_broker(tmp_path, fsync="always") as b:
        async with connect(b.address) as c:
            await c.create_topic("t", partitions=16)
        syncfs = Syncfs(monkeypatch, fail_once=True)
        gather_first_plan(monkeypatch, b, "t", 16)
        async with connect(b.address) as c:
            async with c.producer(linger_s=0.05) as p:
                handles = [p.send("t", b"v%d" % i, partition=i) for i in range(16)]
                assert [(await h).offset for h in handles] == [0] * 16
                assert p.statistics().retries >= 1
            assert syncfs.fail_once is False and syncfs.calls >= 2
            d = await c.describe_topic("t")
            assert [p.log_end_offset for p in d.partitions] == [1] * 16


def test_the_broker_says_at_start_which_sync_is_in_effect(tmp_path, caplog):
    async def main() -> None:
        async with open_broker(tmp_path / "d", fsync="always", sync_method="fsync"):
            pass

    with caplog.at_level(logging.INFO, logger="millpond.server"):
        trio.run(main)
    started = [r.getMessage() for r in caplog.records if "listening on" in r.getMessage()]
    assert len(started) == 1 and started[0].endswith("fsync=always, sync: fdatasync per file)")
