# The group coordinator: every consumer group's membership, liveness deadlines and committed offsets, driven by
# calls that carry `now` (monotonic seconds) or `now_ms` (wall clock, for stored records). Checks each request
# against the transition table, then either raises (changing nothing) or applies it whole. Must not know about
# sockets, frames, trio or the clock; its only IO is the OffsetStore's appends to the log.
from __future__ import annotations

import uuid
from typing import Callable, Collection, Iterable, Mapping

from sortedcontainers import SortedList

from millpond.broker.core.groups.assignors import ASSIGNORS
from millpond.broker.core.groups.group import Group, Member
from millpond.broker.core.groups.offsets import OffsetStore
from millpond.broker.core.groups.types import (
    NO_MEMBER_EPOCH,
    Committed,
    GroupConfig,
    GroupDescription,
    GroupListing,
    GroupState,
    HeartbeatAnswer,
    MemberDescription,
    MemberState,
    Op,
    PartitionOffsets,
    TopicPartition,
    validate_group_id,
    validate_member_id,
    validate_partitions,
    validate_topics,
)
from millpond.broker.wire.errors import (
    FencedInstanceIdError,
    FencedMemberEpochError,
    GroupMaxSizeReachedError,
    GroupNotEmptyError,
    InvalidRequestError,
    MillpondError,
    NotPartitionOwnerError,
    OffsetMetadataTooLargeError,
    StaleMemberEpochError,
    UnknownGroupError,
    UnknownMemberIdError,
    UnknownTopicOrPartitionError,
    UnsupportedAssignorError,
)

_D, _E, _R, _S = GroupState.DEAD, GroupState.EMPTY, GroupState.RECONCILING, GroupState.STABLE
_ok = None
# (group state, operation) -> None (allowed) or the error it is refused with. The state after an allowed operation
# follows from the members: none -> EMPTY (or DEAD once it holds no offset either), any member not yet owning
# exactly its target -> RECONCILING, else STABLE. A JOIN into DEAD creates the group; DELETE leads to DEAD.
TRANSITIONS: dict[tuple[GroupState, Op], type[MillpondError] | None] = {
    #  state  operation               verdict
    (_D, Op.JOIN):                    _ok,  # -> RECONCILING or STABLE
    (_D, Op.HEARTBEAT):               UnknownMemberIdError,
    (_D, Op.LEAVE):                   UnknownMemberIdError,
    (_D, Op.MEMBER_COMMIT):           UnknownMemberIdError,
    (_D, Op.ADMIN_COMMIT):            _ok,  # -> EMPTY (offsets only), as Kafka's "simple" commits
    (_D, Op.FETCH_OFFSETS):           _ok,
    (_D, Op.DESCRIBE):                UnknownGroupError,
    (_D, Op.DELETE):                  UnknownGroupError,
    (_E, Op.JOIN):                    _ok,  # -> RECONCILING or STABLE
    (_E, Op.HEARTBEAT):               UnknownMemberIdError,
    (_E, Op.LEAVE):                   UnknownMemberIdError,
    (_E, Op.MEMBER_COMMIT):           UnknownMemberIdError,
    (_E, Op.ADMIN_COMMIT):            _ok,
    (_E, Op.FETCH_OFFSETS):           _ok,
    (_E, Op.DESCRIBE):                _ok,
    (_E, Op.DELETE):                  _ok,  # -> DEAD (a tombstone is stored)
    (_R, Op.JOIN):                    _ok,
    (_R, Op.HEARTBEAT):               _ok,  # -> STABLE once every member owns its target
    (_R, Op.LEAVE):                   _ok,  # -> EMPTY after the last member
    (_R, Op.MEMBER_COMMIT):           _ok,  # owner and member epoch checked
    (_R, Op.ADMIN_COMMIT):            GroupNotEmptyError,
    (_R, Op.FETCH_OFFSETS):           _ok,
    (_R, Op.DESCRIBE):                _ok,
    (_R, Op.DELETE):                  GroupNotEmptyError,
    (_S, Op.JOIN):                    _ok,  # -> RECONCILING (a static member's return: stays STABLE)
    (_S, Op.HEARTBEAT):               _ok,
    (_S, Op.LEAVE):                   _ok,
    (_S, Op.MEMBER_COMMIT):           _ok,
    (_S, Op.ADMIN_COMMIT):            GroupNotEmptyError,
    (_S, Op.FETCH_OFFSETS):           _ok,
    (_S, Op.DESCRIBE):                _ok,
    (_S, Op.DELETE):                  GroupNotEmptyError,
}

