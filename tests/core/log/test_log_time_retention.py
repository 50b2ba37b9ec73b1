# Contract suite (every storage): lookup by timestamp (Kafka ListOffsets rule, timestamps going backwards) and
# retention by time and by size. Reopening and files on disk: file store only.
from __future__ import annotations

import pytest

from millpond.broker.wire.errors import OffsetOutOfRangeError
from logkit import T0, append, bases, flush, value_at

DAY_MS = 86_400_000


def test_offset_for_timestamp_finds_the_first_record_in_offset_order(anyenv):
    manager = anyenv.open(segment_bytes=1024, index_interval_bytes=100)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    # Timestamps go backwards inside a batch and across batches; values are padded so segments roll.
    stamps = [[100, 90, 110], [105, 95], [200, 150], [120], [300, 250, 310], [50], [400]]
    for batch in stamps:
        append(log, [b"p" * 150 for _ in batch], [T0 + ts for ts in batch])
    assert log.segment_count > 2
    flat = [ts for batch in stamps for ts in batch]

    def model(t: int):
        for offset, ts in enumerate(flat):
            if ts >= t:
                return offset, T0 + ts
        return None

    for t in range(0, 420, 5):
        assert log.offset_for_timestamp(T0 + t) == model(t), t
    assert log.offset_for_timestamp(T0 + 106) == (2, T0 + 110)
    assert log.offset_for_timestamp(T0 + 101) == (2, T0 + 110)  # not 105, which comes later in offset order
    assert log.offset_for_timestamp(T0 + 401) is None
    assert log.offset_for_timestamp(0) == (0, T0 + 100)


def test_offset_for_timestamp_respects_upto_and_empty_logs(anyenv):
    manager = anyenv.open()
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    assert log.offset_for_timestamp(0) is None
    append(log, [b"a", b"b"], [T0, T0 + 10])
    append(log, [b"c"], [T0 + 20])
    assert log.offset_for_timestamp(T0 + 20) == (2, T0 + 20)
    assert log.offset_for_timestamp(T0 + 20, upto=2) is None
    assert log.offset_for_timestamp(T0 + 5, upto=1) is None
    assert log.offset_for_timestamp(T0 + 5, upto=2) == (1, T0 + 10)


def test_offset_for_timestamp_survives_reopen_with_indexes_from_disk_or_rebuilt(env):
    manager = env.open(segment_bytes=1024, index_interval_bytes=64)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    for i in range(60):
        append(log, [b"x" * 40], [T0 + (i * 37) % 100 + i])
    expected = {t: log.offset_for_timestamp(T0 + t) for t in range(0, 170, 3)}
    manager.close()
    assert {t: env.open().partition("t", 0).offset_for_timestamp(T0 + t) for t in expected} == expected
    for index in env.partition_dir("t").glob("*index"):
        index.unlink()
    rebuilt = env.open().partition("t", 0)
    assert {t: rebuilt.offset_for_timestamp(T0 + t) for t in expected} == expected


def fill(env, **config):
    """Four segments of four 1-record batches; segment k holds timestamps T0 + k*DAY_MS + i."""
    manager = env.open(segment_bytes=1024, **config)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    for k in range(4):
        for i in range(4):
            append(log, [(b"s%d-%d" % (k, i)).ljust(180, b".")], [T0 + k * DAY_MS + i])
    assert log.segment_count == 4 and log.log_end_offset == 16
    return manager, log


def test_retention_by_time_deletes_old_segments_and_moves_log_start(anyenv):
    env = anyenv
    manager, log = fill(env, retention_s=DAY_MS / 1000)
    segment_bytes = log.store.segments[0].size
    # Segment 0's largest timestamp is T0+3: it goes once now - (T0+3) > one day.
    assert manager.enforce_retention(T0 + 3 + DAY_MS) == 0
    assert manager.enforce_retention(T0 + 4 + DAY_MS) == 1
    assert (log.log_start_offset, log.log_end_offset, log.segment_count) == (4, 16, 3)
    assert log.size_bytes == 3 * segment_bytes
    if env.files:
        assert (env.partition_dir("t") / f"{0:020d}.log").exists()  # forgotten at once, removed by a job
        manager.run_jobs()
        assert not (env.partition_dir("t") / f"{0:020d}.log").exists()
        assert not (env.partition_dir("t") / f"{0:020d}.index").exists()
    for offset in (0, 3):
        with pytest.raises(OffsetOutOfRangeError) as info:
            log.read(offset, 100)
        assert info.value.details == {"log_start_offset": 4, "log_end_offset": 16}
    assert value_at(log, 4).startswith(b"s1-0")
    assert log.offset_for_timestamp(0) == (4, T0 + DAY_MS)
    assert manager.enforce_retention(T0 + 3 * DAY_MS + 3) == 1  # segment 1 (max T0+1d+3) goes, segment 2 stays
    assert log.log_start_offset == 8


