# The corrupted-segment matrix (issue 10): every kind of damage a data directory can suffer outside a torn tail, and
# the torn tail itself, each with and without index files, after a clean stop and after a crash. For each: the
# records served before and after the damage, the error a read shows, no acknowledged record lost beyond the
# damaged batch itself, no offset given out twice, the damage logged and recorded, and the same result on every
# later start (which trusts what the first start rebuilt instead of scanning again).
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import pytest

from millpond.broker.core.log.recovery import load_damage
from millpond.broker.wire.batch import decode_records, iter_batches
from millpond.broker.wire.errors import CorruptRangeError
from logkit import T0, LogEnv, append, flush

PER_BATCH = 3
OPTS = dict(segment_bytes=1024, index_interval_bytes=100)


def value(offset: int) -> bytes:
    return b"r%04d-" % offset + b"." * 40


def build(env: LogEnv, segments: int = 4) -> int:
    """Batches of PER_BATCH records until ``segments`` segments exist and the active one holds 4 batches; every
    record acknowledged (synced). Returns the log end."""
    manager = env.open(**OPTS)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    while log.segment_count < segments or len(list(iter_batches(env.segment_files("t")[-1].read_bytes()))) < 4:
        o = log.log_end_offset
        append(log, [value(o + i) for i in range(PER_BATCH)])
    flush(manager)
    return log.log_end_offset


def batches(path: Path) -> list[tuple[int, int, int]]:
    """(position, size, base offset) of each batch in a segment file."""
    return [(pos, h.size, h.base_offset) for pos, h in iter_batches(path.read_bytes())]


def flip(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x5A]))


def read_all(log) -> tuple[list[tuple[int, bytes]], list[tuple[int, int, int]], list[str]]:
    """Every record a consumer that continues past damage gets, the (first, last, next) of each corrupt range it
    was told about, and the errors' messages."""
    out: list[tuple[int, bytes]] = []
    skipped, messages = [], []
    off = log.log_start_offset
    while off < log.log_end_offset:
        nxt = None
        try:
            data = log.read(off, 700)
        except CorruptRangeError as exc:
            d = exc.details
            skipped.append((d["first_offset"], d["last_offset"], d["next_offset"]))
            messages.append(exc.message)
            data, nxt = exc.data, d["next_offset"]
            assert d["first_offset"] <= d["last_offset"] < nxt and d["first_offset"] >= off
        records = decode_records(data, "t", 0, off)
        assert all(r.offset < (skipped[-1][0] if nxt is not None else log.log_end_offset) for r in records)
        out += [(r.offset, r.value) for r in records]
        if nxt is not None:
            off = nxt
        else:
            assert records, f"no progress at offset {off}"
            off = records[-1].offset + 1
    return out, skipped, messages


# Each case: how it stops (clean close or crash), what it does to the files, and which batch's offsets are lost
# (index into the damaged segment's batches, None: nothing lost). ``segment``: 0 = the first (closed), -1 = the active.
Mutation = Callable[[LogEnv, list[Path]], None]


def _flip_mid(segment: int, drop_index: bool = False, header: bool = False) -> Mutation:
    def mutate(env: LogEnv, files: list[Path]) -> None:
        path = files[segment]
        pos, size, _ = batches(path)[1]
        flip(path, pos + 9 if header else pos + size - 5)  # the batch_length field, or a byte of its records
        if drop_index:
            for side in path.parent.glob(path.stem + ".*index"):
                side.unlink()
    return mutate


def _flip_last_active(env: LogEnv, files: list[Path]) -> None:
    pos, size, _ = batches(files[-1])[-1]
    flip(files[-1], pos + size - 5)


