# Durability through sync plans: the high watermark per fsync mode, plans covering rolled segments (their fsync,
# index files and the directory), failed syncs, and no fsync ever on the caller's thread when appending. The memory
# store is durable at once.
from __future__ import annotations

import errno
import os
import threading

import pytest

from millpond.broker.wire.batch import iter_batches
from logkit import T0, append, bases, flush, in_thread


def batches(data: bytes) -> list[tuple[int, int]]:
    return [(h.base_offset, h.record_count) for _, h in iter_batches(data)]


def test_high_watermark_under_always_moves_only_when_a_plan_covers_it(anyenv):
    manager = anyenv.open(fsync_mode="always")
    manager.create_topic("t", 2, None, T0)
    log = manager.partition("t", 0)
    append(log, [b"a", b"b"])
    append(log, [b"c"])
    if not anyenv.files:  # memory: durable at once, nothing to plan
        assert (log.log_end_offset, log.high_watermark) == (3, 3)
        assert manager.sync_plan() is None and manager.dirty() == []
        return
    assert (log.log_end_offset, log.high_watermark) == (3, 0)
    assert manager.dirty() == [log]
    assert log.read(0, 1 << 20, upto=log.high_watermark) == b""
    plan = manager.sync_plan()
    assert plan.ends == {log: 3}
    append(log, [b"d"])  # arrives while the plan runs: not covered by it
    assert manager.synced(plan, in_thread(plan.run)) == [log]
    assert log.high_watermark == 3
    assert manager.dirty() == [log]
    assert batches(log.read(0, 1 << 20, upto=log.high_watermark)) == [(0, 2), (2, 1)]
    log.mark_durable(2)  # never moves back
    assert log.high_watermark == 3
    assert flush(manager) == [log]
    assert log.high_watermark == 4
    assert manager.dirty() == [] and manager.sync_plan() is None
    log.mark_durable(99)  # never past the log end
    assert log.high_watermark == 4


@pytest.mark.parametrize("mode", ["interval", "never"])
def test_high_watermark_follows_log_end_without_always(anyenv, mode):
    manager = anyenv.open(fsync_mode=mode)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    append(log, [b"a", b"b"])
    assert log.high_watermark == 2
    plan = manager.sync_plan()
    if anyenv.files and mode == "interval":
        assert plan.ends == {log: 2}  # the interval flusher fsyncs what was appended
        assert manager.synced(plan, plan.run()) == []  # no high watermark moved: it was there already
        assert manager.sync_plan() is None
    else:
        assert plan is None  # "never": nothing to fsync until a segment rolls; memory: nothing ever
    assert log.high_watermark == 2


def test_appending_through_rolls_never_fsyncs_on_the_callers_thread(env, fsyncs):
    manager = env.open(fsync_mode="always", segment_bytes=1024)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    fsyncs.clear()
    for _ in range(12):
        append(log, [b"x" * 300])
    manager.enforce_retention(T0)
    assert log.segment_count == 6
    assert fsyncs == []  # rolls left the old segments' fsync and the directory's to the plan
    plan = manager.sync_plan()
    assert in_thread(plan.run) is None
    assert fsyncs and {c.thread for c in fsyncs} == {"worker"}
    manager.synced(plan, None)
    assert log.high_watermark == 12


def test_a_plan_covers_rolled_segments_their_index_files_and_the_directory(env, fsyncs):
    manager = env.open(fsync_mode="always", segment_bytes=1024)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    for _ in range(5):
        append(log, [b"x" * 300])
    assert bases(log) == [0, 2, 4]
    assert log.high_watermark == 0  # a roll makes nothing durable by itself
    files = env.segment_files("t")
    assert not any(f.with_suffix(".index").exists() for f in files)  # nor writes index files
    fsyncs.clear()
    plan = manager.sync_plan()
    assert plan.ends == {log: 5}
    assert manager.synced(plan, in_thread(plan.run)) == [log]
    assert log.high_watermark == 5
    assert len(fsyncs) == 3 + 1  # two rolled segments, the active one, the partition directory
    for f in files[:2]:  # rolled segments got their index files once their .log was durable
        assert f.with_suffix(".index").exists() and f.with_suffix(".timeindex").exists()
    assert not files[2].with_suffix(".index").exists()  # the active one gets them when it closes
    manager.run_jobs()  # the rolls' producer state snapshots
    fsyncs.clear()
    append(log, [b"y"])
    flush(manager)
    assert len(fsyncs) == 1  # only the active segment: the rolled ones and the directory are done


