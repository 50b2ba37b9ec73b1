# Contract suite (every storage): appends, segment rolls (size and age), reads from every offset, the
# max_bytes/upto rules, closed logs. The file store's own files: test_file_store.py.
from __future__ import annotations

import pytest

from millpond.broker.wire.batch import iter_batches
from millpond.broker.wire.errors import CorruptBatchError, OffsetOutOfRangeError, StorageError
from logkit import T0, append, bases, make_batch, value_at


def batches(data: bytes) -> list[tuple[int, int]]:
    """(base offset, record count) of each batch in a read answer; asserts nothing trails."""
    out = [(h.base_offset, h.record_count) for _, h in iter_batches(data)]
    assert sum(h.size for _, h in iter_batches(data)) == len(data)
    return out


@pytest.fixture
def multi(anyenv):
    """A partition of 3-record batches spread over several 1 KiB segments, with a sparse index every 200 bytes."""
    manager = anyenv.open(segment_bytes=1024, index_interval_bytes=200)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    for i in range(40):
        append(log, [b"v%02d-%d" % (i, j) + b"." * 40 for j in range(3)], [T0 + i] * 3)
    return manager, log


def test_append_assigns_dense_offsets_and_stamps_them(anyenv):
    manager = anyenv.open()
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
    if anyenv.files:
        on_disk = anyenv.segment_files("t")[0].read_bytes()
        assert on_disk == data  # stored verbatim, with the base offsets stamped in


def test_roll_by_size(anyenv):
    manager = anyenv.open(segment_bytes=1024)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    blob, header = make_batch([b"x" * 300])
    size = len(blob)
    per_segment = 1024 // size
    for _ in range(per_segment * 3):
        log.append(blob, header, T0)
    assert bases(log) == [n * per_segment for n in range(3)]
    assert [s.size for s in log.store.segments] == [per_segment * size] * 3
    assert log.segment_count == 3 and log.size_bytes == 3 * per_segment * size


def test_batch_bigger_than_segment_bytes_gets_a_segment_of_its_own(anyenv):
    manager = anyenv.open(segment_bytes=1024)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    append(log, [b"a"])
    append(log, [b"b" * 3000])
    append(log, [b"c"])
    assert bases(log) == [0, 1, 2]
    assert [value_at(log, o)[:1] for o in range(3)] == [b"a", b"b", b"c"]


def test_roll_by_age_counts_from_the_first_append(anyenv):
    manager = anyenv.open(segment_s=60)
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
    assert bases(log) == [0, 2, 4]


def test_empty_active_segment_never_rolls(anyenv):
    manager = anyenv.open(segment_s=0.01)
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


def test_read_crosses_segments_and_honours_max_bytes(multi):
    _, log = multi
    one = len(log.read(0, 1))
    everything = log.read(0, 1 << 20)
    assert batches(everything) == [(3 * i, 3) for i in range(40)]
    assert len(everything) == 40 * one
    assert batches(log.read(4, 3 * one)) == [(3, 3), (6, 3), (9, 3)]
    assert batches(log.read(4, 3 * one - 1)) == [(3, 3), (6, 3)]
    # A read starting near a segment's end continues into the next segment.
    second_base = bases(log)[1]
    data = log.read(second_base - 1, 4 * one)
    assert batches(data) == [(second_base - 3 + 3 * i, 3) for i in range(4)]
    data = log.read(second_base - 1, 1 << 20, upto=second_base + 1)
    assert batches(data) == [(second_base - 3, 3), (second_base, 3)]
    assert batches(log.read(second_base - 1, 1 << 20, upto=second_base)) == [(second_base - 3, 3)]


def test_first_batch_is_returned_whole_even_if_larger_than_max_bytes(anyenv):
    manager = anyenv.open()
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


def test_header_not_matching_blob_is_refused(anyenv):
    manager = anyenv.open()
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    blob, header = make_batch([b"a"])
    _, other = make_batch([b"a much longer value"])
    with pytest.raises(CorruptBatchError):
        log.append(blob, other, T0)
    assert log.log_end_offset == 0 and log.size_bytes == 0


def test_closed_log_refuses_io(anyenv):
    manager = anyenv.open(segment_bytes=1024)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    append(log, [b"a"])
    manager.close()
    with pytest.raises(StorageError):
        append(log, [b"b"])
    with pytest.raises(StorageError):
        log.read(0, 100)
    with pytest.raises(StorageError):
        append(log, [b"c" * 2000])  # a roll is refused too
    assert (log.log_end_offset, log.segment_count) == (1, 1)


def test_open_twice_is_refused(anyenv):
    manager = anyenv.open()
    with pytest.raises(RuntimeError):
        manager.open(T0)
