# Consumer-group members and group admin of the async client under Trio, against the in-process broker over
# loopback TCP, in virtual time (autojump_clock): session timeouts and max_poll_interval_s cost no real time.
from __future__ import annotations

import pytest
import trio

from millpond.client.errors import (
    GroupNotEmptyError,
    NotPartitionOwnerError,
    OffsetOutOfRangeError,
    UnknownGroupError,
)
from millpond.client.types import GroupDescription

from clientkit import drain

T = "orders"


async def fill(client, topic: str, partitions: int, per_partition: int) -> None:
    await client.create_topic(topic, partitions=partitions)
    async with client.producer() as p:
        for part in range(partitions):
            for i in range(per_partition):
                p.send(topic, b"%d-%d" % (part, i), partition=part)


async def settled(client, group: str, members: int, partitions: int, timeout_s: float = 30) -> GroupDescription:
    """Wait (virtual time) until the group is stable with ``members`` members owning ``partitions`` partitions."""
    with trio.fail_after(timeout_s):
        while True:
            try:
                d = await client.describe_group(group)
            except UnknownGroupError:  # nobody has joined yet
                await trio.sleep(0.05)
                continue
            if d.settled and len(d.members) == members and len(d.owners()) == partitions:
                return d
            await trio.sleep(0.05)


async def owns(cons, n: int, timeout_s: float = 30) -> frozenset:
    """Wait (virtual time) until the consumer reads ``n`` partitions (it fetches their offsets after the answer)."""
    with trio.fail_after(timeout_s):
        while len(cons.assignment()) != n:
            await trio.sleep(0.01)
    return cons.assignment()


async def take(cons, n: int) -> list:
    """The next ``n`` records, within 30 s of virtual time."""
    return await drain(cons, n, timeout_s=30)


async def test_three_members_on_six_partitions_own_two_each_and_read_only_those(client, autojump_clock):
    await fill(client, T, 6, 10)
    assigned: dict[int, list] = {0: [], 1: [], 2: []}
    async with client.consumer(T, group="g", auto_offset_reset="earliest", on_assigned=assigned[0].append) as a, \
            client.consumer(T, group="g", auto_offset_reset="earliest", on_assigned=assigned[1].append) as b, \
            client.consumer(T, group="g", auto_offset_reset="earliest", on_assigned=assigned[2].append) as c:
        d = await settled(client, "g", 3, 6)
        owned = [await owns(cons, 2) for cons in (a, b, c)]
        assert set().union(*owned) == {(T, p) for p in range(6)}
        assert sorted(sorted(m.assignment) for m in d.members) == sorted(sorted(o) for o in owned)
        assert all(m.client_id == "test" and m.host == "127.0.0.1" and m.member_epoch == d.group_epoch
                   for m in d.members)
        for cons in (a, b, c):
            # what each reads is exactly its partitions, from the start of each (no commits yet)
            got = await take(cons, 20)
            assert {(r.topic, r.partition) for r in got} == set(cons.assignment())
        assert all(assigned[i] and frozenset().union(*assigned[i]) >= owned[i] for i in range(3))
    d = await client.describe_group("g")
    assert d.state == "empty" and d.members == ()
    assert [(o.partition, o.committed_offset, o.end_offset, o.lag) for o in d.offsets] == \
        [(p, 10, 10, 0) for p in range(6)]  # leaving the block committed what was read


async def test_a_joining_member_starts_where_the_revoker_committed_with_no_duplicates(client, autojump_clock):
    await fill(client, T, 4, 50)
    revoked: list = []
    async with client.consumer(T, group="g", auto_offset_reset="earliest", on_revoked=revoked.append) as a:
        first = await take(a, 120)
        await a.getmany(max_records=0, timeout_s=0)  # the pull that says "those 120 are processed"
        async with client.consumer(T, group="g", auto_offset_reset="earliest") as b:
            d = await settled(client, "g", 2, 4)
            moved = frozenset(b.assignment())
            assert len(moved) == 2 and revoked == [moved] and d.group_epoch == 2
            done_moved = sum(1 for r in first if (r.topic, r.partition) in moved)
            rest_a = await take(a, 100 - (120 - done_moved))
            rest_b = await take(b, 100 - done_moved)
            seen = [(r.partition, r.offset) for r in first + rest_a + rest_b]
            assert sorted(seen) == [(p, o) for p in range(4) for o in range(50)]  # each exactly once
            assert await a.getmany(timeout_s=1) == [] and await b.getmany(timeout_s=1) == []


async def test_commit_and_committed_offsets_survive_members(client, autojump_clock):
    await fill(client, T, 1, 30)
    async with client.consumer(T, group="g", auto_offset_reset="earliest", enable_auto_commit=False) as a:
        got = await take(a, 12)
        assert await a.position(T, 0) == 12
        await a.commit()
        await a.commit({(T, 0): 10})
    d = await client.describe_group("g")
    assert [(o.committed_offset, o.lag) for o in d.offsets] == [(10, 20)]
    async with client.consumer(T, group="g", auto_offset_reset="latest") as b:
        again = await take(b, 5)
    assert [r.offset for r in got][-2:] == [10, 11] and [r.offset for r in again] == [10, 11, 12, 13, 14]