PartitionCount = Callable[[str], "int | None"]
EndOffset = Callable[[str, int], "int | None"]


def _new_member_id() -> str:
    return uuid.uuid4().hex


# What a refusal calls the operation (the ops' values are the transition table's names, not a user's words).
_ASKED = {Op.ADMIN_COMMIT: "setting offsets without a member (reset-offsets)", Op.MEMBER_COMMIT: "commit",
          Op.FETCH_OFFSETS: "fetching offsets", Op.DELETE: "deleting the group"}


class GroupCoordinator:
    """Every consumer group of one broker. See the package docstring for the calls the server makes and when.

    ``partition_count(topic)``: the topic's partition count, or None if it does not exist (then it counts as 0).
    ``store``: committed offsets (open it first). ``new_member_id``: a source of unique ids (tests pass a counter).
    """

    def __init__(
        self,
        partition_count: PartitionCount,
        store: OffsetStore,
        config: GroupConfig | None = None,
        *,
        new_member_id: Callable[[], str] = _new_member_id,
    ) -> None:
        self.config = config or GroupConfig()
        if self.config.assignor not in ASSIGNORS:
            raise UnsupportedAssignorError(f"unknown assignor {self.config.assignor!r}", known=sorted(ASSIGNORS))
        self.store = store
        self._count = partition_count
        self._new_id = new_member_id
        self._groups: dict[str, Group] = {}
        self._deadlines: SortedList = SortedList()  # (deadline, group_id, member_id)

    # -- the table -------------------------------------------------------------------------------------------------

    def state(self, group_id: str) -> GroupState:
        """The group's state; DEAD when the coordinator holds neither members nor offsets for it."""
        group = self._groups.get(group_id)
        if group is not None and group.members:
            return group.state()
        return GroupState.EMPTY if group is not None or self.store.committed(group_id) else GroupState.DEAD

    def _check(self, group_id: object, op: Op) -> tuple[str, Group | None]:
        gid = validate_group_id(group_id)
        verdict = TRANSITIONS[(self.state(gid), op)]
        if verdict is not None:
            state = self.state(gid)
            what = _ASKED.get(op, op.value)
            if state is GroupState.DEAD:  # users never see "dead": to them the group does not exist
                raise verdict(f"{what} refused: no consumer group {gid!r} (no members, no committed offsets)",
                              group_id=gid)
            if verdict is GroupNotEmptyError:
                members = len(self._groups[gid].members)
                raise verdict(
                    f"{what} refused: consumer group {gid!r} has {members} member(s); stop them first (a "
                    f"member that died is expired after its session timeout)", group_id=gid, members=members)
            raise verdict(f"{what} refused: consumer group {gid!r} is {state.value}", group_id=gid)
        return gid, self._groups.get(gid)

    def _member(self, group: Group | None, member_id: object) -> Member:
        mid = validate_member_id(member_id)
        member = group.members.get(mid) if group is not None else None
        if member is None:
            if group is not None and mid in group.retired:
                raise FencedInstanceIdError(
                    f"member {mid!r} was replaced by a newer member with group_instance_id "
                    f"{group.retired[mid]!r}", member_id=mid,
                )
            raise UnknownMemberIdError(f"member {mid!r} is not in the group; join again", member_id=mid)
        return member

    # -- membership ------------------------------------------------------------------------------------------------

    def join(
        self,
        group_id: str,
        topics: Collection[str],
        now: float,
        *,
        member_id: str | None = None,
        group_instance_id: str | None = None,
        client_id: str = "",
        host: str = "",
        session_timeout_s: float | None = None,
        rebalance_timeout_s: float | None = None,
        assignor: str | None = None,
    ) -> HeartbeatAnswer:
        """A member joins subscribed to ``topics`` (KIP-848 heartbeat with member epoch 0); it owns nothing yet.

        ``member_id``: None for a fresh member (the coordinator makes one), or the member's own id when it rejoins
        (after FENCED_MEMBER_EPOCH, or a lost join answer): it then starts over owning nothing. A static member
        (``group_instance_id``) whose instance is still in the group takes over its partitions and epoch with no
        rebalance (KIP-345); the old member id is retired. ``rebalance_timeout_s``: how long a revoke may take
        (clients pass their max_poll_interval_s). Raises the errors of the table, ``InvalidRequestError``,
        ``InvalidSessionTimeoutError``, ``UnsupportedAssignorError``, ``GroupMaxSizeReachedError``,
        ``FencedInstanceIdError``.
        """
        gid, group = self._check(group_id, Op.JOIN)
        subs = validate_topics(topics)
        if member_id is not None:
            validate_member_id(member_id)
        instance = group_instance_id
        if instance is not None and not (isinstance(instance, str) and 0 < len(instance) <= 255):
            raise InvalidRequestError("group_instance_id must be a string of 1-255 characters")
        if not isinstance(client_id, str) or not isinstance(host, str) or len(client_id) > 255 or len(host) > 255:
            raise InvalidRequestError("client_id and host must be strings of at most 255 characters")
        session = self.config.session_timeout(session_timeout_s)
        rebalance = self.config.rebalance_timeout(rebalance_timeout_s)
        name = assignor
        if name is None:
            name = group.assignor if group is not None and group.members else self.config.assignor
        if name not in ASSIGNORS:
            raise UnsupportedAssignorError(f"unknown assignor {name!r}", known=sorted(ASSIGNORS))
        if group is not None and group.members and name != group.assignor:
            raise UnsupportedAssignorError(
                f"consumer group {gid!r} uses assignor {group.assignor!r}, not {name!r}", assignor=group.assignor
            )
        existing = group.members.get(member_id) if group is not None and member_id is not None else None
        previous_static = None
        if group is not None and group_instance_id is not None and group_instance_id in group.instances:
            previous_static = group.members[group.instances[group_instance_id]]
            if existing is not None and existing is not previous_static:
                raise FencedInstanceIdError(f"member {member_id!r} does not hold instance {group_instance_id!r}")
        if group is not None and member_id is not None and member_id in group.retired:
            raise FencedInstanceIdError(f"member id {member_id!r} was retired by a static member's restart")
        if existing is None and previous_static is None:
            if group is not None and len(group.members) >= self.config.members_per_group_max:
                raise GroupMaxSizeReachedError(
                    f"consumer group {gid!r} has {len(group.members)} members", limit=self.config.members_per_group_max
                )
        # -- validated: apply ----------------------------------------------------------------------------------------
        if group is None:
            group = self._groups[gid] = Group(gid, name)
        if not group.members:
            group.assignor = name
        changed = False
        if existing is not None:
            m = existing
            group.release(m, m.assigned | m.revoking)  # epoch 0: it owns nothing now
            m.revoke_deadline = None
            m.left_temporarily = False
            changed = m.topics != subs
            m.topics, m.client_id, m.host = subs, client_id, host
            m.session_timeout_s, m.rebalance_timeout_s = session, rebalance
        else:
            m = Member(
                member_id if member_id is not None else self._new_id(), group_instance_id, client_id, host, subs,
                session, rebalance, now + session,
            )
            if previous_static is not None:
                self._clear_timer(previous_static)
                changed = previous_static.topics != subs
                group.replace(previous_static, m)
            else:
                group.add(m)
                changed = True
        if changed:
            group.retarget(self._count)
        return self._answer(group, m, None, now)

    def heartbeat(
        self,
        group_id: str,
        member_id: str,
        member_epoch: int,
        owned: Iterable[tuple[str, int]] | None,
        now: float,
        *,
        topics: Collection[str] | None = None,
    ) -> HeartbeatAnswer:
        """A member's heartbeat (KIP-848 ConsumerGroupHeartbeat with epoch > 0): refreshes its session, confirms a
        revoke when ``owned`` (the partitions it holds now; None = not reported) lists none of them, and answers
        its assignment. ``topics``: a changed subscription (None = unchanged).

        Raises ``UnknownMemberIdError`` (not in the group: join again), ``FencedMemberEpochError`` (``member_epoch``
        is neither its current nor its previous epoch: drop every partition, join again), ``FencedInstanceIdError``,
        ``InvalidRequestError``. A refused heartbeat changes nothing, not even the session.
        """
        gid, group = self._check(group_id, Op.HEARTBEAT)
        m = self._member(group, member_id)
        assert group is not None
        if m.left_temporarily:
            raise UnknownMemberIdError(f"static member {m.member_id!r} left; join again", member_id=m.member_id)
        if type(member_epoch) is not int or member_epoch not in (m.member_epoch, m.previous_epoch) or member_epoch <= 0:
            raise FencedMemberEpochError(
                f"member epoch {member_epoch!r} is stale; the member's epoch is {m.member_epoch}",
                member_epoch=m.member_epoch,
            )
        reported = validate_partitions(owned, "owned") if owned is not None else None
        subs = validate_topics(topics) if topics is not None else None
        # -- validated: apply ----------------------------------------------------------------------------------------
        m.session_deadline = now + m.session_timeout_s
        if subs is not None and subs != m.topics:
            m.topics = subs
            group.retarget(self._count)
        return self._answer(group, m, reported, now)

    def leave(self, group_id: str, member_id: str, now: float, *, temporary: bool = False) -> None:
        """A member leaves (KIP-848 epoch -1): its partitions go to the others at once.

        ``temporary`` (epoch -2, static members only): its partitions are held for it for its session timeout,
        with no rebalance; a join with the same ``group_instance_id`` within that time gets them back.
        Raises ``UnknownMemberIdError``, ``FencedInstanceIdError``, ``InvalidRequestError``.
        """
        gid, group = self._check(group_id, Op.LEAVE)
        m = self._member(group, member_id)
        assert group is not None
        if temporary and m.group_instance_id is None:
            raise InvalidRequestError("only a static member (with group_instance_id) can leave temporarily")
        if temporary:
            m.left_temporarily = True
            m.revoke_deadline = None
            group.release(m, m.revoking | (m.assigned - group.target.get(m.member_id, frozenset())))
            m.session_deadline = now + m.session_timeout_s
            self._set_timer(gid, m)
            return
        self._remove(group, [m])

    def topics_changed(self) -> list[str]:
        """Call after a topic is created, deleted or given more partitions. Groups subscribed to a topic whose
        partition count changed get a new epoch and target (new partitions are handed out). Returns their ids."""
        bumped = []
        for gid, group in self._groups.items():
            if group.members and group.counts_changed(self._count):
                group.retarget(self._count)
                bumped.append(gid)
        return bumped

    # -- liveness --------------------------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest time (monotonic s) ``expire`` has work to do, or None. The timer task sleeps until then."""
        return self._deadlines[0][0] if self._deadlines else None

    def expire(self, now: float) -> list[tuple[str, str]]:
        """Remove every member whose session lapsed (no heartbeat for ``session_timeout_s``) or whose revoke was not
        confirmed within ``rebalance_timeout_s``. Each affected group is retargeted once, however many of its
        members went. Returns ``(group_id, member_id)`` of the expired, in deadline order."""
        due: dict[str, list[Member]] = {}
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, gid, mid = self._deadlines[0]
            m = self._groups[gid].members[mid]
            self._clear_timer(m)
            due.setdefault(gid, []).append(m)
            expired.append((gid, mid))
        for gid, members in due.items():
            self._remove(self._groups[gid], members)
        return expired

    def _remove(self, group: Group, members: list[Member]) -> None:
        for m in members:
            self._clear_timer(m)
            group.remove(m)
        group.retarget(self._count)
        if not group.members:
            group.target.clear()
            group.retired.clear()
            if not self.store.committed(group.group_id):
                del self._groups[group.group_id]

    def _set_timer(self, gid: str, m: Member) -> None:
        self._clear_timer(m)
        m.timer = (m.deadline, gid, m.member_id)
        self._deadlines.add(m.timer)

    def _clear_timer(self, m: Member) -> None:
        if m.timer is not None:
            self._deadlines.remove(m.timer)
            m.timer = None

    def _answer(self, group: Group, m: Member, owned: frozenset[TopicPartition] | None, now: float) -> HeartbeatAnswer:
        group.reconcile(m, owned, now)
        self._set_timer(group.group_id, m)
        state = group.member_state(m)
        interval = min(self.config.heartbeat_interval_s, m.session_timeout_s / 3)
        if state is not MemberState.STABLE:
            interval = min(interval, self.config.unsettled_heartbeat_interval_s)
        return HeartbeatAnswer(m.member_id, m.member_epoch, tuple(sorted(m.assigned)), state, interval)

    # -- offsets ---------------------------------------------------------------------------------------------------

    def commit(
        self,
        group_id: str,
        member_id: str | None,
        member_epoch: int,
        offsets: Mapping[tuple[str, int], int | tuple[int, str]],
        now_ms: int,
    ) -> int:
        """Commit ``{(topic, partition): offset or (offset, metadata)}``; offset = the next one to read.

        A member (``member_id``) may commit only partitions it owns (assigned, or being revoked: so it can commit in
        its revoke callback) and only with its current ``member_epoch``: a zombie is refused, in every group state.
        ``member_id=None`` with ``member_epoch=-1`` is an admin commit, allowed only while the group has no members.
        All or nothing. Returns the offset the offsets log's high watermark must reach before answering.
        Raises ``UnknownMemberIdError``, ``StaleMemberEpochError``, ``NotPartitionOwnerError``,
        ``FencedInstanceIdError``, ``GroupNotEmptyError``, ``UnknownTopicOrPartitionError``,
        ``OffsetMetadataTooLargeError``, ``InvalidRequestError``, ``StorageError``.
        """
        op = Op.ADMIN_COMMIT if member_id is None else Op.MEMBER_COMMIT
        gid, group = self._check(group_id, op)
        entries = self._entries(offsets, now_ms)
        if member_id is None:
            if member_epoch != NO_MEMBER_EPOCH:
                raise InvalidRequestError("an admin commit (no member id) carries member epoch -1")
            for tp in entries:
                count = self._count(tp.topic)
                if count is None or tp.partition >= count:
                    raise UnknownTopicOrPartitionError(f"unknown partition {tp.topic}/{tp.partition}", topic=tp.topic)
        else:
            m = self._member(group, member_id)
            if m.left_temporarily:
                raise UnknownMemberIdError(f"static member {m.member_id!r} left; join again", member_id=m.member_id)
            if member_epoch != m.member_epoch:
                raise StaleMemberEpochError(
                    f"commit with member epoch {member_epoch!r}; the member's epoch is {m.member_epoch}",
                    member_epoch=m.member_epoch,
                )
            held = m.assigned | m.revoking
            for tp in entries:
                if tp not in held:
                    raise NotPartitionOwnerError(
                        f"member {m.member_id!r} does not own {tp.topic}/{tp.partition}",
                        topic=tp.topic, partition=tp.partition,
                    )
        return self.store.commit(gid, entries, now_ms)

    def reset_offsets(self, group_id: str, offsets: Mapping[tuple[str, int], int], now_ms: int) -> int:
        """Set committed offsets of a group with no members (resolve earliest/latest/timestamp first with
        ``offsets.resolve_reset``). Raises ``GroupNotEmptyError`` and the errors of ``commit``."""
        return self.commit(group_id, None, NO_MEMBER_EPOCH, offsets, now_ms)

    def _entries(self, offsets: object, now_ms: int) -> dict[TopicPartition, Committed]:
        if not isinstance(offsets, Mapping) or not offsets:
            raise InvalidRequestError("offsets must be a non-empty map of (topic, partition) -> offset")
        out = {}
        for key, value in offsets.items():
            (tp,) = validate_partitions([key], "offsets")
            offset, metadata = value if isinstance(value, tuple) else (value, "")
            if type(offset) is not int or offset < 0 or not isinstance(metadata, str):
                raise InvalidRequestError(f"commit of {tp.topic}/{tp.partition}: offset must be an int >= 0")
            if len(metadata.encode()) > self.config.offset_metadata_bytes_max:
                raise OffsetMetadataTooLargeError(
                    f"metadata is over {self.config.offset_metadata_bytes_max} bytes",
                    limit=self.config.offset_metadata_bytes_max,
                )
            out[tp] = Committed(offset, metadata, now_ms)
        return out

    def fetch_offsets(
        self, group_id: str, partitions: Iterable[tuple[str, int]] | None = None
    ) -> dict[TopicPartition, Committed]:
        """Committed offsets of the group (all, or those of ``partitions``); a partition never committed is absent
        (the wire answers -1 and the client applies auto_offset_reset)."""
        gid, _ = self._check(group_id, Op.FETCH_OFFSETS)
        table = self.store.committed(gid)
        if partitions is None:
            return table
        wanted = validate_partitions(list(partitions), "partitions")
        return {tp: c for tp, c in table.items() if tp in wanted}

    def delete_group(self, group_id: str, now_ms: int) -> int:
        """Delete a group with no members: its offsets go, and a tombstone keeps it deleted across restarts.
        Returns the offset to wait for. Raises ``UnknownGroupError``, ``GroupNotEmptyError``, ``StorageError``."""
        gid, _ = self._check(group_id, Op.DELETE)
        end = self.store.delete_group(gid, now_ms)
        self._groups.pop(gid, None)
        return end

    # -- admin views -----------------------------------------------------------------------------------------------

    def list_groups(self) -> list[GroupListing]:
        ids = sorted(set(self._groups) | set(self.store.groups()))
        out = []
        for gid in ids:
            state = self.state(gid)
            if state is not GroupState.DEAD:
                group = self._groups.get(gid)
                out.append(GroupListing(gid, state, len(group.members) if group is not None else 0))
        return out

    def describe(self, group_id: str, end_offset: EndOffset | None = None) -> GroupDescription:
        """State, epoch, members (client id, host, assignment, target) and, per partition that is assigned or
        committed, the committed offset, end offset (from ``end_offset(topic, partition)``) and lag."""
        gid, group = self._check(group_id, Op.DESCRIBE)
        members: list[MemberDescription] = []
        partitions: set[TopicPartition] = set()
        if group is not None:
            for m in group.members.values():
                target = group.target.get(m.member_id, frozenset())
                partitions |= target | m.assigned | m.revoking
                members.append(MemberDescription(
                    m.member_id, m.group_instance_id, m.client_id, m.host, m.member_epoch, group.member_state(m),
                    m.topics, tuple(sorted(m.assigned)), tuple(sorted(m.revoking)), tuple(sorted(target)),
                ))
        committed = self.store.committed(gid)
        rows = []
        for tp in sorted(partitions | set(committed)):
            c = committed.get(tp)
            end = end_offset(tp.topic, tp.partition) if end_offset is not None else None
            lag = max(end - c.offset, 0) if end is not None and c is not None else None
            rows.append(PartitionOffsets(
                tp.topic, tp.partition, c.offset if c else -1, c.metadata if c else "", end, lag
            ))
        return GroupDescription(
            gid, self.state(gid), group.group_epoch if group is not None else 0,
            group.assignor if group is not None else self.config.assignor, tuple(members), tuple(rows),
        )
