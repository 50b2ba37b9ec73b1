# The client's consumer-group member state machine (client._group.MemberCore) with literal times: no sockets,
# no clock. Answers are the wire bodies of docs/protocol.md.
from __future__ import annotations

import pytest

from millpond.broker.wire.errors import (
    ConnectionClosedError,
    FencedMemberEpochError,
    InvalidSessionTimeoutError,
    UnknownMemberIdError,
)
from millpond.client._group import Action, MemberCore, MemberState, Step


def answer(epoch: int, assignment: list[tuple[str, int]], interval_ms: int = 1000, member_id: str = "m1") -> dict:
    return {"member_id": member_id, "member_epoch": epoch, "assignment": [list(tp) for tp in assignment],
            "state": "stable", "heartbeat_interval_ms": interval_ms}


def core(now: float = 100.0, **kw) -> MemberCore:
    opts = dict(session_timeout_s=3.0, max_poll_interval_s=60.0, auto_commit_interval_s=5.0)
    opts.update(kw)
    return MemberCore("g", ["t", "a", "t"], now, **opts)


def joined(c: MemberCore, now: float, parts: list[tuple[str, int]], epoch: int = 1) -> None:
    assert c.due(now) is Action.JOIN
    step = c.answered(answer(epoch, parts), now)
    c.assigned(step.assign)


def test_join_body_carries_subscription_timeouts_and_optional_ids():
    c = core(group_instance_id="host-1", assignor="range")
    assert c.due(100.0) is Action.JOIN
    assert c.join_body() == {"group": "g", "topics": ["a", "t"], "session_timeout_ms": 3000,
                             "rebalance_timeout_ms": 60_000, "group_instance_id": "host-1", "assignor": "range"}
    assert "member_id" not in core().join_body()


def test_first_answer_assigns_then_heartbeats_at_the_broker_interval():
    c = core()
    step = c.answered(answer(1, [("t", 0), ("t", 1)], interval_ms=700), 100.0)
    assert step == Step(assign=frozenset({("t", 0), ("t", 1)}))
    c.assigned(step.assign)
    assert c.state is MemberState.MEMBER and c.member_id == "m1" and c.member_epoch == 1
    assert c.due(100.69) is None and c.wakeup_at() == pytest.approx(100.7)
    assert c.due(100.7) is Action.HEARTBEAT
    assert c.heartbeat_body() == {"group": "g", "member_id": "m1", "member_epoch": 1,
                                  "owned": [["t", 0], ["t", 1]]}


def test_a_shrunk_assignment_revokes_and_the_next_heartbeat_goes_at_once():
    c = core()
    joined(c, 100.0, [("t", 0), ("t", 1), ("t", 2)])
    step = c.answered(answer(1, [("t", 0)]), 101.0)
    assert step == Step(revoke=frozenset({("t", 1), ("t", 2)}))
    assert c.due(101.5) is None  # owned still lists them until the driver has revoked
    c.revoked(step.revoke, 101.5)
    assert c.due(101.5) is Action.HEARTBEAT
    assert c.heartbeat_body()["owned"] == [["t", 0]]
    step = c.answered(answer(2, [("t", 0), ("t", 3)]), 101.6)
    assert step == Step(assign=frozenset({("t", 3)})) and c.member_epoch == 2


@pytest.mark.parametrize("error", [FencedMemberEpochError("stale"), UnknownMemberIdError("gone")])
def test_fencing_loses_every_partition_and_rejoins_at_once_with_the_same_member_id(error):
    c = core()
    joined(c, 100.0, [("t", 0), ("t", 1)])
    step = c.failed(error, 101.0)
    assert step == Step(revoke=frozenset({("t", 0), ("t", 1)}), lost=True)
    c.revoked(step.revoke, 101.0)
    assert c.state is MemberState.UNJOINED and c.due(101.0) is Action.JOIN
    assert c.join_body()["member_id"] == "m1"


