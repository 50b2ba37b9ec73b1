# Appends, segment rolls (size and age), index lookups, reads from every offset, the max_bytes/upto rules, the
# high watermark per fsync mode, and failed writes.
from __future__ import annotations

import errno
import os

import pytest

from millpond.broker.wire.batch import HEADER_BYTES, iter_batches, read_header
from millpond.broker.wire.errors import CorruptBatchError, OffsetOutOfRangeError, StorageError
from logkit import T0, append, make_batch, value_at


def batches(data: bytes) -> list[tuple[int, int]]:
    """(base offset, record count) of each batch in a read answer; asserts nothing trails."""
    out = [(h.base_offset, h.record_count) for _, h in iter_batches(data)]
    assert sum(h.size for _, h in iter_batches(data)) == len(data)
    return out


@pytest.fixture
def multi(env):
    """A partition of 3-record batches spread over several 1 KiB segments, with a sparse index every 200 bytes."""
    manager = env.open(segment_bytes=1024, index_interval_bytes=200)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    for i in range(40):
        append(log, [b"v%02d-%d" % (i, j) + b"." * 40 for j in range(3)], [T0 + i] * 3)
    return manager, log


def test_append_assigns_dense_offsets_and_stamps_them(env):
    manager = env.open()
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    assert (log.log_start_offset, log.log_end_offset, log.high_watermark, log.size_bytes) == (0, 0, 0, 0)
    assert append(log, [b"a", b"b", b"c"]) == 0
    assert append(log, [b"d"]) == 3
    assert append(log, [b"e", b"f"]) == 4
    assert (log.log_end_offset, log.segment_count) == (6, 1)
    assert [value_at(log, o) for o in range(6)] == [b"a", b"b", b"c", b"d", b"e", b"f"]
    data = log.read(0, 1 << 20)
    assert batches(data) == [(0, 3), (3, 1), (4, 2)]
    assert log.size_bytes == len(data)
    on_disk = env.segment_files("t")[0].read_bytes()
    assert on_disk == data  # stored verbatim, with the base offsets stamped in


def test_roll_by_size(env):
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
    # The rolled segments got their index files when they closed.
    assert (files[0].with_suffix(".index")).exists() and (files[0].with_suffix(".timeindex")).exists()
    assert log.segment_count == 3 and log.size_bytes == 3 * per_segment * size


def test_batch_bigger_than_segment_bytes_gets_a_segment_of_its_own(env):
    manager = env.open(segment_bytes=1024)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    append(log, [b"a"])
    append(log, [b"b" * 3000])
    append(log, [b"c"])
    assert [f.name[:20] for f in env.segment_files("t")] == [f"{0:020d}", f"{1:020d}", f"{2:020d}"]
    assert [value_at(log, o)[:1] for o in range(3)] == [b"a", b"b", b"c"]


def test_roll_by_age_counts_from_the_first_append(env):
    manager = env.open(segment_ms=60_000)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    append(log, [b"a"], now_ms=T0)
    append(log, [b"b"], now_ms=T0 + 59_999)
    assert log.segment_count == 1
    append(log, [b"c"], now_ms=T0 + 60_000)
    assert log.segment_count == 2
    append(log, [b"d"], now_ms=T0 + 119_999)  # the new segment's age starts at its own first append
    assert log.segment_count == 2
    append(log, [b"e"], now_ms=T0 + 120_000)
    assert log.segment_count == 3
    assert [f.name[:20] for f in env.segment_files("t")] == [f"{0:020d}", f"{2:020d}", f"{4:020d}"]


def test_empty_active_segment_never_rolls(env):
    manager = env.open(segment_ms=10)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    append(log, [b"a"], now_ms=T0 + 1_000_000)
    assert log.segment_count == 1


