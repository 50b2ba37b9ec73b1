# Sync plans that make many partitions durable with one syncfs(2) of the data directory's filesystem (sync_method
# "auto" from SYNCFS_AUTO_MIN partitions, "syncfs" from 2, "fsync" never): which plans use it, that the parts then
# skip their own data fsyncs but still write index files and fsync their directories, that a failed syncfs
# acknowledges nothing, and that a part on another filesystem still fsyncs its own files. The syncfs call is a
# counting stand-in except in the tests of the real call (Linux 5.8+).
from __future__ import annotations

import errno
import os
import sys

import pytest

from millpond.broker.config import BrokerConfig
from millpond.broker.core.log import files
from millpond.broker.core.log.files import SYNCFS_AUTO_MIN, FilesystemSync
from millpond.broker.wire.errors import InvalidConfigError, StorageError
from logkit import T0, append, in_thread


@pytest.fixture
def syncfs(monkeypatch):
    """A stand-in for libc's syncfs: records the fd it was given and answers ``syncfs.answer`` (0, or an errno)."""
    class Fake:
        def __init__(self) -> None:
            self.answer = 0
            self.calls: list[int] = []

        def __call__(self, fd: int) -> int:
            self.calls.append(fd)
            return self.answer

    fake = Fake()
    monkeypatch.setattr(files, "_syncfs_call", lambda: fake)
    return fake


def topic_with_appends(manager, partitions: int, segment_rolls: bool = False):
    manager.create_topic("t", partitions, None, T0)
    logs = [manager.partition("t", p) for p in range(partitions)]
    for log in logs:
        for _ in range(3 if segment_rolls else 1):
            append(log, [b"x" * 300])
    return logs


@pytest.mark.parametrize("method, partitions, whole", [
    ("auto", SYNCFS_AUTO_MIN, True), ("auto", SYNCFS_AUTO_MIN - 1, False), ("auto", 16, True),
    ("syncfs", 2, True), ("syncfs", 1, False), ("fsync", 16, False),
])
def test_which_plans_sync_the_whole_filesystem(env, fsyncs, syncfs, method, partitions, whole):
    manager = env.open(fsync_mode="always", partitions_max=16, sync_method=method)
    logs = topic_with_appends(manager, partitions)
    plan = manager.sync_plan()
    assert plan.whole_filesystem is whole
    # a part covered by the syncfs holds no fd of its own (nothing dup'ed on the loop, nothing closed after)
    assert [len(part.fds) for _, part in plan.parts] == [0 if whole else 1] * partitions
    fsyncs.clear()
    assert in_thread(plan.run) is None
    assert len(syncfs.calls) == (1 if whole else 0)
    assert len(fsyncs) == (0 if whole else partitions)  # one data fsync per partition, or none at all
    assert sorted(manager.synced(plan, None), key=id) == sorted(logs, key=id)
    assert [log.high_watermark for log in logs] == [1] * partitions


def test_a_plan_over_the_whole_filesystem_is_not_split(env, syncfs):
    manager = env.open(fsync_mode="always", partitions_max=16, sync_method="auto")
    topic_with_appends(manager, 10)
    plan = manager.sync_plan()
    assert plan.split(8) == [plan]
    plan.close()


def test_parts_still_write_index_files_and_fsync_their_directories_after_the_syncfs(env, fsyncs, syncfs):
    manager = env.open(fsync_mode="always", partitions_max=8, sync_method="auto", segment_bytes=1024)
    logs = topic_with_appends(manager, 4, segment_rolls=True)
    assert [log.segment_count for log in logs] == [2] * 4
    plan = manager.sync_plan()
    fsyncs.clear()
    assert plan.run() is None
    assert len(syncfs.calls) == 1
    assert [c.kind for c in fsyncs] == ["fsync"] * 4  # only the four directories (a roll added a file to each)
    manager.synced(plan, None)
    assert [log.high_watermark for log in logs] == [3] * 4
    for p in range(4):
        rolled = env.segment_files("t", p)[0]
        assert rolled.with_suffix(".index").exists() and rolled.with_suffix(".timeindex").exists()


def test_a_failed_syncfs_acknowledges_nothing_and_the_next_plan_covers_it_all(env, syncfs):
    manager = env.open(fsync_mode="always", partitions_max=8, sync_method="auto")
    logs = topic_with_appends(manager, 5)
    fds_before = len(os.listdir("/proc/self/fd")) if sys.platform == "linux" else None
    plan = manager.sync_plan()
    syncfs.answer = errno.EIO
    error = in_thread(plan.run)
    assert isinstance(error, OSError) and error.errno == errno.EIO and "syncfs" in str(error)
    if fds_before is not None:
        assert len(os.listdir("/proc/self/fd")) == fds_before  # the plan's dup'ed fds were closed anyway
    assert sorted(manager.synced(plan, error), key=id) == sorted(logs, key=id)
    assert [(log.high_watermark, log.sync_failures) for log in logs] == [(0, 1)] * 5
    syncfs.answer = 0
    retry = manager.sync_plan()
    assert len(retry.parts) == 5
    assert manager.synced(retry, retry.run()) and [log.high_watermark for log in logs] == [1] * 5