async def test_auto_offset_reset_error_and_a_committed_offset_out_of_range(client, autojump_clock):
    await fill(client, T, 1, 5)
    async with client.consumer(T, group="g", auto_offset_reset="error", enable_auto_commit=False) as a:
        with pytest.raises(OffsetOutOfRangeError, match="no committed offset for orders/0"):
            await a.getmany(timeout_s=5)
        a.seek(T, 0, 3)
        assert [r.offset for r in await take(a, 2)] == [3, 4]
        await a.commit({(T, 0): 1_000})  # past the end: as if retention had passed it, the reset rule applies
    async with client.consumer(T, group="g", auto_offset_reset="earliest", enable_auto_commit=False) as b:
        assert [r.offset for r in await take(b, 5)] == [0, 1, 2, 3, 4]
        await b.commit({(T, 0): 1_000})
    async with client.consumer(T, group="g", auto_offset_reset="error") as c:
        with pytest.raises(OffsetOutOfRangeError, match="offset 1000 is outside"):
            await c.getmany(timeout_s=5)


async def test_a_zombie_cannot_commit_a_partition_that_moved(client, autojump_clock):
    await fill(client, T, 2, 5)
    async with client.consumer(T, group="g", auto_offset_reset="earliest") as a:
        await settled(client, "g", 1, 2)
        async with client.consumer(T, group="g", auto_offset_reset="earliest", enable_auto_commit=False) as b:
            await settled(client, "g", 2, 2)
            await owns(b, 1)
            (theirs,) = b.assignment()
            with pytest.raises(NotPartitionOwnerError):
                await a.commit({theirs: 4})
            await b.commit({theirs: 2})
    d = await client.describe_group("g")
    assert {(o.partition, o.committed_offset) for o in d.offsets if o.partition == theirs[1]} == {(theirs[1], 2)}


async def test_a_member_that_stops_pulling_leaves_and_rejoins_at_its_next_pull(client, autojump_clock):
    await fill(client, T, 2, 5)
    revoked: list = []
    async with client.consumer(T, group="g", auto_offset_reset="earliest", max_poll_interval_s=5.0,
                               on_revoked=revoked.append) as slow, \
            client.consumer(T, group="g", auto_offset_reset="earliest", max_poll_interval_s=5.0) as busy:
        await settled(client, "g", 2, 2)
        mine = await owns(slow, 1)
        await take(slow, 5)
        revoked.clear()  # slow joined first and gave one partition to busy already

        async def keep_pulling() -> None:
            while True:
                await busy.getmany(timeout_s=0.5)

        async with trio.open_nursery() as n:  # `busy` keeps pulling; `slow` does not, for 6 s (virtual)
            n.start_soon(keep_pulling)
            await trio.sleep(6.0)
            assert revoked == [mine] and slow.assignment() == frozenset()
            d = await settled(client, "g", 1, 2)
            assert set(d.owners()) == {(T, 0), (T, 1)}
            await slow.getmany(timeout_s=0)  # the next pull rejoins
            await settled(client, "g", 2, 2)
            n.cancel_scope.cancel()


async def test_added_partitions_are_handed_out(client, autojump_clock):
    await fill(client, T, 2, 1)
    async with client.consumer(T, group="g", auto_offset_reset="earliest") as a, \
            client.consumer(T, group="g", auto_offset_reset="earliest") as b:
        await settled(client, "g", 2, 2)
        assert await client.add_partitions(T, 4) == 4
        await settled(client, "g", 2, 4)
        assert len(await owns(a, 2)) == len(await owns(b, 2)) == 2


async def test_a_static_member_leaves_temporarily_and_gets_its_partitions_back(client, autojump_clock):
    await fill(client, T, 2, 1)
    async with client.consumer(T, group="g", group_instance_id="host-1", session_timeout_s=30) as a:
        await settled(client, "g", 1, 2)
        first = (await client.describe_group("g")).group_epoch
    d = await client.describe_group("g")
    assert [(m.state, m.group_instance_id, len(m.assignment)) for m in d.members] == [("left_temporarily", "host-1", 2)]
    async with client.consumer(T, group="g", group_instance_id="host-1", session_timeout_s=30) as a:
        d = await settled(client, "g", 1, 2)
        assert d.group_epoch == first and len(await owns(a, 2)) == 2  # back with no rebalance (KIP-345)


async def test_group_admin_list_describe_reset_delete(client, autojump_clock):
    await fill(client, T, 2, 10)
    assert await client.list_groups() == []
    async with client.consumer(T, group="g", auto_offset_reset="earliest") as a:
        await take(a, 20)
        assert [(g.group, g.state, g.members) for g in await client.list_groups()] == [("g", "stable", 1)]
        with pytest.raises(GroupNotEmptyError):
            await client.reset_offsets("g", T, "earliest")
        with pytest.raises(GroupNotEmptyError):
            await client.delete_group("g")
    assert await client.reset_offsets("g", T, "earliest") == {(T, 0): 0, (T, 1): 0}
    assert await client.reset_offsets("g", T, "latest", partitions=[1]) == {(T, 1): 10}
    assert await client.reset_offsets("g", T, 4) == {(T, 0): 4, (T, 1): 4}
    assert await client.reset_offsets("g", T, timestamp_ms=0) == {(T, 0): 0, (T, 1): 0}
    with pytest.raises(ValueError):
        await client.reset_offsets("g", T, "earliest", timestamp_ms=0)
    d = await client.describe_group("g")
    assert (d.state, d.lag, [o.end_offset for o in d.offsets]) == ("empty", 20, [10, 10])
    await client.delete_group("g")
    assert await client.list_groups() == []
    with pytest.raises(UnknownGroupError):
        await client.describe_group("g")
