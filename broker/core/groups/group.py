# One consumer group's membership and its incremental reconciliation (as KIP-848): the target assignment the
# assignor computed at the group epoch, what each member was told it may own, what it must still revoke, and who
# holds each partition. Plain data and pure steps; the coordinator validates requests before calling in here.
# Must not know about storage, committed offsets, timers' scheduling, the wire protocol or trio.
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from millpond.broker.core.groups.assignors import ASSIGNORS, MemberSpec
from millpond.broker.core.groups.types import GroupState, MemberState, TopicPartition

_EMPTY: frozenset[TopicPartition] = frozenset()


@dataclass(slots=True, eq=False)
class Member:
    """A consumer in a group. Times are monotonic seconds.

    ``assigned``: partitions the member was told it may own. ``revoking``: partitions it was told to give up and
    has not yet confirmed (its heartbeat still listed them); nobody else gets them meanwhile. ``member_epoch``
    reaches the group epoch once the member has no revoke pending (KIP-848); ``previous_epoch`` is accepted once
    more, for a heartbeat whose answer was lost.
    """

    member_id: str
    group_instance_id: str | None
    client_id: str
    host: str
    topics: tuple[str, ...]
    session_timeout_s: float
    rebalance_timeout_s: float
    session_deadline: float
    member_epoch: int = 0
    previous_epoch: int = -1
    assigned: frozenset[TopicPartition] = _EMPTY
    revoking: frozenset[TopicPartition] = _EMPTY
    revoke_deadline: float | None = None
    left_temporarily: bool = False
    timer: tuple[float, str, str] | None = None  # its entry in the coordinator's sorted deadlines

    @property
    def deadline(self) -> float:
        """When the member is expired unless something happens first: silence, or a revoke not confirmed."""
        if self.revoke_deadline is None:
            return self.session_deadline
        return min(self.session_deadline, self.revoke_deadline)

    def spec(self) -> MemberSpec:
        return MemberSpec(self.member_id, self.group_instance_id, self.topics)


@dataclass(slots=True, eq=False)
class Group:
    """A consumer group's live state. ``group_epoch``: the generation, bumped on every change of members,
    subscriptions or partition counts; the target assignment is recomputed at each bump."""

    group_id: str
    assignor: str
    group_epoch: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    instances: dict[str, str] = field(default_factory=dict)  # group_instance_id -> member_id
    retired: dict[str, str] = field(default_factory=dict)  # member id replaced by a static rejoin -> instance id
    target: dict[str, frozenset[TopicPartition]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # partition counts the target was computed with
    owner: dict[TopicPartition, str] = field(default_factory=dict)  # partition -> member holding it

    # -- derived states --------------------------------------------------------------------------------------------

    def member_state(self, m: Member) -> MemberState:
        if m.left_temporarily:
            return MemberState.LEFT_TEMPORARILY
        target = self.target.get(m.member_id, _EMPTY)
        if m.revoking or not m.assigned <= target:
            return MemberState.UNREVOKED_PARTITIONS
        if m.assigned != target:
            return MemberState.UNRELEASED_PARTITIONS
        return MemberState.STABLE

    def state(self) -> GroupState:
        if not self.members:
            return GroupState.EMPTY
        settled = (MemberState.STABLE, MemberState.LEFT_TEMPORARILY)
        if all(self.member_state(m) in settled for m in self.members.values()):
            return GroupState.STABLE
        return GroupState.RECONCILING

    def subscribed_topics(self) -> set[str]:
        return {t for m in self.members.values() for t in m.topics}

    # -- steps -----------------------------------------------------------------------------------------------------

    def retarget(self, partition_count: Callable[[str], int | None]) -> None:
        """Bump the group epoch and recompute the target with the group's assignor over the current members and
        partition counts. Partitions leaving a temporarily absent static member are released at once (its process
        owns nothing); every other member learns its new target at its next heartbeat."""
        self.group_epoch += 1
        self.counts = {t: max(partition_count(t) or 0, 0) for t in sorted(self.subscribed_topics())}
        specs = [m.spec() for m in self.members.values()]
        self.target = ASSIGNORS[self.assignor](specs, self.counts, self.target)
        for m in self.members.values():
            if m.left_temporarily:
                self.release(m, m.assigned - self.target.get(m.member_id, _EMPTY))

    def counts_changed(self, partition_count: Callable[[str], int | None]) -> bool:
        return self.counts != {t: max(partition_count(t) or 0, 0) for t in sorted(self.subscribed_topics())}

    def release(self, m: Member, partitions: frozenset[TopicPartition]) -> None:
        """``m`` no longer holds ``partitions``: they become free for their target owner."""
        if not partitions:
            return
        m.assigned -= partitions
        m.revoking -= partitions
        for tp in partitions:
            if self.owner.get(tp) == m.member_id:
                del self.owner[tp]

    def reconcile(self, m: Member, owned: frozenset[TopicPartition] | None, now: float) -> None:
        """One reconciliation step for ``m`` (KIP-848's ``CurrentAssignmentBuilder``), at its join or heartbeat.

        1. A pending revoke is confirmed when ``owned`` (what the member reports holding) lists none of it.
        2. Partitions outside the target move to ``revoking``; the epoch waits until the member confirms, and the
           member is given ``rebalance_timeout_s`` from now to do so.
        3. With nothing left to revoke, the member reaches the group epoch and takes every target partition that
           no other member holds; the rest come at a later heartbeat, once released.
        """
        if m.revoking and owned is not None and not (owned & m.revoking):
            self.release(m, m.revoking)
        target = self.target.get(m.member_id, _EMPTY)
        to_revoke = m.assigned - target
        if to_revoke:
            m.assigned -= to_revoke
            m.revoking |= to_revoke
        if m.revoking:
            if m.revoke_deadline is None:
                m.revoke_deadline = now + m.rebalance_timeout_s
            return
        m.revoke_deadline = None
        free = frozenset(tp for tp in target - m.assigned if tp not in self.owner)
        for tp in free:
            self.owner[tp] = m.member_id
        m.assigned |= free
        if m.member_epoch != self.group_epoch:
            m.previous_epoch, m.member_epoch = m.member_epoch, self.group_epoch

    def add(self, m: Member) -> None:
        self.members[m.member_id] = m
        if m.group_instance_id is not None:
            self.instances[m.group_instance_id] = m.member_id

    def remove(self, m: Member) -> None:
        """Drop ``m`` and free everything it held."""
        self.release(m, m.assigned | m.revoking)
        del self.members[m.member_id]
        self.target.pop(m.member_id, None)
        if m.group_instance_id is not None and self.instances.get(m.group_instance_id) == m.member_id:
            del self.instances[m.group_instance_id]

    def replace(self, old: Member, new: Member) -> None:
        """A static member's restart (KIP-345): ``new`` takes over ``old``'s target, assignment and epoch; ``old``'s
        member id is retired. Its pending revoke is void: the restarted process owns nothing."""
        self.release(old, old.revoking)
        new.member_epoch, new.previous_epoch = old.member_epoch, old.previous_epoch
        new.assigned = old.assigned
        for tp in new.assigned:
            self.owner[tp] = new.member_id
        del self.members[old.member_id]
        self.target[new.member_id] = self.target.pop(old.member_id, _EMPTY)
        for mid, inst in list(self.retired.items()):
            if inst == old.group_instance_id:
                del self.retired[mid]  # one retired id per instance: bounded memory
        self.retired[old.member_id] = old.group_instance_id or ""
        self.add(new)
