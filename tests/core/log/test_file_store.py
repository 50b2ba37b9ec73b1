# The file store's own behaviour: what lies on disk, index lookups, failed and short writes, the pre-made next
# segment file, segment files removed in the background. Recovery: test_log_recovery.py.
from __future__ import annotations

import errno
import os

import pytest

from millpond.broker.core.log.file_store import SPARE_FILE
from millpond.broker.wire.batch import HEADER_BYTES, read_header
from millpond.broker.wire.errors import StorageError
from logkit import T0, append, bases, flush, make_batch, value_at


def test_rolled_segments_are_files_named_by_base_offset_and_get_index_files_from_the_plan(env):
    manager = env.open(segment_bytes=1024)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    blob, header = make_batch([b"x" * 300])
    size = len(blob)
    per_segment = 1024 // size
    for _ in range(per_segment * 3):
        log.append(blob, header, T0)
    files = env.segment_files("t")
    assert [f.name for f in files] == [f"{n * per_segment:020d}.log" for n in range(3)]
    assert [f.stat().st_size for f in files] == [per_segment * size] * 3
    flush(manager)
    # The rolled segments got their index files once the plan made them durable.
    assert (files[0].with_suffix(".index")).exists() and (files[0].with_suffix(".timeindex")).exists()
    assert (files[1].with_suffix(".index")).exists() and not (files[2].with_suffix(".index")).exists()


def test_index_lookup_finds_the_last_entry_at_or_before(env):
    manager = env.open(segment_bytes=1024, index_interval_bytes=200)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    for i in range(40):
        append(log, [b"v%02d-%d" % (i, j) + b"." * 40 for j in range(3)], [T0 + i] * 3)
    seg = log.store.segments[0]
    assert len(seg.idx_off) >= 2  # sparse: fewer entries than batches, more than none
    assert len(seg.idx_off) < (seg.next_offset - seg.base_offset) // 3
    for offset in range(seg.base_offset, seg.next_offset):
        at, pos = seg.lookup(offset)
        assert at <= offset
        assert read_header(os.pread(seg.fd, HEADER_BYTES, pos)).base_offset == at


def test_reopen_makes_recovered_data_visible(env):
    manager = env.open(fsync_mode="always")
    manager.create_topic("t", 1, None, T0)
    append(manager.partition("t", 0), [b"a"])
    env.crash(manager)
    log = env.open(fsync_mode="always").partition("t", 0)
    assert (log.log_end_offset, log.high_watermark) == (1, 1)  # recovery fsynced what it kept


def test_failed_write_leaves_the_log_unchanged(env, monkeypatch):
    manager = env.open()
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    append(log, [b"a"])
    size = log.size_bytes
    real = os.pwritev

    def half_then_full(fd, bufs, pos):
        real(fd, [bytes(bufs[0]), bytes(bufs[1])[:10]], pos)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwritev", half_then_full)
    with pytest.raises(StorageError):
        append(log, [b"b"])
    monkeypatch.setattr(os, "pwritev", real)
    assert (log.log_end_offset, log.size_bytes) == (1, size)
    assert env.segment_files("t")[0].stat().st_size == size  # the partial write was cut back
    assert append(log, [b"c"]) == 1
    assert [value_at(log, 0), value_at(log, 1)] == [b"a", b"c"]


def test_short_writes_are_continued(env, monkeypatch):
    manager = env.open()
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    real = os.pwritev

    def three_bytes_at_a_time(fd, bufs, pos):
        return real(fd, [b"".join(bytes(b) for b in bufs)[:3]], pos)

    monkeypatch.setattr(os, "pwritev", three_bytes_at_a_time)
    append(log, [b"hello", b"world"])
    monkeypatch.setattr(os, "pwritev", real)
    assert [value_at(log, 0), value_at(log, 1)] == [b"hello", b"world"]


def test_a_failed_roll_keeps_the_old_segment_active(env, monkeypatch):
    manager = env.open(segment_bytes=1024)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    append(log, [b"x" * 600])
    real = os.open
    monkeypatch.setattr(os, "open", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EMFILE, "Too many files")))
    with pytest.raises(StorageError, match="roll"):
        append(log, [b"y" * 600])
    monkeypatch.setattr(os, "open", real)
    assert (log.log_end_offset, log.segment_count) == (1, 1)
    assert append(log, [b"y" * 600]) == 1 and bases(log) == [0, 1]


def test_a_roll_renames_the_spare_file_made_in_the_background(env, monkeypatch):
    manager = env.open(segment_bytes=1024)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    append(log, [b"x" * 300])
    assert manager.take_jobs() == []  # under half full: no spare asked for yet
    append(log, [b"x" * 300])
    [job] = manager.take_jobs()  # half full: the next segment's file is wanted
    spare = env.partition_dir("t") / SPARE_FILE
    assert not spare.exists()
    job.done(job.work())  # what the server does: work in a thread, done on the loop
    assert spare.exists()
    opened = []
    real = os.open
    monkeypatch.setattr(os, "open", lambda *a, **k: opened.append(a[0]) or real(*a, **k))
    append(log, [b"x" * 600])  # rolls
    assert opened == []  # no file created on the loop: the spare was renamed
    assert bases(log) == [0, 2] and not spare.exists()
    assert [f.name for f in env.segment_files("t")] == [f"{0:020d}.log", f"{2:020d}.log"]
    monkeypatch.setattr(os, "open", real)
    flush(manager)  # the new segment is durable in its directory, and a new spare is made
    assert spare.exists()
    env.crash(manager)
    reopened = env.open(segment_bytes=1024).partition("t", 0)
    assert not spare.exists()  # a leftover spare is removed on open
    assert [value_at(reopened, o)[:1] for o in range(3)] == [b"x", b"x", b"x"]
    append(reopened, [b"x" * 300])  # rolls
    append(reopened, [b"x" * 300])  # the new segment is half full
    flush(env.managers[-1])
    assert spare.exists()
    env.managers[-1].close()
    assert not spare.exists()  # a clean close removes it


def test_retention_forgets_segments_at_once_and_removes_their_files_in_jobs(env):
    manager = env.open(segment_bytes=1024, retention_s=1)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    for i in range(9):
        append(log, [b"x" * 300], [T0 + i])
    flush(manager)
    assert manager.enforce_retention(T0 + 5000) == 5
    assert (log.log_start_offset, log.log_end_offset, log.segment_count) == (9, 9, 1)
    assert len(env.segment_files("t")) == 6  # nothing removed on the loop
    for job in manager.take_jobs():  # the segments' removal, and the producer state snapshot of the roll
        job.work()
    assert [f.name for f in env.segment_files("t")] == [f"{9:020d}.log"]
    assert max(env.partition_dir("t").glob("*.snapshot")).name == f"{9:020d}.snapshot"
    assert not list(env.partition_dir("t").glob("*index"))