def test_a_part_on_another_filesystem_fsyncs_its_own_files(env, fsyncs, syncfs):
    manager = env.open(fsync_mode="always", partitions_max=8, sync_method="auto", segment_bytes=1024)
    logs = topic_with_appends(manager, 4, segment_rolls=True)
    logs[2].store.device += 1  # as a partition directory mounted from another disk
    plan = manager.sync_plan()
    assert plan.whole_filesystem
    (elsewhere,) = [part for log, part in plan.parts if log is logs[2]]
    own = list(elsewhere.fds)
    assert len(own) == 2  # its rolled segment and its active one; the parts the syncfs covers hold none
    assert sum(len(part.fds) for _, part in plan.parts) == 2
    fsyncs.clear()
    assert plan.run() is None
    assert len(syncfs.calls) == 1
    assert [c.fd for c in fsyncs if c.kind != "fsync"] == own  # its own data fsyncs; directories aside
    manager.synced(plan, None)
    assert [log.high_watermark for log in logs] == [3] * 4


def test_a_plan_decided_whole_stays_whole_when_a_partition_cannot_take_part(env, fsyncs, syncfs, monkeypatch):
    # Parts made for a syncfs hold no fds: if one candidate fails to make its part (no fd to spare), the plan
    # still syncs the filesystem, even with fewer parts than SYNCFS_AUTO_MIN, or the others would sync nothing.
    manager = env.open(fsync_mode="always", partitions_max=8, sync_method="auto")
    logs = topic_with_appends(manager, SYNCFS_AUTO_MIN)
    failing = logs[0]

    def no_fd(data, covered=None):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(failing, "sync_part", no_fd)
    plan = manager.sync_plan()
    assert len(plan.parts) == SYNCFS_AUTO_MIN - 1 and plan.whole_filesystem
    fsyncs.clear()
    assert plan.run() is None and len(syncfs.calls) == 1 and not fsyncs
    manager.synced(plan, None)
    assert [log.high_watermark for log in logs] == [0] + [1] * (SYNCFS_AUTO_MIN - 1)


def test_syncfs_is_refused_by_name_where_the_system_lacks_it_and_auto_falls_back(env, fsyncs, monkeypatch):
    monkeypatch.setattr(files, "_syncfs_call", lambda: None)
    with pytest.raises(StorageError, match=r'sync_method = "syncfs" needs Linux 5\.8'):
        env.open(fsync_mode="always", sync_method="syncfs")
    manager = env.open(fsync_mode="always", partitions_max=16, sync_method="auto")
    topic_with_appends(manager, 10)
    plan = manager.sync_plan()
    assert not plan.whole_filesystem and plan.filesystem is None
    fsyncs.clear()
    assert plan.run() is None and len(fsyncs) == 10


@pytest.mark.parametrize("kernel, usable", [("5.7.19", False), ("5.8.0", True), ("6.18.44-fc", True),
                                            ("4.19.0-generic", False), ("weird", False)])
def test_syncfs_is_used_only_from_linux_5_8(monkeypatch, kernel, usable):
    # before 5.8, syncfs(2) returned 0 even when write-back failed: an acknowledged write could be lost
    monkeypatch.setattr(files.os, "uname", lambda: os.uname_result(("Linux", "h", kernel, "#1", "x86_64")))
    monkeypatch.setattr("platform.release", lambda: kernel)
    if usable and sys.platform != "linux":
        pytest.skip("the libc call itself is Linux's")
    assert (files._syncfs_call() is not None) == usable


def test_other_systems_never_use_syncfs(monkeypatch):
    monkeypatch.setattr(files.os, "uname", lambda: os.uname_result(("Darwin", "h", "23.1.0", "#1", "arm64")))
    assert files._syncfs_call() is None


@pytest.mark.skipif(files._syncfs_call() is None, reason="syncfs(2) with error reports needs Linux 5.8+")
def test_the_real_syncfs_makes_a_plan_durable_and_reports_an_error(env, fsyncs):
    manager = env.open(fsync_mode="always", partitions_max=8, sync_method="syncfs")
    logs = topic_with_appends(manager, 3)
    plan = manager.sync_plan()
    fsyncs.clear()
    assert plan.run() is None and fsyncs == []
    manager.synced(plan, None)
    assert [log.high_watermark for log in logs] == [1] * 3
    fs = FilesystemSync.open(env.data_dir, "syncfs")
    fs.sync()
    fs.close()
    with pytest.raises(OSError) as raised:
        fs.sync()  # closed: the call fails, and the failure is an OSError with its errno
    assert raised.value.errno == errno.EBADF


def test_a_wrong_sync_method_is_named(env):
    with pytest.raises(InvalidConfigError, match="sync_method must be one of auto, fsync, syncfs, got 'fast'"):
        BrokerConfig(sync_method="fast")
    with pytest.raises(InvalidConfigError, match="sync_method must be a string"):
        BrokerConfig(sync_method=1)
    with pytest.raises(InvalidConfigError, match="sync_method must be one of"):
        env.open(sync_method="fdatasync")


def test_the_sync_in_effect_is_said_in_words(env, syncfs, monkeypatch):
    assert env.open(sync_method="auto").sync_in_effect == (
        f"one syncfs for {SYNCFS_AUTO_MIN} partitions or more, else fdatasync per file")
    assert env.open(sync_method="syncfs").sync_in_effect == (
        "one syncfs for 2 partitions or more, else fdatasync per file")
    assert env.open(sync_method="fsync").sync_in_effect == "fdatasync per file"
    monkeypatch.setattr(files, "_syncfs_call", lambda: None)
    assert env.open(sync_method="auto").sync_in_effect == "fdatasync per file (syncfs not available here)"