def test_every_offset_of_a_multi_segment_partition_reads_the_batch_containing_it(multi):
    _, log = multi
    assert log.segment_count >= 4
    assert log.log_end_offset == 120
    for offset in range(120):
        data = log.read(offset, 1)
        [(base, count)] = batches(data)
        assert base == offset - offset % 3 and count == 3
        assert value_at(log, offset).startswith(b"v%02d-%d." % (offset // 3, offset % 3))


def test_index_lookup_finds_the_last_entry_at_or_before(multi):
    _, log = multi
    seg = log._segments[0]
    assert len(seg.idx_off) >= 2  # sparse: fewer entries than batches, more than none
    assert len(seg.idx_off) < (seg.next_offset - seg.base_offset) // 3
    for offset in range(seg.base_offset, seg.next_offset):
        at, pos = seg.lookup(offset)
        assert at <= offset
        assert read_header(os.pread(seg.fd, HEADER_BYTES, pos)).base_offset == at


def test_read_crosses_segments_and_honours_max_bytes(multi):
    _, log = multi
    one = len(log.read(0, 1))
    everything = log.read(0, 1 << 20)
    assert batches(everything) == [(3 * i, 3) for i in range(40)]
    assert len(everything) == 40 * one
    assert batches(log.read(4, 3 * one)) == [(3, 3), (6, 3), (9, 3)]
    assert batches(log.read(4, 3 * one - 1)) == [(3, 3), (6, 3)]
    # A read starting near a segment's end continues into the next segment.
    second_base = log._segments[1].base_offset
    data = log.read(second_base - 1, 4 * one)
    assert batches(data) == [(second_base - 3 + 3 * i, 3) for i in range(4)]
    data = log.read(second_base - 1, 1 << 20, upto=second_base + 1)
    assert batches(data) == [(second_base - 3, 3), (second_base, 3)]
    assert batches(log.read(second_base - 1, 1 << 20, upto=second_base)) == [(second_base - 3, 3)]


def test_first_batch_is_returned_whole_even_if_larger_than_max_bytes(env):
    manager = env.open()
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    append(log, [b"x" * 5000, b"y"])
    append(log, [b"z"])
    assert batches(log.read(1, 10)) == [(0, 2)]
    assert batches(log.read(1, 0)) == [(0, 2)]
    assert batches(log.read(2, 10)) == [(2, 1)]


def test_read_never_returns_a_batch_at_or_beyond_upto(multi):
    _, log = multi
    assert batches(log.read(0, 1 << 20, upto=7)) == [(0, 3), (3, 3), (6, 3)]
    assert batches(log.read(0, 1 << 20, upto=6)) == [(0, 3), (3, 3)]
    assert log.read(6, 1 << 20, upto=6) == b""
    assert log.read(100, 1 << 20, upto=6) == b""
    assert batches(log.read(117, 1 << 20, upto=10_000)) == [(117, 3)]  # capped at the log end


def test_read_at_log_end_is_empty_and_out_of_range_raises(multi):
    _, log = multi
    assert log.read(120, 1 << 20) == b""
    for bad in (121, -1, 10**12):
        with pytest.raises(OffsetOutOfRangeError) as info:
            log.read(bad, 100)
        assert info.value.details == {"log_start_offset": 0, "log_end_offset": 120}
        assert "0..120" in info.value.message


def test_high_watermark_always_moves_only_when_durable(env):
    manager = env.open(fsync_mode="always")
    manager.create_topic("t", 2, None, T0)
    log = manager.partition("t", 0)
    append(log, [b"a", b"b"])
    append(log, [b"c"])
    assert (log.log_end_offset, log.high_watermark) == (3, 0)
    assert manager.dirty() == [log]
    assert log.read(0, 1 << 20, upto=log.high_watermark) == b""
    fd, offset = log.sync_fd()
    assert offset == 3
    dup = os.dup(fd)  # what the server does before handing the fsync to a thread
    os.fsync(dup)
    os.close(dup)
    append(log, [b"d"])  # arrives while the fsync runs: not covered by it
    log.mark_durable(offset)
    assert log.high_watermark == 3
    assert manager.dirty() == [log]
    assert batches(log.read(0, 1 << 20, upto=log.high_watermark)) == [(0, 2), (2, 1)]
    log.mark_durable(2)  # never moves back
    assert log.high_watermark == 3
    log.mark_durable(99)  # never past the log end
    assert log.high_watermark == 4
    assert manager.dirty() == []


@pytest.mark.parametrize("mode", ["interval", "never"])
def test_high_watermark_follows_log_end_without_always(env, mode):
    manager = env.open(fsync_mode=mode)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    append(log, [b"a", b"b"])
    assert log.high_watermark == 2
    assert manager.dirty() == [log]  # still tracked, for the interval flusher
    log.mark_durable(log.sync_fd()[1])
    assert manager.dirty() == [] and log.high_watermark == 2


def test_roll_fsyncs_the_old_segment_and_covers_its_offsets(env):
    manager = env.open(fsync_mode="always", segment_bytes=1024)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    for _ in range(5):
        append(log, [b"x" * 300])
    assert log.segment_count == 3
    assert log.log_end_offset == 5
    assert log.high_watermark == log._segments[-1].base_offset == 4


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


def test_header_not_matching_blob_is_refused(env):
    manager = env.open()
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    blob, header = make_batch([b"a"])
    _, other = make_batch([b"a much longer value"])
    with pytest.raises(CorruptBatchError):
        log.append(blob, other, T0)
    assert log.log_end_offset == 0 and log.size_bytes == 0


def test_closed_log_refuses_io(env):
    manager = env.open()
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    append(log, [b"a"])
    manager.close()
    with pytest.raises(StorageError):
        append(log, [b"b"])
    with pytest.raises(StorageError):
        log.read(0, 100)


def test_sync_fd_follows_the_active_segment(env):
    manager = env.open(fsync_mode="always", segment_bytes=1024)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    append(log, [b"x" * 300])
    fd, end = log.sync_fd()
    held = os.dup(fd)  # the flusher's copy stays valid whatever the log does meanwhile
    for _ in range(6):
        append(log, [b"x" * 300])
    assert log.sync_fd()[0] != fd and log.sync_fd()[1] == 7
    os.fsync(held)
    os.close(held)
    log.mark_durable(end)
    assert log.high_watermark == log._segments[-1].base_offset  # rolls already made older segments durable


def test_open_twice_is_refused(env):
    manager = env.open()
    with pytest.raises(RuntimeError):
        manager.open(T0)
