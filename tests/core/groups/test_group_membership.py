# The coordinator's membership state machine with literal times: joins, incremental hand-offs, leaves, expiry,
# static members, topic growth, and refused moves that change nothing.
from __future__ import annotations

import pytest
from groupkit import Harness, snapshot, tp

from millpond.broker.core.groups import TRANSITIONS, GroupState, MemberState, Op
from millpond.broker.wire.errors import (
    FencedInstanceIdError,
    FencedMemberEpochError,
    GroupMaxSizeReachedError,
    InvalidGroupIdError,
    InvalidRequestError,
    InvalidSessionTimeoutError,
    UnknownGroupError,
    UnknownMemberIdError,
    UnsupportedAssignorError,
)

T6 = [tp("t", p) for p in range(6)]


def test_every_state_and_operation_has_a_verdict():
    assert set(TRANSITIONS) == {(s, op) for s in GroupState for op in Op}


def test_first_member_gets_everything_at_once():
    h = Harness({"t": 6})
    a = h.join("g", ["t"], now=0.0, client_id="app", host="10.0.0.1")
    assert (a.member_id, a.member_epoch, a.assignment, a.state) == ("m1", 1, tuple(T6), MemberState.STABLE)
    d = h.coord.describe("g")
    assert d.state is GroupState.STABLE and d.group_epoch == 1
    assert (d.members[0].client_id, d.members[0].host) == ("app", "10.0.0.1")


def test_second_member_gets_partitions_only_after_the_first_revokes():
    h = Harness({"t": 6})
    h.join("g", ["t"], now=0.0)
    b = h.join("g", ["t"], now=1.0)
    assert b.assignment == () and b.state is MemberState.UNRELEASED_PARTITIONS and b.member_epoch == 2
    assert h.coord.state("g") is GroupState.RECONCILING
    # m1 learns at its heartbeat: it keeps 3, must revoke 3, and stays at epoch 1 until it confirms
    a = h.beat("g", "m1", now=2.0)
    assert a.state is MemberState.UNREVOKED_PARTITIONS and a.member_epoch == 1 and len(a.assignment) == 3
    revoked = set(T6) - set(a.assignment)
    # m2 still gets nothing: m1 has not confirmed
    assert h.beat("g", "m2", now=2.1).assignment == ()
    # m1 confirms (its heartbeat no longer lists them) and reaches epoch 2
    a = h.beat("g", "m1", now=2.2)
    assert a.state is MemberState.STABLE and a.member_epoch == 2
    b = h.beat("g", "m2", now=2.3)
    assert set(b.assignment) == revoked and b.state is MemberState.STABLE
    assert h.coord.state("g") is GroupState.STABLE


def test_a_member_still_listing_revoked_partitions_keeps_them():
    h = Harness({"t": 2})
    h.join("g", ["t"], now=0.0)
    h.join("g", ["t"], now=0.0)
    a = h.coord.heartbeat("g", "m1", 1, [("t", 0), ("t", 1)], now=1.0)
    assert len(a.assignment) == 1
    again = h.coord.heartbeat("g", "m1", 1, [("t", 0), ("t", 1)], now=2.0)  # still consuming both
    assert again.state is MemberState.UNREVOKED_PARTITIONS
    assert h.beat("g", "m2", now=2.0).assignment == ()


def test_clean_leave_hands_partitions_over_at_once():
    h = Harness({"t": 4})
    h.join("g", ["t"], now=0.0)
    h.join("g", ["t"], now=0.0)
    h.settle("g", now=1.0)
    epoch = h.epoch("g")
    h.coord.leave("g", "m1", now=2.0)
    assert h.epoch("g") == epoch + 1
    assert set(h.beat("g", "m2", now=2.1).assignment) == {tp("t", p) for p in range(4)}
    h.coord.leave("g", "m2", now=3.0)
    assert h.coord.state("g") is GroupState.DEAD  # no members and no offsets
    with pytest.raises(UnknownMemberIdError):
        h.coord.heartbeat("g", "m2", epoch + 1, [], now=3.1)


def test_silent_member_is_expired_exactly_once_with_one_rebalance():
    h = Harness({"t": 6}, session_timeout_s=10.0)
    for _ in range(3):
        h.join("g", ["t"], now=0.0)
    h.settle("g", now=0.0)
    epoch = h.epoch("g")
    for now in (3.0, 6.0, 9.0):  # m1 and m2 heartbeat, m3 is silent from 0.0
        h.beat("g", "m1", now)
        h.beat("g", "m2", now)
    assert h.coord.next_deadline() == 10.0
    assert h.coord.expire(9.99) == []
    assert h.coord.expire(10.0) == [("g", "m3")]
    assert h.epoch("g") == epoch + 1
    assert h.coord.expire(10.5) == [] and h.coord.expire(12.0) == []
    assert h.epoch("g") == epoch + 1  # no storm
    settled = h.settle("g", now=10.5)
    assert sorted(p for a in settled.values() for p in a) == T6 and h.epoch("g") == epoch + 1
    with pytest.raises(UnknownMemberIdError):
        h.beat("g", "m3", now=11.0)


