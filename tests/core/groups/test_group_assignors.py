# The assignors' outputs: Kafka's worked examples for range and round robin, and sticky's balance and stickiness.
from __future__ import annotations

from groupkit import tp

from millpond.broker.core.groups import ASSIGNORS, MemberSpec, range_assign, round_robin_assign, sticky_assign


def two_consumers(topics=("t0", "t1")):
    return [MemberSpec("C0", None, topics), MemberSpec("C1", None, topics)]


def as_lists(assignment):
    return {mid: sorted(tps) for mid, tps in assignment.items()}


def test_range_two_consumers_two_topics_six_partitions():
    # RangeAssignorTest.testTwoConsumersTwoTopicsSixPartitions
    out = as_lists(range_assign(two_consumers(), {"t0": 3, "t1": 3}, {}))
    assert out == {"C0": [tp("t0", 0), tp("t0", 1), tp("t1", 0), tp("t1", 1)], "C1": [tp("t0", 2), tp("t1", 2)]}


def test_round_robin_two_consumers_two_topics_six_partitions():
    # RoundRobinAssignorTest.testTwoDynamicConsumersTwoTopicsSixPartitions
    out = as_lists(round_robin_assign(two_consumers(), {"t0": 3, "t1": 3}, {}))
    assert out == {"C0": [tp("t0", 0), tp("t0", 2), tp("t1", 1)], "C1": [tp("t0", 1), tp("t1", 0), tp("t1", 2)]}


def test_range_mixed_subscriptions():
    # RangeAssignorTest.testMultipleConsumersMixedTopics
    members = [
        MemberSpec("consumer1", None, ("topic1",)),
        MemberSpec("consumer2", None, ("topic1", "topic2")),
        MemberSpec("consumer3", None, ("topic1",)),
    ]
    out = as_lists(range_assign(members, {"topic1": 3, "topic2": 2}, {}))
    assert out == {
        "consumer1": [tp("topic1", 0)],
        "consumer2": [tp("topic1", 1), tp("topic2", 0), tp("topic2", 1)],
        "consumer3": [tp("topic1", 2)],
    }


def test_round_robin_uneven_subscriptions():
    # RoundRobinAssignor javadoc: C0 on t0, C1 on t0+t1, C2 on t0+t1+t2; 1, 2 and 3 partitions
    members = [
        MemberSpec("C0", None, ("t0",)), MemberSpec("C1", None, ("t0", "t1")), MemberSpec("C2", None, ("t0", "t1", "t2"))
    ]
    out = as_lists(round_robin_assign(members, {"t0": 1, "t1": 2, "t2": 3}, {}))
    assert out == {"C0": [tp("t0", 0)], "C1": [tp("t1", 0)], "C2": [tp("t1", 1), tp("t2", 0), tp("t2", 1), tp("t2", 2)]}


def test_static_members_sort_first_by_instance_id():
    members = [MemberSpec("a-dynamic", None, ("t",)), MemberSpec("z-member", "i0", ("t",))]
    out = as_lists(range_assign(members, {"t": 3}, {}))
    assert out == {"z-member": [tp("t", 0), tp("t", 1)], "a-dynamic": [tp("t", 2)]}


def test_missing_topic_counts_as_no_partitions():
    for assign in ASSIGNORS.values():
        out = assign(two_consumers(("ghost",)), {}, {})
        assert out == {"C0": frozenset(), "C1": frozenset()}


def test_sticky_keeps_partitions_and_balances():
    six = {"t": 6}
    first = sticky_assign([MemberSpec("a", None, ("t",))], six, {})
    assert first["a"] == {tp("t", p) for p in range(6)}
    second = sticky_assign([MemberSpec("a", None, ("t",)), MemberSpec("b", None, ("t",))], six, first)
    assert len(second["a"]) == len(second["b"]) == 3
    assert second["a"] <= first["a"]  # a only gave up what b needed
    third = sticky_assign(
        [MemberSpec("a", None, ("t",)), MemberSpec("b", None, ("t",)), MemberSpec("c", None, ("t",))], six, second
    )
    assert [len(third[m]) for m in "abc"] == [2, 2, 2]
    assert third["a"] <= second["a"] and third["b"] <= second["b"]
    # b leaves: only b's partitions move
    fourth = sticky_assign([MemberSpec("a", None, ("t",)), MemberSpec("c", None, ("t",))], six, third)
    assert third["a"] <= fourth["a"] and third["c"] <= fourth["c"]
    assert len(fourth["a"]) == len(fourth["c"]) == 3


def test_sticky_mixed_subscriptions_cover_everything_once():
    members = [MemberSpec("a", None, ("t0",)), MemberSpec("b", None, ("t0", "t1")), MemberSpec("c", None, ("t1",))]
    out = sticky_assign(members, {"t0": 4, "t1": 4}, {})
    everything = [p for tps in out.values() for p in tps]
    assert sorted(everything) == sorted({tp("t0", p) for p in range(4)} | {tp("t1", p) for p in range(4)})
    assert all(p.topic in dict((m.member_id, m.topics) for m in members)[mid] for mid, tps in out.items() for p in tps)
    counts = sorted(len(v) for v in out.values())
    assert counts[-1] - counts[0] <= 1
