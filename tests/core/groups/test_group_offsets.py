# Committed offsets: zombie fencing in every group state, admin resets and deletes only when empty, describe with
# lag, and durability through the internal topic: replay on reopen, deleted groups stay deleted.
from __future__ import annotations

from pathlib import Path

import pytest
from groupkit import Harness, snapshot, tp

from millpond.broker.config import TopicDefaults
from millpond.broker.core.groups import OFFSETS_TOPIC, AtTimestamp, Committed, GroupState, OffsetStore, resolve_reset
from millpond.broker.core.log import LogManager
from millpond.broker.wire.batch import check_batch, encode_batch
from millpond.broker.wire.errors import (
    GroupNotEmptyError,
    InvalidRequestError,
    InvalidTopicNameError,
    NotPartitionOwnerError,
    OffsetMetadataTooLargeError,
    StaleMemberEpochError,
    UnknownMemberIdError,
    UnknownTopicOrPartitionError,
)

MS = 1_700_000_000_000  # a literal wall-clock time


def open_log(data_dir: Path, fsync_mode: str = "never") -> LogManager:
    log = LogManager(
        data_dir, defaults=TopicDefaults(), batch_bytes_max=1 << 20, partitions_max=64, fsync_mode=fsync_mode
    )
    log.open(MS)
    return log


def crash(log: LogManager) -> None:
    """Drop a LogManager as kill -9 would: nothing fsynced, no index files written."""
    log.abandon()


def reconciling_group() -> Harness:
    """m1 holds t/0..3 and is revoking two of them for m2 (which holds nothing yet): RECONCILING."""
    h = Harness({"t": 4})
    h.join("g", ["t"], now=0.0)
    h.join("g", ["t"], now=0.0)
    h.coord.heartbeat("g", "m1", 1, [("t", p) for p in range(4)], now=1.0)
    assert h.coord.state("g") is GroupState.RECONCILING
    return h


def stable_group() -> Harness:
    h = Harness({"t": 4})
    h.join("g", ["t"], now=0.0)
    h.join("g", ["t"], now=0.0)
    h.settle("g", now=1.0)
    assert h.coord.state("g") is GroupState.STABLE
    return h


def empty_group() -> Harness:
    h = Harness({"t": 4})
    h.coord.reset_offsets("g", {("t", 0): 5}, MS)
    assert h.coord.state("g") is GroupState.EMPTY
    return h


def dead_group() -> Harness:
    h = Harness({"t": 4})
    assert h.coord.state("g") is GroupState.DEAD
    return h


def expired_member_group() -> Harness:
    """m1 was expired (a zombie that keeps running); m2 owns everything."""
    h = stable_group()
    h.beat("g", "m2", now=9.0)
    assert h.coord.expire(11.0) == [("g", "m1")]
    h.settle("g", now=11.0)
    return h


@pytest.mark.parametrize("make", [dead_group, empty_group, reconciling_group, stable_group, expired_member_group])
def test_zombie_and_stale_commits_are_refused_in_every_group_state(make):
    h = make()
    before = snapshot(h.coord)
    dead = h.coord.state("g") is GroupState.DEAD
    members = {} if dead else {m.member_id: m for m in h.coord.describe("g").members}
    for mid in ("m1", "m2", "ghost"):
        m = members.get(mid)
        epoch = m.member_epoch if m else 1
        if m is None:
            with pytest.raises(UnknownMemberIdError):
                h.coord.commit("g", mid, epoch, {("t", 0): 1}, MS)
            continue
        held = set(m.assignment) | set(m.revoking)
        with pytest.raises(StaleMemberEpochError):
            h.coord.commit("g", mid, epoch - 1, {next(iter(held)) if held else ("t", 0): 1}, MS)
        not_held = [p for p in [tp("t", i) for i in range(4)] if p not in held]
        if not_held:
            with pytest.raises(NotPartitionOwnerError):
                h.coord.commit("g", mid, epoch, {not_held[0]: 1}, MS)
        if held and not_held:  # all or nothing: one bad partition refuses the whole commit
            with pytest.raises(NotPartitionOwnerError):
                h.coord.commit("g", mid, epoch, {next(iter(held)): 1, not_held[0]: 1}, MS)
    assert snapshot(h.coord) == before


