# Helpers for the consumer-group core tests: a coordinator over a dict of topics, members that heartbeat with what
# they were told, and a snapshot of every piece of coordinator state (to show a refused call changed nothing).
from __future__ import annotations

import itertools
from typing import Any

from millpond.broker.core.groups import GroupConfig, GroupCoordinator, HeartbeatAnswer, MemberState, OffsetStore, TopicPartition


def tp(topic: str, partition: int) -> TopicPartition:
    return TopicPartition(topic, partition)


class Harness:
    """A coordinator on in-memory offsets, with ``topics`` (name -> partition count) the tests may grow.

    Member ids are ``m1``, ``m2``, ... in join order. ``told[member_id]`` is the member's last answer: a well-behaved
    member owns exactly that assignment and reports it with its next heartbeat.
    """

    def __init__(self, topics: dict[str, int] | None = None, store: OffsetStore | None = None, **config: Any) -> None:
        self.topics: dict[str, int] = dict(topics or {})
        counter = itertools.count(1)
        self.store = store if store is not None else OffsetStore()
        self.coord = GroupCoordinator(
            self.topics.get, self.store, GroupConfig(**config), new_member_id=lambda: f"m{next(counter)}"
        )
        self.told: dict[str, HeartbeatAnswer] = {}

    def join(self, group: str, topics: list[str], now: float, **kw: Any) -> HeartbeatAnswer:
        answer = self.coord.join(group, topics, now, **kw)
        self.told[answer.member_id] = answer
        return answer

    def beat(self, group: str, member_id: str, now: float, **kw: Any) -> HeartbeatAnswer:
        """A well-behaved heartbeat: the member's epoch and the partitions it was last told it owns."""
        last = self.told[member_id]
        answer = self.coord.heartbeat(group, member_id, last.member_epoch, list(last.assignment), now, **kw)
        self.told[member_id] = answer
        return answer

    def members(self, group: str) -> list[str]:
        return [m.member_id for m in self.coord.describe(group).members if m.state is not MemberState.LEFT_TEMPORARILY]

    def settle(self, group: str, now: float, rounds: int = 20) -> dict[str, tuple[TopicPartition, ...]]:
        """Heartbeat every member with what it was told until all are stable; returns each one's assignment."""
        for _ in range(rounds):
            ids = self.members(group)
            answers = [self.beat(group, mid, now) for mid in ids]
            if all(a.state is MemberState.STABLE for a in answers):
                return {mid: self.told[mid].assignment for mid in ids}
        raise AssertionError(f"group {group} did not settle in {rounds} rounds")

    def epoch(self, group: str) -> int:
        return self.coord.describe(group).group_epoch


def snapshot(coord: GroupCoordinator) -> Any:
    """Every observable and internal piece of the coordinator's state, as plain comparable values."""
    groups = {}
    for gid, g in coord._groups.items():
        groups[gid] = (
            g.assignor, g.group_epoch, dict(g.instances), dict(g.retired), dict(g.target), dict(g.counts),
            dict(g.owner),
            {mid: (m.group_instance_id, m.client_id, m.host, m.topics, m.session_timeout_s, m.rebalance_timeout_s,
                   m.session_deadline, m.member_epoch, m.previous_epoch, m.assigned, m.revoking, m.revoke_deadline,
                   m.left_temporarily, m.timer) for mid, m in g.members.items()},
        )
    offsets = {g: coord.store.committed(g) for g in coord.store.groups()}
    return groups, list(coord._deadlines), offsets
