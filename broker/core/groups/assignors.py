# Server-side assignors (as KIP-848: the broker, not a client, decides who owns what): range and round robin with
# Kafka's exact outputs, and sticky, which keeps as many partitions in place as balance allows. Pure functions of
# (members, partition counts, current target); must not know about epochs, time, storage or the wire.
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from millpond.broker.core.groups.types import TopicPartition


@dataclass(frozen=True, slots=True)
class MemberSpec:
    """What an assignor knows of a member: its id, its static instance id (if any) and its subscribed topics."""

    member_id: str
    group_instance_id: str | None
    topics: tuple[str, ...]


Assignment = dict[str, frozenset[TopicPartition]]
# (members, partition count per topic, current target per member id) -> new target for every member id
Assignor = Callable[[Sequence[MemberSpec], Mapping[str, int], Mapping[str, frozenset[TopicPartition]]], Assignment]


def member_order(m: MemberSpec) -> tuple[int, str]:
    """Kafka's member order (``AbstractPartitionAssignor.MemberInfo.compareTo``): static members first, by instance
    id, then dynamic members by member id."""
    return (0, m.group_instance_id) if m.group_instance_id is not None else (1, m.member_id)


def _sorted(members: Sequence[MemberSpec]) -> list[MemberSpec]:
    return sorted(members, key=member_order)


def _partitions_of(topics: Sequence[str], counts: Mapping[str, int]) -> list[TopicPartition]:
    return [TopicPartition(t, p) for t in sorted(set(topics)) for p in range(counts.get(t, 0))]


def range_assign(
    members: Sequence[MemberSpec], counts: Mapping[str, int], current: Mapping[str, frozenset[TopicPartition]]
) -> Assignment:
    """Kafka's ``RangeAssignor``: per topic, partitions in order are cut into contiguous ranges for the subscribed
    members in member order; each gets floor(P/C), the first P mod C one more."""
    out: dict[str, set[TopicPartition]] = {m.member_id: set() for m in members}
    ordered = _sorted(members)
    for topic in sorted({t for m in members for t in m.topics}):
        subs = [m for m in ordered if topic in m.topics]
        total = counts.get(topic, 0)
        each, extra = divmod(total, len(subs))
        for i, m in enumerate(subs):
            start = i * each + min(i, extra)
            length = each + (1 if i < extra else 0)
            out[m.member_id].update(TopicPartition(topic, p) for p in range(start, start + length))
    return {k: frozenset(v) for k, v in out.items()}


def round_robin_assign(
    members: Sequence[MemberSpec], counts: Mapping[str, int], current: Mapping[str, frozenset[TopicPartition]]
) -> Assignment:
    """Kafka's ``RoundRobinAssignor``: every subscribed partition, sorted, is dealt to the members in a circle in
    member order, skipping members not subscribed to its topic."""
    out: dict[str, set[TopicPartition]] = {m.member_id: set() for m in members}
    ordered = _sorted(members)
    if not ordered:
        return {}
    i = 0
    for tp in _partitions_of([t for m in members for t in m.topics], counts):
        while tp.topic not in ordered[i].topics:
            i = (i + 1) % len(ordered)
        out[ordered[i].member_id].add(tp)
        i = (i + 1) % len(ordered)
    return {k: frozenset(v) for k, v in out.items()}


def sticky_assign(
    members: Sequence[MemberSpec], counts: Mapping[str, int], current: Mapping[str, frozenset[TopicPartition]]
) -> Assignment:
    """Balanced first (counts differ by at most one among members with the same subscriptions), then as few moves
    as possible from ``current`` (as Kafka's ``StickyAssignor`` / KIP-848's uniform assignor).

    When every member subscribes to the same topics the result moves the fewest partitions any balanced assignment
    could: the members keeping the most get the ``P mod N`` larger quotas, and only a member's excess moves.
    """
    ordered = _sorted(members)
    if not ordered:
        return {}
    subscribed = {m.member_id: set(m.topics) for m in ordered}
    valid = set(_partitions_of([t for m in ordered for t in m.topics], counts))
    out: dict[str, list[TopicPartition]] = {}
    claimed: set[TopicPartition] = set()
    for m in ordered:
        keep = sorted(
            tp for tp in current.get(m.member_id, ())
            if tp in valid and tp.topic in subscribed[m.member_id] and tp not in claimed
        )
        claimed.update(keep)
        out[m.member_id] = keep
    order_key = {m.member_id: member_order(m) for m in ordered}
    if len({tuple(sorted(s)) for s in subscribed.values()}) == 1:
        each, extra = divmod(len(valid), len(ordered))
        by_kept = sorted(ordered, key=lambda m: (-len(out[m.member_id]), member_order(m)))
        quota = {m.member_id: each + (1 if i < extra else 0) for i, m in enumerate(by_kept)}
        for mid, keep in out.items():
            del keep[quota[mid]:]  # the excess (highest partitions) moves
        unassigned = sorted(valid - {tp for keep in out.values() for tp in keep})
        for tp in unassigned:
            mid = min((k for k in out if len(out[k]) < quota[k]), key=lambda k: (len(out[k]), order_key[k]))
            out[mid].append(tp)
        return {k: frozenset(v) for k, v in out.items()}
    # Mixed subscriptions: hand out the free partitions to the least loaded eligible member, then move partitions
    # from a member to an eligible one holding at least two fewer until no such move exists.
    for tp in sorted(valid - claimed):
        mid = min((k for k in out if tp.topic in subscribed[k]), key=lambda k: (len(out[k]), order_key[k]))
        out[mid].append(tp)
    owner = {tp: mid for mid, tps in out.items() for tp in tps}
    moved = True
    while moved:
        moved = False
        for tp in sorted(owner):
            a = owner[tp]
            candidates = [k for k in out if tp.topic in subscribed[k] and len(out[k]) <= len(out[a]) - 2]
            if candidates:
                b = min(candidates, key=lambda k: (len(out[k]), order_key[k]))
                out[a].remove(tp)
                out[b].append(tp)
                owner[tp] = b
                moved = True
    return {k: frozenset(v) for k, v in out.items()}


ASSIGNORS: dict[str, Assignor] = {
    "range": range_assign,
    "round_robin": round_robin_assign,
    "sticky": sticky_assign,
}