def _truncate_closed(env: LogEnv, files: list[Path]) -> None:
    pos, size, _ = batches(files[0])[2]
    os.truncate(files[0], pos + size // 2)


def _append_garbage(segment: int) -> Mutation:
    def mutate(env: LogEnv, files: list[Path]) -> None:
        with open(files[segment], "ab") as f:
            f.write(b"\x00\x00\x00\x00\x02garbage" * 30)
    return mutate


def _remove_middle_segment(env: LogEnv, files: list[Path]) -> None:
    files[1].unlink()
    for side in files[1].parent.glob(files[1].stem + ".*"):
        side.unlink()


CASES = {
    # name: (clean stop, mutation, damaged segment, damaged batch indexes (None: none), found at start)
    "flip-mid-closed-with-index": (True, _flip_mid(0), 0, [1], False),
    "flip-mid-closed-without-index": (True, _flip_mid(0, drop_index=True), 0, [1], True),
    "flip-length-mid-closed-without-index": (True, _flip_mid(0, drop_index=True, header=True), 0, [1], True),
    "flip-mid-closed-after-crash": (False, _flip_mid(0), 0, [1], False),
    "flip-mid-active-after-clean-stop": (True, _flip_mid(-1), -1, [1], False),
    "flip-mid-active-after-crash": (False, _flip_mid(-1), -1, [1], True),
    "flip-last-active-after-crash": (False, _flip_last_active, -1, [3], True),
    "truncate-closed": (True, _truncate_closed, 0, "from 2", True),
    "garbage-after-active": (False, _append_garbage(-1), -1, None, True),
    "garbage-after-closed": (True, _append_garbage(0), 0, None, True),
    "closed-segment-file-removed": (True, _remove_middle_segment, 1, "all", True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_corrupted_segment_matrix(tmp_path, name, caplog):
    clean, mutate, segment, lost_batches, at_start = CASES[name]
    env = LogEnv(tmp_path / "data")
    try:
        end = build(env)
        manager = env.managers[-1]
        files = env.segment_files("t")
        layout = [batches(f) for f in files]
        if clean:
            manager.close()
        else:
            env.crash(manager)
        mutate(env, files)
        # the offsets of the damaged batches: what may be lost, and nothing else
        seg = layout[segment]
        if lost_batches is None:
            lost: set[int] = set()
        elif lost_batches == "all":
            lost = set(range(seg[0][2], layout[segment + 1][0][2]))
        elif isinstance(lost_batches, str):
            first = int(lost_batches.split()[1])
            lost = set(range(seg[first][2], layout[segment + 1][0][2]))
        else:
            lost = {seg[i][2] + k for i in lost_batches for k in range(PER_BATCH)}
        expected = [(o, value(o)) for o in range(end) if o not in lost]
        with caplog.at_level(logging.INFO, logger="millpond.log"):
            for start in range(3):  # the first start recovers; the later ones must agree
                caplog.clear()
                manager = env.open(**OPTS)
                log = manager.partition("t", 0)
                summary = [r.getMessage() for r in caplog.records if "recovered" in r.getMessage()]
                assert len(summary) == 1 and summary[0].startswith("t/0: recovered ")
                if start == 0 and at_start and lost:
                    assert f"1 corrupt ranges quarantined; {min(lost)}-{max(lost)}" in summary[0]
                    assert any(r.levelno == logging.ERROR and "quarantined" in r.getMessage() for r in caplog.records)
                if start > 0:
                    assert "(0 scanned)" in summary[0] or "(1 scanned)" in summary[0]  # only a crash's active one
                assert log.log_end_offset == end  # never moved back over an acknowledged offset
                served, skipped, messages = read_all(log)
                assert served == expected  # everything but the damaged batch, in order
                if lost:
                    assert skipped == [(min(lost), max(lost), max(lost) + 1)]
                    assert f"offsets {min(lost)}-{max(lost)} are damaged" in messages[0]
                    assert f"the next readable offset is {max(lost) + 1}" in messages[0]
                else:
                    assert skipped == []
                flush(manager)  # background jobs: a read's discovery is recorded in <base>.corrupt
                manager.close()
            manager = env.open(**OPTS)
            log = manager.partition("t", 0)
            assert append(log, [b"after"]) == end  # no offset reused
            assert read_all(log)[0] == expected + [(end, b"after")]
            manager.close()
        if lost:
            damaged = env.segment_files("t")[segment if segment >= 0 else -1]
            if name == "closed-segment-file-removed":
                damaged = env.segment_files("t")[0]
            recorded = load_damage(damaged.with_suffix(""))
            assert [(d.first, d.end) for d in recorded] == [(min(lost), max(lost) + 1)]
        for f in env.segment_files("t"):  # the damaged bytes are kept, not deleted
            assert f.stat().st_size > 0
    finally:
        env.close_all()


def test_damage_bytes_are_kept_and_garbage_after_a_closed_segment_is_recorded(tmp_path):
    env = LogEnv(tmp_path / "data")
    try:
        end = build(env)
        env.managers[-1].close()
        first = env.segment_files("t")[0]
        before = first.read_bytes()
        _flip_mid(0, drop_index=True)(env, env.segment_files("t"))
        _append_garbage(0)(env, env.segment_files("t"))
        damaged = first.read_bytes()
        manager = env.open(**OPTS)
        assert first.read_bytes() == damaged and len(damaged) > len(before)  # nothing cut, nothing rewritten
        recorded = load_damage(first.with_suffix(""))
        pos, size, base = batches(first)[1]
        assert [(d.first, d.end, d.position, d.nbytes) for d in recorded] == [
            (base, base + PER_BATCH, pos, size), (batches(env.segment_files("t")[1])[0][2],) * 2
            + (len(before), len(damaged) - len(before))]
        assert (env.partition_dir("t") / first.with_suffix(".index").name).exists()  # rebuilt, written back
        assert manager.partition("t", 0).log_end_offset == end
    finally:
        env.close_all()


def test_a_read_that_finds_damage_routes_around_it_at_once(tmp_path):
    env = LogEnv(tmp_path / "data")
    try:
        build(env)
        manager = env.managers[-1]
        log = manager.partition("t", 0)
        first = env.segment_files("t")[0]
        (p0, s0, _), (p1, s1, b1), _, (p3, _, b3) = batches(first)[:4]
        flip(first, p1 + s1 - 5)  # damaged while the broker runs: found by the read that meets it
        with pytest.raises(CorruptRangeError) as info:
            log.read(0, 1 << 20)
        assert [r.offset for r in decode_records(info.value.data, "t", 0)] == list(range(b1))
        assert info.value.details == {"topic": "t", "partition": 0, "first_offset": b1,
                                      "last_offset": b1 + PER_BATCH - 1, "next_offset": b1 + PER_BATCH}
        with pytest.raises(CorruptRangeError):  # asked inside the range: the same error, nothing before it
            log.read(b1 + 1, 1 << 20)
        assert decode_records(log.read(b1 + PER_BATCH, 1), "t", 0)[0].offset == b1 + PER_BATCH
        flush(manager)
        assert [(d.first, d.end) for d in load_damage(first.with_suffix(""))] == [(b1, b1 + PER_BATCH)]
        # lookup by time steps over it
        assert log.offset_for_timestamp(T0)[0] == 0
    finally:
        env.close_all()
