# A group's start in a partition is fixed when the group first reads it (issue 10 finding 5): a member's offset_fetch
# with a reset rule resolves and commits it, fenced like the member's commits, so when the member dies the next
# owner starts there, whatever state the dead member left each partition in (never committed, committed,
# mid-fetch), across a broker restart too; nothing produced while a partition was orphaned is skipped.
from __future__ import annotations

import pytest
import trio

from millpond.broker.wire import errors
from millpond.broker.wire.batch import decode_records, encode_batch

from serverkit import start_harness

SESSION_MS = 3000


def batch(*values: bytes) -> bytes:
    return encode_batch([(1_700_000_000_000, None, v, None) for v in values])


async def produce(c, partition: int, *values: bytes) -> None:
    await c.ok("produce", {"topic": "t", "partition": partition, "batch": batch(*values)})


async def member(c, group: str = "g") -> dict:
    answer = await c.ok("group_join", {"group": group, "topics": ["t"], "session_timeout_ms": SESSION_MS})
    for _ in range(10):
        if answer["state"] == "stable":
            return answer
        answer = await c.ok("group_heartbeat", {"group": group, "member_id": answer["member_id"],
                                                "member_epoch": answer["member_epoch"], "owned": answer["assignment"]})
    raise AssertionError(answer)


async def starts(c, m: dict, reset: str, group: str = "g") -> dict[int, int]:
    body = await c.ok("offset_fetch", {"group": group, "partitions": m["assignment"], "reset": reset,
                                       "member_id": m["member_id"], "member_epoch": m["member_epoch"]})
    return {p: off for _, p, off, _ in body["offsets"]}


async def values_from(c, partition: int, offset: int) -> list[bytes]:
    answer = await c.ok("fetch", {"partitions": [["t", partition, offset]], "max_bytes": 1 << 20, "max_wait_ms": 0})
    [[_, _, code, _, _, data, *_]] = answer["partitions"]
    assert code == 0
    return [r.value for r in decode_records(data, "t", partition) if r.offset >= offset]


@pytest.mark.parametrize("reset", ["latest", "earliest"])
@pytest.mark.parametrize("restart", [False, True], ids=["same-broker", "restarted"])
async def test_the_next_owner_starts_where_the_group_first_read_each_partition(nursery, tmp_path, autojump_clock,
                                                                             reset, restart):
    h = await start_harness(nursery, tmp_path / "d")
    c = await h.connect()
    await c.ok("create_topic", {"name": "t", "partitions": 3})
    for p in range(3):
        await produce(c, p, b"old-%d-0" % p, b"old-%d-1" % p)
    a = await member(c)
    assert sorted(p for _, p in a["assignment"]) == [0, 1, 2]
    first = 2 if reset == "latest" else 0
    assert await starts(c, a, reset) == {0: first, 1: first, 2: first}
    for p in range(3):
        await produce(c, p, b"a-%d" % p)
    # the dead member's partitions: 0 never committed by it, 1 committed past its first record, 2 read, uncommitted
    await c.ok("offset_commit", {"group": "g", "member_id": a["member_id"], "member_epoch": a["member_epoch"],
                                 "offsets": [["t", 1, first + 1]]})
    values = {p: [b"old-%d-0" % p, b"old-%d-1" % p, b"a-%d" % p] for p in range(3)}
    assert await values_from(c, 2, first) == values[2][first:]  # mid-fetch: read, never committed
    await trio.sleep(SESSION_MS / 1000 + 1)  # a goes silent: the timer expires it; its partitions are orphaned
    for p in range(3):
        await produce(c, p, b"orphan-%d" % p)
    if restart:
        await h.broker.shutdown()
        h = await start_harness(nursery, tmp_path / "d")
        c = await h.connect()
    b = await member(c)
    assert sorted(p for _, p in b["assignment"]) == [0, 1, 2]
    got = await starts(c, b, reset)
    assert got == {0: first, 1: first + 1, 2: first}
    for p in range(3):  # what the new owner reads: everything from the group's start, the orphaned record too
        assert await values_from(c, p, got[p]) == [*values[p], b"orphan-%d" % p][got[p]:]
    # b's own fetch again changes nothing: committed starts are never resolved again
    assert await starts(c, b, "latest") == got
    await h.broker.shutdown()


async def test_a_partition_committed_before_is_never_reset(harness):
    c = await harness.connect()
    await c.ok("create_topic", {"name": "t"})
    await produce(c, 0, b"x", b"y", b"z")
    a = await member(c)
    await c.ok("offset_commit", {"group": "g", "member_id": a["member_id"], "member_epoch": a["member_epoch"],
                                 "offsets": [["t", 0, 1]]})
    assert await starts(c, a, "latest") == {0: 1}
    assert await starts(c, a, "earliest") == {0: 1}


async def test_a_fetch_with_reset_is_fenced_and_refusals_commit_nothing(harness):
    c = await harness.connect()
    await c.ok("create_topic", {"name": "t", "partitions": 2})
    await produce(c, 0, b"x")
    a = await member(c)
    fetch = {"group": "g", "partitions": [["t", 0]], "reset": "latest", "member_id": a["member_id"],
             "member_epoch": a["member_epoch"]}
    for change, code in (({"member_epoch": a["member_epoch"] + 7}, errors.StaleMemberEpochError.code),
                         ({"member_id": "nobody"}, errors.UnknownMemberIdError.code),
                         ({"partitions": [["t", 5]]}, errors.UnknownTopicOrPartitionError.code),
                         ({"reset": "middle"}, errors.InvalidRequestError.code),
                         ({"reset": 5}, errors.InvalidRequestError.code),
                         ({"partitions": None}, errors.InvalidRequestError.code),
                         ({"member_id": None}, errors.InvalidRequestError.code)):
        got, answer = await c.call("offset_fetch", {**fetch, **change})
        assert got == code, (change, answer)
    other = await harness.connect()
    code, _ = await other.call("offset_fetch", {**fetch, "group": "h"})  # a group a is no member of
    assert code == errors.UnknownMemberIdError.code
    plain = await c.ok("offset_fetch", {"group": "g", "partitions": [["t", 0], ["t", 1]]})
    assert plain["offsets"] == [["t", 0, -1, ""], ["t", 1, -1, ""]]  # nothing was committed by a refusal