def test_under_never_a_plan_syncs_only_rolled_segments(env):
    manager = env.open(fsync_mode="never", segment_bytes=1024)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    append(log, [b"x" * 300])
    assert manager.sync_plan() is None
    for _ in range(4):
        append(log, [b"x" * 300])
    assert log.high_watermark == 5
    plan = manager.sync_plan()
    assert plan.ends == {log: 4}  # what the rolled segments hold; the active segment is left to the OS
    assert [len(part.fds) for _, part in plan.parts] == [2]
    manager.synced(plan, plan.run())
    assert all(f.with_suffix(".index").exists() for f in env.segment_files("t")[:2])
    assert manager.sync_plan() is None and log.high_watermark == 5


def test_a_failed_sync_leaves_the_high_watermark_and_counts_a_failure(env, monkeypatch):
    manager = env.open(fsync_mode="always", segment_bytes=1024)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    for _ in range(3):
        append(log, [b"x" * 300])
    assert (log.segment_count, log.sync_failures) == (2, 0)
    fds_before = len(os.listdir("/proc/self/fd"))
    plan = manager.sync_plan()
    def broken(fd):
        raise OSError(errno.EIO, "Input/output error")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", broken)
        m.setattr(os, "fdatasync", broken)
        error = in_thread(plan.run)
    assert isinstance(error, OSError) and error.errno == errno.EIO
    assert len(os.listdir("/proc/self/fd")) == fds_before  # the plan's dup'ed fds were closed anyway
    assert manager.synced(plan, error) == [log]
    assert (log.high_watermark, log.sync_failures) == (0, 1)
    assert not env.segment_files("t")[0].with_suffix(".index").exists()
    retry = manager.sync_plan()  # the rolled segment is still owed a sync
    assert [len(part.fds) for _, part in retry.parts] == [2]
    assert manager.synced(retry, retry.run()) == [log]
    assert (log.high_watermark, log.sync_failures) == (3, 1)
    assert env.segment_files("t")[0].with_suffix(".index").exists()


def test_a_plan_holds_its_own_fds(env):
    manager = env.open(fsync_mode="always")
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    append(log, [b"a"])
    plan = manager.sync_plan()
    log.close_quietly()  # the segment's own fd is gone; the plan's duplicate is not
    assert plan.run() is None
    unrun = manager.sync_plan()
    assert unrun is None  # a closed partition owes nothing
    plan.close()  # idempotent


def test_flush_makes_every_mode_and_storage_visible_up_to_the_log_end(anyenv):
    for mode in ("always", "interval", "never"):
        manager = anyenv.open(fsync_mode=mode, segment_bytes=1024)
        manager.create_topic(mode, 1, None, T0)
        log = manager.partition(mode, 0)
        for _ in range(7):
            append(log, [b"x" * 300])
        flush(manager)
        assert (log.log_end_offset, log.high_watermark) == (7, 7)
        assert manager.sync_plan() is None or mode == "never" and not anyenv.files


def test_a_split_plan_gives_each_partition_to_one_piece_and_all_of_them_become_durable(env, fsyncs):
    manager = env.open(fsync_mode="always", partitions_max=16)
    manager.create_topic("t", 10, None, T0)
    logs = [manager.partition("t", p) for p in range(10)]
    for log in logs:
        append(log, [b"a", b"b"])
    plan = manager.sync_plan()
    pieces = plan.split(4)
    assert [len(piece.parts) for piece in pieces] == [3, 3, 2, 2]
    covered = [plog for piece in pieces for plog, _ in piece.parts]
    assert sorted(covered, key=id) == sorted(logs, key=id) and len(set(map(id, covered))) == 10
    del fsyncs[:]
    threads = [threading.Thread(target=piece.run) for piece in pieces]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fsyncs) == 10  # one data fsync per partition, none twice
    assert sorted(manager.synced(plan, None), key=id) == sorted(logs, key=id)
    assert [log.high_watermark for log in logs] == [2] * 10
    assert plan.split(1) == [plan] and len(plan.split(64)) == 10  # never more pieces than partitions