def test_two_members_expiring_together_cost_one_rebalance():
    h = Harness({"t": 6})
    for _ in range(3):
        h.join("g", ["t"], now=0.0)
    h.settle("g", now=0.0)
    epoch = h.epoch("g")
    h.beat("g", "m1", now=5.0)
    assert sorted(h.coord.expire(11.0)) == [("g", "m2"), ("g", "m3")]
    assert h.epoch("g") == epoch + 1
    assert set(h.beat("g", "m1", now=11.0).assignment) == set(T6)


def test_heartbeats_keep_a_member_alive_through_a_long_rebalance():
    h = Harness({"t": 4}, session_timeout_s=10.0, rebalance_timeout_s=300.0)
    h.join("g", ["t"], now=0.0)
    h.join("g", ["t"], now=0.0)
    slow = h.coord.heartbeat("g", "m1", 1, [("t", p) for p in range(4)], now=1.0)  # told to revoke 2
    assert slow.state is MemberState.UNREVOKED_PARTITIONS
    # m1 takes minutes to finish its revoke callback, heartbeating meanwhile; m2 heartbeats waiting for partitions
    for now in range(4, 240, 3):
        h.coord.heartbeat("g", "m1", 1, [("t", p) for p in range(4)], now=float(now))
        h.beat("g", "m2", now=float(now))
        assert h.coord.expire(float(now)) == []
    a = h.coord.heartbeat("g", "m1", 1, list(slow.assignment), now=240.0)
    assert a.state is MemberState.STABLE
    assert len(h.beat("g", "m2", now=240.1).assignment) == 2


def test_a_revoke_not_confirmed_within_the_rebalance_timeout_expires_the_member():
    h = Harness({"t": 4}, rebalance_timeout_s=60.0)
    h.join("g", ["t"], now=0.0)
    h.join("g", ["t"], now=0.0)
    held = [("t", p) for p in range(4)]
    h.coord.heartbeat("g", "m1", 1, held, now=1.0)
    for now in range(4, 61, 3):
        h.coord.heartbeat("g", "m1", 1, held, now=float(now))
        h.beat("g", "m2", now=float(now))
    assert h.coord.next_deadline() == 61.0
    assert h.coord.expire(61.0) == [("g", "m1")]
    assert len(h.beat("g", "m2", now=61.0).assignment) == 4


def test_static_member_restart_within_session_timeout_causes_no_rebalance():
    h = Harness({"t": 6}, session_timeout_s=10.0)
    h.join("g", ["t"], now=0.0, group_instance_id="worker-a")
    h.join("g", ["t"], now=0.0, group_instance_id="worker-b")
    before = h.settle("g", now=0.0)
    epoch = h.epoch("g")
    # worker-a's process is killed at 2.0 and restarts at 7.0 (new member id, same instance id)
    h.beat("g", "m2", now=5.0)
    back = h.join("g", ["t"], now=7.0, group_instance_id="worker-a")
    assert back.member_id == "m3" and back.assignment == before["m1"] and back.member_epoch == epoch
    assert back.state is MemberState.STABLE and h.epoch("g") == epoch
    assert h.coord.state("g") is GroupState.STABLE
    assert h.coord.expire(12.0) == [] and h.epoch("g") == epoch  # m1's session (to 10.0) no longer counts
    with pytest.raises(FencedInstanceIdError):
        h.coord.heartbeat("g", "m1", epoch, [], now=8.0)


def test_static_member_temporary_leave_holds_partitions_then_expires():
    h = Harness({"t": 4}, session_timeout_s=10.0)
    h.join("g", ["t"], now=0.0, group_instance_id="a")
    h.join("g", ["t"], now=0.0, group_instance_id="b")
    before = h.settle("g", now=0.0)
    epoch = h.epoch("g")
    h.coord.leave("g", "m1", now=1.0, temporary=True)
    assert h.epoch("g") == epoch and h.beat("g", "m2", now=2.0).assignment == before["m2"]
    back = h.join("g", ["t"], now=9.0, group_instance_id="a")
    assert back.assignment == before["m1"] and h.epoch("g") == epoch
    h.coord.leave("g", back.member_id, now=10.0, temporary=True)
    h.beat("g", "m2", now=15.0)
    assert h.coord.expire(20.0) == [("g", back.member_id)] and h.epoch("g") == epoch + 1
    assert len(h.beat("g", "m2", now=20.0).assignment) == 4


def test_rejoin_with_own_member_id_starts_over_without_rebalance():
    h = Harness({"t": 2})
    a = h.join("g", ["t"], now=0.0)
    again = h.join("g", ["t"], now=1.0, member_id=a.member_id)
    assert again.member_id == a.member_id and set(again.assignment) == {tp("t", 0), tp("t", 1)}
    assert h.epoch("g") == 1


def test_adding_partitions_hands_out_the_new_ones():
    h = Harness({"t": 2})
    h.join("g", ["t"], now=0.0)
    h.join("g", ["t"], now=0.0)
    before = h.settle("g", now=0.0)
    h.topics["t"] = 4
    assert h.coord.topics_changed() == ["g"]
    assert h.coord.topics_changed() == []
    after = h.settle("g", now=1.0)
    assert sorted(p for a in after.values() for p in a) == [tp("t", p) for p in range(4)]
    assert all(set(before[m]) <= set(after[m]) for m in before)