def test_owner_commits_including_partitions_it_is_revoking():
    h = reconciling_group()
    m1 = {m.member_id: m for m in h.coord.describe("g").members}["m1"]
    assert len(m1.revoking) == 2
    offsets = {p: 10 + p.partition for p in m1.assignment + m1.revoking}
    h.coord.commit("g", "m1", m1.member_epoch, offsets, MS)
    assert {p: c.offset for p, c in h.coord.fetch_offsets("g").items()} == offsets
    # the new owner cannot commit them before the hand-off
    with pytest.raises(NotPartitionOwnerError):
        h.coord.commit("g", "m2", h.told["m2"].member_epoch, {m1.revoking[0]: 99}, MS)


def test_commit_metadata_and_validation():
    h = stable_group()
    a = h.told["m1"]
    h.coord.commit("g", "m1", a.member_epoch, {a.assignment[0]: (7, "note")}, MS + 5)
    assert h.coord.fetch_offsets("g", [a.assignment[0]]) == {a.assignment[0]: Committed(7, "note", MS + 5)}
    with pytest.raises(OffsetMetadataTooLargeError):
        h.coord.commit("g", "m1", a.member_epoch, {a.assignment[0]: (8, "x" * 5000)}, MS)
    with pytest.raises(InvalidRequestError):
        h.coord.commit("g", "m1", a.member_epoch, {a.assignment[0]: -3}, MS)
    with pytest.raises(InvalidRequestError):
        h.coord.commit("g", "m1", a.member_epoch, {}, MS)
    assert h.coord.fetch_offsets("g", [a.assignment[0]])[a.assignment[0]].offset == 7


def test_reset_and_delete_only_without_members():
    h = stable_group()
    before = snapshot(h.coord)
    members = len(h.coord._groups["g"].members)
    with pytest.raises(GroupNotEmptyError) as refused:
        h.coord.reset_offsets("g", {("t", 0): 0}, MS)
    # in the user's words, not the transition table's (admin_commit)
    assert refused.value.message.startswith(f"setting offsets without a member (reset-offsets) refused: consumer "
                                            f"group 'g' has {members} member(s); stop them first")
    with pytest.raises(GroupNotEmptyError, match="^GROUP_NOT_EMPTY: deleting the group refused: consumer group 'g'"):
        h.coord.delete_group("g", MS)
    assert snapshot(h.coord) == before
    h.coord.leave("g", "m1", now=2.0)
    h.coord.leave("g", "m2", now=2.0)
    with pytest.raises(UnknownTopicOrPartitionError):
        h.coord.reset_offsets("g", {("t", 9): 0}, MS)
    h.coord.reset_offsets("g", {("t", 0): 3}, MS)
    assert [(g.group_id, g.state, g.members) for g in h.coord.list_groups()] == [("g", GroupState.EMPTY, 0)]
    h.coord.delete_group("g", MS)
    assert h.coord.list_groups() == [] and h.coord.state("g") is GroupState.DEAD


def test_describe_reports_members_offsets_and_lag():
    h = stable_group()
    a = h.told["m1"]
    h.coord.commit("g", "m1", a.member_epoch, {a.assignment[0]: 40}, MS)
    d = h.coord.describe("g", end_offset=lambda topic, p: 100)
    assert d.state is GroupState.STABLE and d.assignor == "sticky" and len(d.members) == 2
    rows = {(r.topic, r.partition): r for r in d.offsets}
    assert len(rows) == 4
    r = rows[a.assignment[0]]
    assert (r.committed_offset, r.end_offset, r.lag) == (40, 100, 60)
    other = next(p for p in rows if p != a.assignment[0])
    assert (rows[other].committed_offset, rows[other].lag) == (-1, None)


