# Damage to a batch's base offset field. Kafka's record batch v2 leaves the base offset outside the CRC (the broker
# stamps it), so a flipped bit there leaves a batch whose CRC still holds. Offsets are dense in a segment: an intact
# batch where the previous one ended belongs at the previous one's end, whatever its field says, and recovery writes
# the field back. After a batch that failed its CRC, the next intact batch is placed by what the following batches'
# fields agree on, so one more damaged field cannot shift the records after it. Every case: each record served at
# its own offset with its own value, only batches whose records were damaged are lost, and a second start agrees.
from __future__ import annotations

import logging
import struct

import pytest

from logkit import LogEnv, append
from test_log_damage import OPTS, PER_BATCH, batches, build, read_all, value

BASE = struct.Struct(">q")


def set_base(path, pos: int, xor: int) -> None:
    """XOR the base offset field of the batch at ``pos`` with ``xor``."""
    with open(path, "r+b") as f:
        f.seek(pos)
        (base,) = BASE.unpack(f.read(8))
        f.seek(pos)
        f.write(BASE.pack(base ^ xor))


def damage_records(path, pos: int, size: int) -> None:
    with open(path, "r+b") as f:
        f.seek(pos + size - 5)
        b = f.read(1)
        f.seek(pos + size - 5)
        f.write(bytes([b[0] ^ 0x5A]))


def start_and_read(env: LogEnv):
    manager = env.open(**OPTS)
    log = manager.partition("t", 0)
    served, skipped, _ = read_all(log)
    end = log.log_end_offset
    manager.close()
    return end, served, skipped


@pytest.fixture
def crashed(tmp_path):
    """A partition of 4 segments stopped by a crash: (env, log end, the active segment's file, its batches)."""
    env = LogEnv(tmp_path / "data")
    end = build(env)
    env.crash(env.managers[-1])
    active = env.segment_files("t")[-1]
    yield env, end, active, batches(active)
    env.close_all()


# (xor of batch 0's field, xor of batch 1's field): a high byte, a field that now names an earlier offset, one that
# names the next batch's offsets, one that names a later batch's
FLIPS = [(1 << 56, 1), (1 << 56, 4), (1 << 56, 3), (1, 0), (0, 1 << 40), (2, 2)]


@pytest.mark.parametrize("flips", FLIPS, ids=[f"{a:x}-{b:x}" for a, b in FLIPS])
def test_a_recovery_scan_writes_back_a_damaged_base_offset_field_of_intact_batches(crashed, caplog, flips):
    # after a crash the active segment is scanned: every batch is checked and the fields are rewritten
    env, end, active, layout = crashed
    for (pos, _, _), xor in zip(layout, flips):
        if xor:
            set_base(active, pos, xor)
    expected = [(o, value(o)) for o in range(end)]
    with caplog.at_level(logging.WARNING, logger="millpond.log"):
        first = start_and_read(env)
    assert first == (end, expected, [])  # nothing lost, nothing skipped, the log end kept
    rewritten = [r.getMessage() for r in caplog.records if "base offset field" in r.getMessage()]
    assert len(rewritten) == sum(1 for x in flips if x)
    assert f"where {layout[0][2] if flips[0] else layout[1][2]} belongs" in rewritten[0]
    assert [base for _, _, base in batches(active)] == [base for _, _, base in layout]  # the fields as stamped
    assert start_and_read(env) == first
    manager = env.open(**OPTS)
    assert append(manager.partition("t", 0), [b"after"]) == end  # no offset given out twice


@pytest.mark.parametrize("flips", FLIPS, ids=[f"{a:x}-{b:x}" for a, b in FLIPS])
def test_a_read_never_serves_a_batch_under_a_damaged_base_offset_field(tmp_path, flips):
    # after a clean stop the segment's index files are trusted and a read meets the damage: the batches whose field
    # is wrong are quarantined, never served at the offsets their field names; every other record is served
    env = LogEnv(tmp_path / "data")
    try:
        end = build(env)
        env.managers[-1].close()
        active = env.segment_files("t")[-1]
        layout = batches(active)
        touched = set()
        for (pos, _, base), xor in zip(layout, flips):
            if xor:
                set_base(active, pos, xor)
                touched |= set(range(base, base + PER_BATCH))
        log_end, served, skipped = start_and_read(env)
        assert log_end == end
        assert all(v == value(o) for o, v in served)  # nothing served at the wrong offset
        assert {o for o, _ in served} == set(range(end)) - touched
        assert {o for first, last, _ in skipped for o in range(first, last + 1)} == touched
    finally:
        env.close_all()


@pytest.mark.parametrize("closed", [False, True], ids=["active", "closed-without-index"])
def test_after_a_crc_failure_the_next_batch_is_placed_by_the_batches_after_it(tmp_path, closed):
    # batch 0's records are damaged (lost); batch 1 is intact but its field names offsets far ahead: the fields of
    # batches 2 and 3 outvote it, so batch 1 is served at its own offsets and nothing after it shifts (a crash: the
    # segment is scanned at start)
    env = LogEnv(tmp_path / "data")
    try:
        end = build(env)
        env.crash(env.managers[-1])
        files = env.segment_files("t")
        path = files[0] if closed else files[-1]
        if closed:
            for side in path.parent.glob(path.stem + ".*index"):
                side.unlink()
        layout = batches(path)
        pos0, size0, base0 = layout[0]
        damage_records(path, pos0, size0)
        set_base(path, layout[1][0], 1 << 3)
        lost = set(range(base0, base0 + PER_BATCH))
        expected = [(o, value(o)) for o in range(end) if o not in lost]
        result = start_and_read(env)
        assert result == (end, expected, [(min(lost), max(lost), max(lost) + 1)])
        assert start_and_read(env) == result
    finally:
        env.close_all()


def test_the_last_batch_after_a_damaged_one_is_placed_by_the_damaged_batchs_whole_header(crashed):
    # the active segment's last two batches: the first fails its CRC but its header is whole (its offsets are
    # quarantined, as it may have been acknowledged); the last is intact and its field names an offset far ahead:
    # it follows the quarantined batch's offsets, and is served at its own
    env, end, active, layout = crashed
    (pos2, size2, base2), (pos3, _, base3) = layout[-2], layout[-1]
    damage_records(active, pos2, size2)
    set_base(active, pos3, 1 << 20)
    lost = set(range(base2, base2 + PER_BATCH))
    result = start_and_read(env)
    assert result == (end, [(o, value(o)) for o in range(end) if o not in lost], [(base2, base3 - 1, base3)])
    assert start_and_read(env) == result
