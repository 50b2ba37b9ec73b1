# Commits and epoch changes (issue 10 findings 5 and 6), with the async client against the in-process broker in
# virtual time: a commit that crosses a heartbeat answer carrying a new epoch is sent again with that epoch while
# the member still holds its partitions, so the application never sees STALE_MEMBER_EPOCH for a partition it owns;
# a partition it no longer holds is still refused; and a member's first read of a partition commits the group's
# start there, so a member that dies before committing hands over that start, not a later end.
from __future__ import annotations

import pytest
import trio

from millpond.broker.wire.errors import (
    FencedMemberEpochError,
    StaleMemberEpochError,
    StorageError,
    UnknownTopicOrPartitionError,
)
from millpond.client._group import COMMIT_TRIES, Action, GroupMember, MemberCore, MemberState
from millpond.client.errors import NotPartitionOwnerError

from clientkit import drain

T = "orders"


class HeldHeartbeats:
    """Wraps a client's ``request``: while ``holding``, a heartbeat's answer (already applied by the broker) is held
    back from the member until ``release``; ``crossed`` is set when one is held."""

    def __init__(self, client) -> None:
        self.request = client.request
        self.holding = False
        self.crossed = trio.Event()
        self.release = trio.Event()

    async def __call__(self, api, body, **kw):
        answer = await self.request(api, body, **kw)
        if api == "group_heartbeat" and self.holding:
            self.crossed.set()
            await self.release.wait()
        return answer


async def owned(cons, n: int) -> None:
    with trio.fail_after(30):
        while len(cons.assignment()) != n:
            await trio.sleep(0.01)


async def committed(client, group: str) -> dict[int, int]:
    d = await client.describe_group(group)
    return {o.partition: o.committed_offset for o in d.offsets}


async def test_a_commit_crossing_a_new_epoch_is_retried_with_it(client, autojump_clock, monkeypatch):
    await client.create_topic(T, partitions=1)
    async with client.producer() as p:
        for i in range(10):
            p.send(T, b"%d" % i, partition=0)
    held = HeldHeartbeats(client)
    monkeypatch.setattr(client, "request", held)
    async with client.consumer(T, group="g", auto_offset_reset="earliest", enable_auto_commit=False) as a:
        await owned(a, 1)
        assert len(await drain(a, 5, timeout_s=30)) == 5
        epoch = a._member.core.member_epoch
        held.holding = True
        await client.add_partitions(T, 2)  # the group's epoch moves: a's next heartbeat answer carries it
        with trio.fail_after(30):
            await held.crossed.wait()
        assert a._member.core.member_epoch == epoch  # the answer is on its way
        await a.commit({(T, 0): 5})  # sent with the old epoch, refused as stale, sent again: never raised
        assert (await committed(client, "g"))[0] == 5
        held.holding = False
        held.release.set()
        await owned(a, 2)
        assert a._member.core.member_epoch > epoch
        await a.commit({(T, 0): 6, (T, 1): 0})
    assert await committed(client, "g") == {0: 6, 1: 0}


async def test_a_partition_gone_from_the_member_is_still_refused(client, autojump_clock):
    await client.create_topic(T, partitions=2)
    async with client.consumer(T, group="g", auto_offset_reset="earliest") as a:
        await owned(a, 2)
        async with client.consumer(T, group="g", auto_offset_reset="earliest", enable_auto_commit=False) as b:
            await owned(b, 1)
            await owned(a, 1)
            (theirs,) = b.assignment()
            with pytest.raises(NotPartitionOwnerError):
                await a.commit({theirs: 1})


class Refusing:
    """A client whose commits are always refused as stale, naming a newer epoch each time."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []

    async def request(self, api, body, **kw):
        self.bodies.append(body)
        raise StaleMemberEpochError("stale", member_epoch=body["member_epoch"] + 1)


def member_owning(parts, now: float = 0.0) -> MemberCore:
    core = MemberCore("g", ["t"], now)
    core.answered({"member_id": "m", "member_epoch": 3, "assignment": [list(tp) for tp in parts],
                   "heartbeat_interval_ms": 1000}, now)
    core.assigned(parts)
    return core


async def test_a_commit_is_retried_a_bounded_number_of_times_then_raised():
    core = member_owning([("t", 0)])
    fake = Refusing()
    member = GroupMember(fake, consumer=None, core=core, auto_offset_reset="earliest",  # type: ignore[arg-type]
                         on_assigned=None, on_revoked=None)
    with pytest.raises(StaleMemberEpochError):
        await member.commit({("t", 0): 1})
    assert [b["member_epoch"] for b in fake.bodies] == [3 + i for i in range(COMMIT_TRIES)]


@pytest.mark.parametrize("change", ["not-owned", "lost-since", "left", "owned"])
async def test_a_stale_commit_is_retried_only_for_partitions_still_held_by_the_same_membership(change):
    core = member_owning([("t", 0), ("t", 1)])
    fake = Refusing()
    member = GroupMember(fake, consumer=None, core=core, auto_offset_reset="earliest",  # type: ignore[arg-type]
                         on_assigned=None, on_revoked=None)
    losses = core.losses
    if change == "not-owned":
        core.revoked([("t", 1)], 1.0)
    elif change == "lost-since":
        core.failed(FencedMemberEpochError("fenced"), 1.0)  # every partition lost, then taken again
        core.answered({"member_id": "m", "member_epoch": 5, "assignment": [["t", 0], ["t", 1]],
                       "heartbeat_interval_ms": 1000}, 1.0)
        core.assigned([("t", 0), ("t", 1)])
    elif change == "left":
        core.left(1.0, poll_expired=True)
    assert core.may_retry_commit({("t", 0), ("t", 1)}, losses) is (change == "owned")
    assert core.may_retry_commit({("t", 0)}, losses) is (change in ("owned", "not-owned"))
    assert core.state is (MemberState.POLL_EXPIRED if change == "left" else MemberState.MEMBER)


class FailingFetch:
    """A client whose offset_fetch fails with ``error``."""

    def __init__(self, error) -> None:
        self.error = error
        self.bodies: list[dict] = []

    async def request(self, api, body, **kw):
        self.bodies.append(body)
        raise self.error


@pytest.mark.parametrize("error, taken_later", [
    (StorageError("cannot append to __millpond_offsets/0: No space left on device"), True),
    (StaleMemberEpochError("stale", member_epoch=9), True),
    (NotPartitionOwnerError("not yours"), True),
    (UnknownTopicOrPartitionError("gone"), False),
])
async def test_partitions_whose_start_cannot_be_fixed_are_not_taken_and_asked_for_again(error, taken_later):
    core = member_owning([], trio.current_time())
    member = GroupMember(FailingFetch(error), consumer=None, core=core,  # type: ignore[arg-type]
                         auto_offset_reset="latest", on_assigned=None, on_revoked=None)
    later = trio.current_time() + 100  # the answer's own next heartbeat would be far off
    step = core.answered({"member_id": "m", "member_epoch": 4, "assignment": [["t", 0]],
                          "heartbeat_interval_ms": 1000}, later)
    assert step.assign == frozenset({("t", 0)})
    if not taken_later:
        with pytest.raises(UnknownTopicOrPartitionError):
            await member._apply(step)
        return
    await member._apply(step)
    assert core.owned == frozenset() and core.due(trio.current_time()) is Action.HEARTBEAT  # at once, not later
    assert member._client.bodies == [{"group": "g", "partitions": [["t", 0]], "reset": "latest", "member_id": "m",
                                      "member_epoch": 4}]
