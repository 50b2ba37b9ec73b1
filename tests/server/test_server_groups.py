# Consumer groups through the server: the wire APIs, commits answered only once durable, the liveness timer
# expiring a silent member in virtual time, and topic growth handing out new partitions.
from __future__ import annotations

import pytest
import trio

from millpond.broker.wire import errors

from serverkit import start_harness


async def join(c, group="g", topics=("t",), **extra):
    return await c.ok("group_join", {"group": group, "topics": list(topics), **extra})


async def settle(c, answer, group="g"):
    """Heartbeat, reporting what we were told, until the member is stable; returns the last answer."""
    for _ in range(10):
        if answer["state"] == "stable":
            return answer
        answer = await c.ok("group_heartbeat", {"group": group, "member_id": answer["member_id"],
                                                "member_epoch": answer["member_epoch"], "owned": answer["assignment"]})
    raise AssertionError(f"member did not settle: {answer}")


async def test_two_members_split_the_partitions_and_commit(harness):
    c = await harness.connect()
    await c.ok("create_topic", {"name": "t", "partitions": 4})
    a = await settle(c, await join(c))
    assert sorted(map(tuple, a["assignment"])) == [("t", 0), ("t", 1), ("t", 2), ("t", 3)]
    b = await join(c)
    # a must give up two partitions before b gets them
    a = await c.ok("group_heartbeat", {"group": "g", "member_id": a["member_id"], "member_epoch": a["member_epoch"],
                                        "owned": a["assignment"]})
    assert len(a["assignment"]) == 2
    a = await settle(c, a)
    b = await settle(c, b)
    owned = sorted(map(tuple, a["assignment"] + b["assignment"]))
    assert owned == [("t", 0), ("t", 1), ("t", 2), ("t", 3)]
    tp = a["assignment"][0]
    await c.ok("offset_commit", {"group": "g", "member_id": a["member_id"], "member_epoch": a["member_epoch"],
                                 "offsets": [[tp[0], tp[1], 42, "meta"]]})
    got = await c.ok("offset_fetch", {"group": "g", "partitions": [tp, b["assignment"][0]]})
    assert got["offsets"] == [[tp[0], tp[1], 42, "meta"], [*b["assignment"][0], -1, ""]]
    # a zombie (b committing a's partition) is refused
    code, answer = await c.call("offset_commit", {"group": "g", "member_id": b["member_id"],
                                                  "member_epoch": b["member_epoch"], "offsets": [[tp[0], tp[1], 7]]})
    assert code == errors.NotPartitionOwnerError.code
    desc = await c.ok("describe_group", {"group": "g"})
    assert desc["state"] == "stable" and len(desc["members"]) == 2
    assert {o["partition"]: o["committed_offset"] for o in desc["offsets"]}[tp[1]] == 42


async def test_commit_is_answered_after_the_fsync_and_survives_restart(nursery, tmp_path):
    h = await start_harness(nursery, tmp_path / "d", fsync="always")
    c = await h.connect()
    await c.ok("create_topic", {"name": "t"})
    m = await settle(c, await join(c))
    before = h.broker.statistics().fsyncs
    await c.ok("offset_commit", {"group": "g", "member_id": m["member_id"], "member_epoch": m["member_epoch"],
                                 "offsets": [["t", 0, 5]]})
    assert h.broker.statistics().fsyncs > before
    await c.ok("group_leave", {"group": "g", "member_id": m["member_id"]})
    await h.broker.shutdown()
    h2 = await start_harness(nursery, tmp_path / "d", fsync="always")
    c2 = await h2.connect()
    assert (await c2.ok("offset_fetch", {"group": "g", "partitions": [["t", 0]]}))["offsets"] == [["t", 0, 5, ""]]
    await c2.ok("delete_group", {"group": "g"})
    await h2.broker.shutdown()
    h3 = await start_harness(nursery, tmp_path / "d")
    c3 = await h3.connect()
    assert await c3.ok("list_groups", {}) == {"groups": []}
    code, _ = await c3.call("describe_group", {"group": "g"})
    assert code == errors.UnknownGroupError.code
    await h3.broker.shutdown()