def test_subscribing_before_the_topic_exists():
    h = Harness({})
    a = h.join("g", ["later"], now=0.0)
    assert a.assignment == ()
    h.topics["later"] = 2
    h.coord.topics_changed()
    assert len(h.beat("g", "m1", now=1.0).assignment) == 2


def test_subscription_change_by_heartbeat():
    h = Harness({"a": 1, "b": 1})
    h.join("g", ["a"], now=0.0)
    out = h.beat("g", "m1", now=1.0, topics=["a", "b"])
    assert set(out.assignment) == {tp("a", 0), tp("b", 0)}


def test_lost_heartbeat_answer_previous_epoch_is_accepted():
    h = Harness({"t": 2})
    h.join("g", ["t"], now=0.0)
    h.join("g", ["t"], now=0.0)
    h.settle("g", now=0.0)
    h.coord.heartbeat("g", "m1", 2, None, now=1.0)
    h.join("g", ["t"], now=2.0)  # epoch 3
    h.settle("g", now=3.0)
    m1 = h.told["m1"]
    h.coord.heartbeat("g", "m1", m1.member_epoch - 1, list(m1.assignment), now=4.0)  # an answer was lost
    with pytest.raises(FencedMemberEpochError):
        h.coord.heartbeat("g", "m1", m1.member_epoch + 5, list(m1.assignment), now=4.0)


@pytest.mark.parametrize("call, error", [
    (lambda c: c.heartbeat("g", "nobody", 1, [], now=5.0), UnknownMemberIdError),
    (lambda c: c.heartbeat("g", "m1", 99, [], now=5.0), FencedMemberEpochError),
    (lambda c: c.heartbeat("g", "m1", 0, [], now=5.0), FencedMemberEpochError),
    (lambda c: c.heartbeat("g", "m1", 1, [("t", "x")], now=5.0), InvalidRequestError),
    (lambda c: c.heartbeat("g", "m1", 1, None, now=5.0, topics=[3]), InvalidRequestError),
    (lambda c: c.heartbeat("nope", "m1", 2, [], now=5.0), UnknownMemberIdError),
    (lambda c: c.heartbeat("bad id", "m1", 2, [], now=5.0), InvalidGroupIdError),
    (lambda c: c.join("g", ["t"], now=5.0, session_timeout_s=0.01), InvalidSessionTimeoutError),
    (lambda c: c.join("g", ["t"], now=5.0, rebalance_timeout_s=-1), InvalidSessionTimeoutError),
    (lambda c: c.join("g", ["t"], now=5.0, assignor="range"), UnsupportedAssignorError),
    (lambda c: c.join("g", ["t"], now=5.0, assignor="nonesuch"), UnsupportedAssignorError),
    (lambda c: c.join("g", "t", now=5.0), InvalidRequestError),
    (lambda c: c.join("g", ["t"], now=5.0, member_id=""), InvalidRequestError),
    (lambda c: c.join("g", ["t"], now=5.0, group_instance_id=""), InvalidRequestError),
    (lambda c: c.join("g", ["t"], now=5.0), GroupMaxSizeReachedError),
    (lambda c: c.leave("g", "nobody", now=5.0), UnknownMemberIdError),
    (lambda c: c.leave("g", "m1", now=5.0, temporary=True), InvalidRequestError),
    (lambda c: c.describe("nope"), UnknownGroupError),
    (lambda c: c.delete_group("nope", now_ms=1), UnknownGroupError),
])
def test_refused_moves_raise_and_change_nothing(call, error):
    h = Harness({"t": 4}, members_per_group_max=2)
    h.join("g", ["t"], now=0.0)
    h.join("g", ["t"], now=1.0)
    h.beat("g", "m1", now=2.0)
    before = snapshot(h.coord)
    with pytest.raises(error):
        call(h.coord)
    assert snapshot(h.coord) == before


def test_unreported_owned_partitions_never_confirm_a_revoke():
    h = Harness({"t": 2})
    h.join("g", ["t"], now=0.0)
    h.join("g", ["t"], now=0.0)
    for now in (1.0, 2.0, 3.0):
        assert h.coord.heartbeat("g", "m1", 1, None, now).state is MemberState.UNREVOKED_PARTITIONS
    assert h.beat("g", "m2", now=3.0).assignment == ()


def test_static_restart_while_revoking_releases_the_revoked_partitions():
    h = Harness({"t": 4})
    h.join("g", ["t"], now=0.0, group_instance_id="a")
    h.join("g", ["t"], now=0.0)
    told = h.coord.heartbeat("g", "m1", 1, [("t", p) for p in range(4)], now=1.0)  # revoking 2
    back = h.join("g", ["t"], now=2.0, group_instance_id="a")  # the restarted process owns nothing
    assert back.assignment == told.assignment and back.state is MemberState.STABLE
    assert len(h.beat("g", "m2", now=2.1).assignment) == 2
    assert h.coord.state("g") is GroupState.STABLE