def test_an_unreachable_coordinator_keeps_partitions_until_the_session_lapses():
    c = core(retry_backoff_s=(0.1, 0.1))
    joined(c, 100.0, [("t", 0)])
    assert c.failed(ConnectionClosedError("down"), 101.0) == Step()  # 1 s of 3 s: keep reading
    assert c.state is MemberState.MEMBER and 101.05 <= c.next_heartbeat_at <= 101.1
    step = c.failed(ConnectionClosedError("down"), 103.0)  # no answer since 100.0: the broker expired us
    assert step == Step(revoke=frozenset({("t", 0)}), lost=True) and c.state is MemberState.UNJOINED
    assert 103.05 <= c.retry_at <= 103.1


def test_a_refusal_that_retrying_cannot_fix_closes_the_member_with_the_error():
    c = core()
    err = InvalidSessionTimeoutError("too short")
    assert c.failed(err, 100.0) == Step()
    assert c.state is MemberState.CLOSED and c.error is err and c.due(1e9) is None


def test_auto_commit_is_due_every_interval_only_while_owning_partitions():
    c = core()
    joined(c, 100.0, [])
    assert c.due(105.0) is Action.HEARTBEAT  # nothing owned: nothing to commit
    c.answered(answer(1, [("t", 0)]), 105.0)
    c.assigned([("t", 0)])
    assert c.due(105.0) is Action.COMMIT
    c.committed(105.0)
    assert c.due(109.9) is Action.HEARTBEAT and c.next_commit_at == 110.0
    off = core(auto_commit_interval_s=None)
    joined(off, 100.0, [("t", 0)])
    assert off.wakeup_at() == 101.0 and off.due(1000.0) is not Action.COMMIT


def test_max_poll_interval_leaves_then_rejoins_as_a_new_member_at_the_next_pull():
    c = core(max_poll_interval_s=10.0, auto_commit_interval_s=None)
    joined(c, 100.0, [("t", 0)])
    c.poll_started(100.0)
    assert c.due(200.0) is Action.HEARTBEAT  # a pull waiting for records is polling (KIP-62)
    c.poll_ended(200.0)
    c.answered(answer(1, [("t", 0)]), 209.0)
    assert c.due(209.9) is None and c.due(210.0) is Action.LEAVE
    body = c.leave_body()
    assert body == {"group": "g", "member_id": "m1", "temporary": False}
    step = c.left(210.0, poll_expired=True)
    assert step == Step(revoke=frozenset({("t", 0)}), lost=True)
    c.revoked(step.revoke, 210.0)
    assert c.state is MemberState.POLL_EXPIRED and c.due(10_000.0) is None
    c.poll_started(500.0)
    assert c.due(500.0) is Action.JOIN and "member_id" not in c.join_body()


def test_illegal_moves_raise_and_change_nothing():
    c = core()
    with pytest.raises(RuntimeError, match="cannot heartbeat in state unjoined"):
        c.heartbeat_body()
    with pytest.raises(RuntimeError, match="cannot commit"):
        c.commit_body({("t", 0): 5})
    joined(c, 100.0, [("t", 0)])
    with pytest.raises(RuntimeError, match="cannot join in state member"):
        c.join_body()
    assert c.state is MemberState.MEMBER and c.owned == {("t", 0)}
    assert c.commit_body({("t", 0): 5}) == {"group": "g", "member_id": "m1", "member_epoch": 1,
                                            "offsets": [["t", 0, 5]]}


def test_a_static_member_leaves_temporarily_and_answers_after_close_are_ignored():
    c = core(group_instance_id="i-1")
    joined(c, 100.0, [("t", 0)])
    assert c.leave_body()["temporary"] is True
    step = c.left(101.0, poll_expired=False)
    assert step.lost and c.state is MemberState.CLOSED
    assert c.answered(answer(2, [("t", 1)]), 101.1) == Step() and c.due(1e9) is None