def test_offsets_survive_a_crash_and_deleted_groups_stay_deleted(tmp_path: Path):
    log = open_log(tmp_path)
    store = OffsetStore(log)
    store.open(MS)
    h = Harness({"t": 4}, store=store)
    h.join("keep", ["t"], now=0.0)
    a = h.told["m1"]
    h.coord.commit("keep", "m1", a.member_epoch, {("t", 0): 5}, MS)
    h.coord.commit("keep", "m1", a.member_epoch, {("t", 0): (9, "m"), ("t", 1): 2}, MS + 1)
    h.coord.reset_offsets("gone", {("t", 0): 1}, MS)
    h.coord.delete_group("gone", MS + 2)
    h.coord.reset_offsets("back", {("t", 3): 4}, MS)
    h.coord.delete_group("back", MS + 3)
    h.coord.reset_offsets("back", {("t", 2): 6}, MS + 4)  # recreated after its delete
    crash(log)

    log2 = open_log(tmp_path)
    store2 = OffsetStore(log2)
    store2.open(MS + 10)
    assert store2.groups() == ["back", "keep"]
    assert store2.committed("keep") == {tp("t", 0): Committed(9, "m", MS + 1), tp("t", 1): Committed(2, "", MS + 1)}
    assert store2.committed("back") == {tp("t", 2): Committed(6, "", MS + 4)}
    h2 = Harness({"t": 4}, store=store2)
    assert [g.group_id for g in h2.coord.list_groups()] == ["back", "keep"]
    assert h2.coord.state("gone") is GroupState.DEAD
    crash(log2)


def test_offsets_topic_is_reserved_and_replay_skips_foreign_records(tmp_path: Path):
    log = open_log(tmp_path)
    with pytest.raises(InvalidTopicNameError):
        log.create_topic(OFFSETS_TOPIC, 1, None, MS)
    store = OffsetStore(log)
    store.open(MS)
    store.commit("g", {tp("t", 0): Committed(3)}, MS)
    junk = encode_batch([(MS, b"not msgpack \xc1", b"x", None), (MS, None, b"", None)])
    store.partition_log.append(junk, check_batch(junk, 1 << 20), MS)
    store.commit("g", {tp("t", 1): Committed(4)}, MS)
    log.close()
    log2 = open_log(tmp_path)
    store2 = OffsetStore(log2)
    store2.open(MS)
    assert {p: c.offset for p, c in store2.committed("g").items()} == {tp("t", 0): 3, tp("t", 1): 4}
    log2.close()


def test_commit_returns_the_offset_to_wait_for_under_fsync_always(tmp_path: Path):
    log = open_log(tmp_path, fsync_mode="always")
    store = OffsetStore(log)
    store.open(MS)
    end = store.commit("g", {tp("t", 0): Committed(1), tp("t", 1): Committed(1)}, MS)
    plog = store.partition_log
    assert end == 2 and plog.high_watermark < end and plog in log.dirty()
    plog.mark_durable(end)
    assert plog.high_watermark == end
    log.close()


def test_resolve_reset(tmp_path: Path):
    log = open_log(tmp_path)
    log.create_topic("t", 2, None, MS)
    for i in range(5):
        blob = encode_batch([(MS + 1000 * i, None, b"v", None)])
        log.partition("t", 0).append(blob, check_batch(blob, 1 << 20), MS)
    assert resolve_reset(log, "t", "earliest") == {tp("t", 0): 0, tp("t", 1): 0}
    assert resolve_reset(log, "t", "latest") == {tp("t", 0): 5, tp("t", 1): 0}
    assert resolve_reset(log, "t", AtTimestamp(MS + 2500), [0]) == {tp("t", 0): 3}
    assert resolve_reset(log, "t", AtTimestamp(MS + 99_000), [0]) == {tp("t", 0): 5}
    assert resolve_reset(log, "t", 99, [0]) == {tp("t", 0): 5}
    with pytest.raises(UnknownTopicOrPartitionError):
        resolve_reset(log, "nope", "earliest")
    with pytest.raises(InvalidRequestError):
        resolve_reset(log, "t", "sideways")
    log.close()


def test_a_static_member_that_left_temporarily_cannot_commit():
    h = Harness({"t": 2})
    a = h.join("g", ["t"], now=0.0, group_instance_id="i")
    h.coord.leave("g", a.member_id, now=1.0, temporary=True)
    with pytest.raises(UnknownMemberIdError):
        h.coord.commit("g", a.member_id, a.member_epoch, {a.assignment[0]: 1}, MS)
