# Crash recovery: torn tails cut at every byte, zero-filled and garbage tails, missing or damaged index files, stray
# files. Restarting twice always gives the same result. Damage that is not a torn tail: test_log_damage.py.
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from millpond.broker.wire.batch import iter_batches
from logkit import T0, LogEnv, append, flush, value_at

LAST_VALUES = [b"last-0", b"last-1-" + b"z" * 30, b"last-2"]


def build(env: LogEnv, clean: bool | str) -> tuple[Path, int, int]:
    """Three segments; the tail's last batch holds LAST_VALUES. Returns (tail file, where the last batch starts,
    its base offset) after closing cleanly or crashing (``"synced"``: crashing after a sync plan covered the rolled
    segments, so they have index files)."""
    manager = env.open(segment_bytes=1024, index_interval_bytes=100)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    while log.segment_count < 3:
        append(log, [b"v%03d" % log.log_end_offset + b"." * 60])
    if clean == "synced":
        flush(manager)
        clean = False
    append(log, [b"w%03d" % log.log_end_offset])
    base = append(log, LAST_VALUES, [T0 + 1, T0 + 2, T0 + 3])
    tail = env.segment_files("t")[-1]
    good_end = log.store.segments[-1].size - (len(log.read(base, 1)))
    if clean:
        manager.close()
    else:
        env.crash(manager)
    return tail, good_end, base


def all_values(base: int) -> list[bytes]:
    """The values build() stores below ``base`` (its last batch included when ``base`` is past it)."""
    return [b"v%03d" % o + b"." * 60 for o in range(base - 1)] + [b"w%03d" % (base - 1)]


def check_recovered(env: LogEnv, tail: Path, good_end: int, end: int, values: list[bytes]) -> None:
    """Open twice (crashing in between) and check both give the log end ``end``, the tail cut to ``good_end`` and
    ``values`` readable; then the next append gets offset ``end``."""
    assert len(values) == end
    for _ in range(2):
        manager = env.open(segment_bytes=1024, index_interval_bytes=100)
        log = manager.partition("t", 0)
        assert (log.log_start_offset, log.log_end_offset, log.segment_count) == (0, end, 3)
        assert tail.stat().st_size == good_end  # physically truncated
        assert value_at(log, end - 1) == values[-1]
        assert log.read(end, 100) == b""
        env.crash(manager)
    manager = env.open(segment_bytes=1024, index_interval_bytes=100)
    log = manager.partition("t", 0)
    assert append(log, [b"again"]) == end
    assert [value_at(log, o) for o in range(end + 1)] == values + [b"again"]
    manager.close()


@pytest.mark.parametrize("clean", [False, "synced", True], ids=["crashed", "synced-crashed", "closed"])
def test_last_batch_cut_at_every_byte_position(tmp_path, clean):
    template = LogEnv(tmp_path / "template")
    tail, good_end, base = build(template, clean)
    full = tail.stat().st_size
    assert full - good_end > 60
    for cut in range(good_end, full):
        env = LogEnv(tmp_path / f"cut{cut}")
        shutil.copytree(template.data_dir, env.data_dir)
        my_tail = env.data_dir / tail.relative_to(template.data_dir)
        os.truncate(my_tail, cut)
        try:
            check_recovered(env, my_tail, good_end, base, all_values(base))
        finally:
            env.close_all()
        shutil.rmtree(env.data_dir)


@pytest.mark.parametrize("clean", [False, "synced", True], ids=["crashed", "synced-crashed", "closed"])
@pytest.mark.parametrize("junk", [bytes(4096), b"\xff" * 100, bytes(40)], ids=["zeros-4KiB", "ones", "short-zeros"])
def test_junk_after_the_last_batch_is_cut(tmp_path, clean, junk, caplog):
    env = LogEnv(tmp_path / "data")
    tail, _, base = build(env, clean)
    good_end = tail.stat().st_size
    with open(tail, "ab") as f:
        f.write(junk)
    with caplog.at_level(logging.WARNING, logger="millpond.log"):
        try:
            check_recovered(env, tail, good_end, base + len(LAST_VALUES), all_values(base) + LAST_VALUES)
        finally:
            env.close_all()
    assert f"cut {len(junk)} bytes at position {good_end}" in caplog.text