def test_retention_deleting_everything_rolls_an_empty_segment_and_keeps_counting(anyenv):
    env = anyenv
    manager, log = fill(env, retention_s=DAY_MS / 1000)
    assert manager.enforce_retention(T0 + 10 * DAY_MS) == 4
    assert (log.log_start_offset, log.log_end_offset, log.segment_count, log.size_bytes) == (16, 16, 1, 0)
    assert bases(log) == [16]
    if env.files:
        manager.run_jobs()
        assert [f.name for f in env.segment_files("t")] == [f"{16:020d}.log"]
    assert log.read(16, 100) == b""
    with pytest.raises(OffsetOutOfRangeError):
        log.read(15, 100)
    assert append(log, [b"next"], now_ms=T0 + 10 * DAY_MS) == 16
    manager.close()
    if not env.files:
        return
    reopened = env.open(retention_s=DAY_MS / 1000).partition("t", 0)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (16, 17)
    assert value_at(reopened, 16) == b"next"


def test_retention_by_size_deletes_oldest_while_the_rest_still_fits(anyenv):
    env = anyenv
    manager, log = fill(env, retention_s=-1)
    seg = log.store.segments[0].size
    log.config = log.config.__class__(**{**log.config.to_wire(), "retention_bytes": 2 * seg})
    assert manager.enforce_retention(T0 + 100 * DAY_MS) == 2  # total - segment >= limit: 4s-s >= 2s, 3s-s >= 2s
    assert (log.log_start_offset, log.size_bytes, log.segment_count) == (8, 2 * seg, 2)
    assert manager.enforce_retention(T0 + 100 * DAY_MS) == 0
    log.config = log.config.__class__(**{**log.config.to_wire(), "retention_bytes": seg})
    assert manager.enforce_retention(T0) == 1
    assert log.log_start_offset == 12


def test_retention_by_size_set_at_creation(anyenv):
    manager = anyenv.open(segment_bytes=1024)
    manager.create_topic("t", 1, {"retention_bytes": 0, "retention_ms": -1}, T0)
    log = manager.partition("t", 0)
    for _ in range(8):
        append(log, [b"x" * 300])
    assert log.segment_count == 4
    assert manager.enforce_retention(T0) == 4
    assert (log.log_start_offset, log.log_end_offset, log.size_bytes) == (8, 8, 0)


def test_retention_keeps_what_is_not_yet_durable_under_always(anyenv):
    env = anyenv
    manager, log = fill(env, retention_s=DAY_MS / 1000, fsync_mode="always", retention_bytes=-1)
    if env.files:
        assert log.high_watermark == 0 and manager.enforce_retention(T0 + 100 * DAY_MS) == 0  # rolls sync nothing
        log.mark_durable(12)  # as if a plan had covered the first three segments; the active one is not yet
        assert log.high_watermark == 12
        assert manager.enforce_retention(T0 + 100 * DAY_MS) == 3
        assert (log.log_start_offset, log.segment_count) == (12, 1)
        flush(manager)
    assert log.high_watermark == 16
    assert manager.enforce_retention(T0 + 100 * DAY_MS) == (1 if env.files else 4)
    assert (log.log_start_offset, log.log_end_offset) == (16, 16)


def test_unlimited_retention_deletes_nothing(anyenv):
    env = anyenv
    manager, log = fill(env, retention_s=-1, retention_bytes=-1)
    assert manager.enforce_retention(T0 + 10_000 * DAY_MS) == 0
    assert log.log_start_offset == 0