async def test_a_silent_member_is_expired_by_the_timer_in_virtual_time(harness, autojump_clock):
    c = await harness.connect()
    await c.ok("create_topic", {"name": "t", "partitions": 2})
    a = await settle(c, await join(c, session_timeout_ms=3000))
    b = await join(c, session_timeout_ms=3000)
    start = trio.current_time()
    # only b keeps heartbeating; a goes silent
    while trio.current_time() - start < 6:
        b = await c.ok("group_heartbeat", {"group": "g", "member_id": b["member_id"], "member_epoch": b["member_epoch"],
                                            "owned": b["assignment"]})
        await trio.sleep(b["heartbeat_interval_ms"] / 1000)
    assert sorted(map(tuple, b["assignment"])) == [("t", 0), ("t", 1)]
    desc = await c.ok("describe_group", {"group": "g"})
    assert [m["member_id"] for m in desc["members"]] == [b["member_id"]]
    code, _ = await c.call("group_heartbeat", {"group": "g", "member_id": a["member_id"],
                                               "member_epoch": a["member_epoch"], "owned": []})
    assert code == errors.UnknownMemberIdError.code


async def test_adding_partitions_hands_them_out(harness):
    c = await harness.connect()
    await c.ok("create_topic", {"name": "t", "partitions": 1})
    m = await settle(c, await join(c))
    assert m["assignment"] == [["t", 0]]
    assert await c.ok("add_partitions", {"name": "t", "partitions": 3}) == {"name": "t", "partitions": 3}
    m = await settle(c, await c.ok("group_heartbeat", {"group": "g", "member_id": m["member_id"],
                                                        "member_epoch": m["member_epoch"], "owned": m["assignment"]}))
    assert sorted(map(tuple, m["assignment"])) == [("t", 0), ("t", 1), ("t", 2)]
    assert (await c.ok("metadata", {"topics": ["t"]}))["topics"] == {"t": 3}


@pytest.mark.parametrize("total", [1, 0, 2000])
async def test_add_partitions_refuses_a_total_that_does_not_grow(harness, total):
    c = await harness.connect()
    await c.ok("create_topic", {"name": "t", "partitions": 1})
    code, answer = await c.call("add_partitions", {"name": "t", "partitions": total})
    assert code == errors.InvalidPartitionsError.code and "from 2 to" in answer["message"]


async def test_internal_offsets_topic_is_hidden_and_protected(harness):
    c = await harness.connect()
    await c.ok("create_topic", {"name": "t"})
    m = await settle(c, await join(c))
    await c.ok("offset_commit", {"group": "g", "member_id": m["member_id"], "member_epoch": m["member_epoch"],
                                 "offsets": [["t", 0, 1]]})
    assert await c.ok("list_topics", {}) == {"topics": ["t"]}
    for api, body in [("delete_topic", {"name": "__millpond_offsets"}),
                      ("create_topic", {"name": "__millpond_x"}),
                      ("produce", {"topic": "__millpond_offsets", "partition": 0, "batch": b"x" * 60})]:
        code, _ = await c.call(api, body)
        assert code == errors.InvalidTopicNameError.code, api


async def test_deleting_a_topic_drops_its_committed_offsets_even_after_restart(nursery, tmp_path):
    h = await start_harness(nursery, tmp_path / "d")
    c = await h.connect()
    await c.ok("create_topic", {"name": "t"})
    await c.ok("create_topic", {"name": "keep"})
    m = await settle(c, await join(c, topics=("t", "keep")))
    await c.ok("offset_commit", {"group": "g", "member_id": m["member_id"], "member_epoch": m["member_epoch"],
                                 "offsets": [["t", 0, 7], ["keep", 0, 3]]})
    await c.ok("group_leave", {"group": "g", "member_id": m["member_id"]})
    await c.ok("delete_topic", {"name": "t"})
    await c.ok("create_topic", {"name": "t"})
    want = [["t", 0, -1, ""], ["keep", 0, 3, ""]]
    assert sorted((await c.ok("offset_fetch", {"group": "g", "partitions": [["t", 0], ["keep", 0]]}))["offsets"]) \
        == sorted(want)
    await h.broker.shutdown()
    h2 = await start_harness(nursery, tmp_path / "d")
    c2 = await h2.connect()
    assert sorted((await c2.ok("offset_fetch", {"group": "g", "partitions": [["t", 0], ["keep", 0]]}))["offsets"]) \
        == sorted(want)
    await h2.broker.shutdown()