def test_torn_tail_is_logged_with_bytes_and_position(tmp_path, caplog):
    env = LogEnv(tmp_path / "data")
    tail, good_end, _ = build(env, clean=False)
    os.truncate(tail, good_end + 30)
    with caplog.at_level(logging.WARNING, logger="millpond.log"):
        env.open()
    env.close_all()
    [message, summary] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"cut 30 bytes at position {good_end}" in message and "t/0" in message
    assert summary == ("t/0: recovered 16 records in 3 segments (3 scanned), log start 0, log end 16; 30 torn bytes "
                       "cut; 0 corrupt ranges quarantined")


def test_whole_tail_segment_torn_to_nothing(env):
    manager = env.open()
    manager.create_topic("t", 1, None, T0)
    append(manager.partition("t", 0), [b"a", b"b"])
    env.crash(manager)
    os.truncate(env.segment_files("t")[0], 20)
    log = env.open().partition("t", 0)
    assert (log.log_end_offset, log.size_bytes) == (0, 0)
    assert env.segment_files("t")[0].stat().st_size == 0
    assert append(log, [b"c"]) == 0


@pytest.mark.parametrize("damage", ["delete", "flip", "truncate", "empty"])
def test_missing_or_damaged_index_files_are_rebuilt(env, damage):
    manager = env.open(segment_bytes=2048, index_interval_bytes=100)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    for i in range(50):
        append(log, [b"x" * (i % 13 * 7)], [T0 + (i * 7919) % 500])
    indexes = [(list(s.idx_off), list(s.idx_pos), list(s.ts_max), list(s.ts_off)) for s in log.store.segments]
    stamps = {t: log.offset_for_timestamp(T0 + t) for t in range(0, 520, 10)}
    manager.close()
    for path in env.partition_dir("t").glob("*index"):
        if damage == "delete":
            path.unlink()
        elif damage == "flip":
            raw = bytearray(path.read_bytes())
            raw[0] ^= 1
            path.write_bytes(bytes(raw))
        elif damage == "truncate":
            os.truncate(path, path.stat().st_size - 3)
        else:
            path.write_bytes(b"")
    reopened = env.open(segment_bytes=2048, index_interval_bytes=100).partition("t", 0)
    assert [(list(s.idx_off), list(s.idx_pos), list(s.ts_max), list(s.ts_off)) for s in reopened.store.segments] == indexes
    assert {t: reopened.offset_for_timestamp(T0 + t) for t in stamps} == stamps
    assert [value_at(reopened, o) for o in range(50)] == [b"x" * (i % 13 * 7) for i in range(50)]


def test_index_describing_more_than_the_log_is_not_trusted(env):
    manager = env.open(index_interval_bytes=50)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    for i in range(20):
        append(log, [b"%02d" % i])
    manager.close()  # the index files now describe all 20 batches
    seg_file = env.segment_files("t")[0]
    keep = sum(h.size for _, h in list(iter_batches(seg_file.read_bytes()))[:7])
    os.truncate(seg_file, keep)  # lost data the index still points into
    reopened = env.open(index_interval_bytes=50).partition("t", 0)
    assert reopened.log_end_offset == 7
    assert all(pos < keep for pos in reopened.store.segments[0].idx_pos)
    assert append(reopened, [b"new"]) == 7
    assert [value_at(reopened, o) for o in range(8)] == [b"%02d" % i for i in range(7)] + [b"new"]


def test_stray_files_are_cleaned_on_open(env):
    manager = env.open()
    manager.create_topic("t", 1, None, T0)
    append(manager.partition("t", 0), [b"a"])
    manager.close()
    pdir = env.partition_dir("t")
    orphan = pdir / f"{500:020d}.index"
    orphan.write_bytes(b"junk")
    tmp = pdir / "something.tmp"
    tmp.write_bytes(b"junk")
    log = env.open().partition("t", 0)
    assert not orphan.exists() and not tmp.exists()
    assert (log.log_end_offset, log.segment_count) == (1, 1)


def test_missing_partition_directory_starts_empty(env):
    manager = env.open()
    manager.create_topic("t", 2, None, T0)
    manager.close()
    shutil.rmtree(env.partition_dir("t", 1))
    log = env.open().partition("t", 1)
    assert (log.log_start_offset, log.log_end_offset) == (0, 0)
    assert env.segment_files("t", 1)[0].name == f"{0:020d}.log"
