# Helpers for the partition log tests: a data directory (or none: memory storage) with the managers opened on it,
# batch builders, and a stand-in for the server's off-loop work (sync plans and jobs, run inline).
# (A uniquely named module rather than conftest, so test files can import it.)
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from millpond.broker.config import TopicDefaults
from millpond.broker.core.log import LogManager, PartitionLog
from millpond.broker.wire.batch import BatchHeader, check_batch, decode_records, encode_batch

BATCH_BYTES_MAX = 1 << 20
T0 = 1_700_000_000_000  # a literal wall-clock time (ms) the tests count from
STORAGES = ["file", "memory"]


class LogEnv:
    """One data directory (file storage) and the managers opened on it; with memory storage, just the managers."""

    def __init__(self, data_dir: Path, storage: str = "file") -> None:
        self.data_dir = data_dir
        self.storage = storage
        self.files = storage == "file"
        self.managers: list[LogManager] = []

    def open(self, fsync_mode: str = "never", now_ms: int = T0, partitions_max: int = 8, sync_method: str = "fsync",
             **defaults: Any) -> LogManager:
        # sync_method "fsync" by default: these tests count and fault each file's fsync (syncfs: test_log_syncfs.py)
        # Opening again is a restart: the broker that had the directory is gone (and with it its lock).
        for earlier in self.managers:
            if not earlier._closed:
                earlier.abandon()
        manager = LogManager(
            self.data_dir if self.files else None, defaults=TopicDefaults(**defaults), batch_bytes_max=BATCH_BYTES_MAX,
            partitions_max=partitions_max, fsync_mode=fsync_mode, storage=self.storage, sync_method=sync_method,
        )
        manager.open(now_ms)
        self.managers.append(manager)
        return manager

    def crash(self, manager: LogManager) -> None:
        """Drop a manager as kill -9 would: fds closed, nothing fsynced, no index files written, no jobs run."""
        manager.abandon()

    def close_all(self) -> None:
        for manager in self.managers:
            self.crash(manager)

    def partition_dir(self, topic: str, partition: int = 0) -> Path:
        return self.data_dir / "topics" / topic / str(partition)

    def segment_files(self, topic: str, partition: int = 0) -> list[Path]:
        return sorted(self.partition_dir(topic, partition).glob("*.log"))


def flush(manager: LogManager) -> list[PartitionLog]:
    """What the server does off the loop, inline: run a sync plan (if any) and every queued job. Returns what
    ``synced`` returned."""
    moved: list[PartitionLog] = []
    plan = manager.sync_plan()
    if plan is not None:
        moved = manager.synced(plan, plan.run())
    manager.run_jobs()
    return moved


def bases(log: PartitionLog) -> list[int]:
    """Base offsets of the partition's segments, oldest first (whatever the store)."""
    return [s.base_offset for s in log.store.segments]


def make_batch(values: list[bytes], timestamps: list[int] | None = None) -> tuple[bytes, BatchHeader]:
    """A checked batch of records with these values (keys ``k<i>``) and timestamps (default: all T0)."""
    if timestamps is None:
        timestamps = [T0] * len(values)
    blob = encode_batch([(ts, b"k%d" % i, v, None) for i, (ts, v) in enumerate(zip(timestamps, values))])
    return blob, check_batch(blob, BATCH_BYTES_MAX)


def append(log: PartitionLog, values: list[bytes], timestamps: list[int] | None = None, now_ms: int = T0) -> int:
    blob, header = make_batch(values, timestamps)
    return log.append(blob, header, now_ms)


def value_at(log: PartitionLog, offset: int) -> bytes:
    """The value of the record at ``offset``, read through ``read`` (checks the first batch contains it)."""
    records = decode_records(log.read(offset, 1), log.topic, log.partition)
    assert records[0].offset <= offset <= records[-1].offset
    [record] = [r for r in records if r.offset == offset]
    return record.value


def in_thread(work: Any) -> Any:
    """``work()`` in a worker thread named "worker" (as the server runs a sync plan); its result."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(work()), name="worker")
    t.start()
    t.join()
    return out[0]
