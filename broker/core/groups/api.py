# The consumer groups' requests and their handlers (KIP-848 shaped membership, committed offsets, admin). Typed
# requests in, outcomes out; commits are answered once the offsets log is durable. Sans-IO like every core: must
# not know about any wire protocol, sockets or trio.
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from millpond.broker.core.groups.coordinator import GroupCoordinator
from millpond.broker.core.groups.offsets import OffsetStore, resolve_reset
from millpond.broker.core.groups.types import (
    AtTimestamp,
    GroupDescription,
    GroupListing,
    HeartbeatAnswer,
    TopicPartition,
)
from millpond.broker.core.log.manager import LogManager
from millpond.broker.core.outcomes import Answer, Context, Outcome
from millpond.broker.wire.errors import InvalidRequestError


class CommitEntry(NamedTuple):
    topic: str
    partition: int
    offset: int  # the next offset to read
    metadata: str | None = None


# -- requests -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GroupJoin:
    group: str
    topics: tuple[str, ...]
    member_id: str | None = None
    group_instance_id: str | None = None
    session_timeout_s: float | None = None
    rebalance_timeout_s: float | None = None
    assignor: str | None = None


@dataclass(frozen=True, slots=True)
class GroupHeartbeat:
    group: str
    member_id: str
    member_epoch: int
    owned: tuple[TopicPartition, ...] | None = None  # None: not reported
    topics: tuple[str, ...] | None = None  # None: subscription unchanged


@dataclass(frozen=True, slots=True)
class GroupLeave:
    group: str
    member_id: str
    temporary: bool = False


@dataclass(frozen=True, slots=True)
class OffsetCommit:
    group: str
    offsets: tuple[CommitEntry, ...]
    member_id: str | None = None  # None with epoch -1: an admin commit (group without members)
    member_epoch: int = -1


@dataclass(frozen=True, slots=True)
class OffsetFetch:
    group: str
    partitions: tuple[TopicPartition, ...] | None = None  # None: every committed partition
    # A member taking partitions: those never committed get the reset rule ("earliest"/"latest") resolved and
    # committed at once, fenced like the member's own commit, so the group's start never moves again.
    reset: str | None = None
    member_id: str | None = None
    member_epoch: int = -1


@dataclass(frozen=True, slots=True)
class ListGroups:
    pass


@dataclass(frozen=True, slots=True)
class DescribeGroup:
    group: str


@dataclass(frozen=True, slots=True)
class ResetOffsets:
    group: str
    topic: str
    to: Any  # "earliest", "latest", {"timestamp_ms": int} or {"offset": int}
    partitions: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class DeleteGroup:
    group: str


# -- answers ------------------------------------------------------------------------------------------------------
class CommittedOffset(NamedTuple):
    topic: str
    partition: int
    offset: int  # -1: never committed (as Kafka's OffsetFetch)
    metadata: str


@dataclass(frozen=True, slots=True)
class CommittedOffsets:
    offsets: tuple[CommittedOffset, ...]


@dataclass(frozen=True, slots=True)
class Groups:
    groups: tuple[GroupListing, ...]


class ResetOffset(NamedTuple):
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class OffsetsReset:
    offsets: tuple[ResetOffset, ...]


class GroupApi:
    """Answers the group requests with one ``GroupCoordinator``; ``when_durable(offset, answer)`` holds an answer
    until the offsets log's high watermark reaches ``offset``."""

    def __init__(self, log: LogManager, coordinator: GroupCoordinator, store: OffsetStore,
                 when_durable: Callable[[int, Callable[[], Outcome]], Outcome]) -> None:
        self.log = log
        self.coordinator = coordinator
        self.store = store
        self.when_durable = when_durable

    def handlers(self) -> dict[type, Callable[[Any, Context], Outcome]]:
        return {
            GroupJoin: self.join, GroupHeartbeat: self.heartbeat, GroupLeave: self.leave, OffsetCommit: self.commit,
            OffsetFetch: self.fetch_offsets, ListGroups: self.list_groups, DescribeGroup: self.describe,
            ResetOffsets: self.reset_offsets, DeleteGroup: self.delete,
        }

    # -- membership ---------------------------------------------------------------------------------------------
    def join(self, req: GroupJoin, ctx: Context) -> Outcome:
        answer: HeartbeatAnswer = self.coordinator.join(
            req.group, req.topics, ctx.now, member_id=req.member_id, group_instance_id=req.group_instance_id,
            client_id=ctx.client_id, host=ctx.host, session_timeout_s=req.session_timeout_s,
            rebalance_timeout_s=req.rebalance_timeout_s, assignor=req.assignor,
        )
        return Answer(answer)

    def heartbeat(self, req: GroupHeartbeat, ctx: Context) -> Outcome:
        return Answer(self.coordinator.heartbeat(req.group, req.member_id, req.member_epoch, req.owned, ctx.now,
                                                 topics=req.topics))

    def leave(self, req: GroupLeave, ctx: Context) -> Outcome:
        self.coordinator.leave(req.group, req.member_id, ctx.now, temporary=req.temporary)
        return Answer(None)

    # -- offsets ------------------------------------------------------------------------------------------------
    def commit(self, req: OffsetCommit, ctx: Context) -> Outcome:
        offsets: dict[tuple[str, int], Any] = {
            (e.topic, e.partition): e.offset if e.metadata is None else (e.offset, e.metadata) for e in req.offsets
        }
        at = self.coordinator.commit(req.group, req.member_id, req.member_epoch, offsets, ctx.now_ms)
        return self.when_durable(at, lambda: Answer(None))

    def fetch_offsets(self, req: OffsetFetch, ctx: Context) -> Outcome:
        """Committed offsets (-1: never committed). With ``reset``, a member's fetch for the partitions it is
        taking fixes the group's start in each one never committed: the reset rule is resolved now (``earliest``:
        log start, ``latest``: high watermark) and committed with the member's epoch before the answer, which then
        carries it. So a hand-over or a restart finds the start committed and never resolves it again (a
        ``latest`` resolved later would skip what was produced in between). Raises ``InvalidRequestError`` and
        the errors of ``GroupCoordinator.commit`` (nothing committed then)."""
        found = self.coordinator.fetch_offsets(req.group, req.partitions)
        if req.reset is not None:
            if req.reset not in ("earliest", "latest"):
                raise InvalidRequestError(f"offset_fetch: reset must be 'earliest' or 'latest', got {req.reset!r}")
            if req.partitions is None or req.member_id is None:
                raise InvalidRequestError("offset_fetch: reset needs the member's member_id, member_epoch and "
                                          "partitions")
            missing = sorted({TopicPartition(t, p) for t, p in req.partitions} - found.keys())
            if missing:
                offsets: dict[tuple[str, int], Any] = {}
                for topic in sorted({tp.topic for tp in missing}):
                    offsets.update(resolve_reset(self.log, topic, req.reset,
                                                 [tp.partition for tp in missing if tp.topic == topic]))
                at = self.coordinator.commit(req.group, req.member_id, req.member_epoch, offsets, ctx.now_ms)
                found = self.coordinator.fetch_offsets(req.group, req.partitions)
                answer = self._offsets_answer(req, found)
                return self.when_durable(at, lambda: answer)
        return self._offsets_answer(req, found)

    @staticmethod
    def _offsets_answer(req: OffsetFetch, found: dict[TopicPartition, Any]) -> Answer:
        rows = [CommittedOffset(tp.topic, tp.partition, c.offset, c.metadata) for tp, c in sorted(found.items())]
        if req.partitions is not None:
            have = {(r.topic, r.partition) for r in rows}
            rows += [CommittedOffset(t, p, -1, "") for t, p in req.partitions if (t, p) not in have]
        return Answer(CommittedOffsets(tuple(rows)))

    # -- admin --------------------------------------------------------------------------------------------------
    def list_groups(self, req: ListGroups, ctx: Context) -> Outcome:
        return Answer(Groups(tuple(self.coordinator.list_groups())))

    def describe(self, req: DescribeGroup, ctx: Context) -> Outcome:
        def end_offset(topic: str, partition: int) -> int | None:
            t = self.log.topics.get(topic)
            if t is None or partition >= len(t.partitions):
                return None
            return t.partitions[partition].high_watermark

        description: GroupDescription = self.coordinator.describe(req.group, end_offset)
        return Answer(description)

    def reset_offsets(self, req: ResetOffsets, ctx: Context) -> Outcome:
        """As kafka-consumer-groups --reset-offsets, for a group with no members."""
        spec = req.to
        if isinstance(spec, dict) and set(spec) == {"timestamp_ms"} and type(spec["timestamp_ms"]) is int:
            to: Any = AtTimestamp(spec["timestamp_ms"])
        elif isinstance(spec, dict) and set(spec) == {"offset"} and type(spec["offset"]) is int:
            to = spec["offset"]
        elif spec in ("earliest", "latest"):
            to = spec
        else:
            raise InvalidRequestError(
                f"reset_offsets: 'to' must be 'earliest', 'latest', {{'timestamp_ms': int}} or {{'offset': int}}, "
                f"got {spec!r}")
        offsets = resolve_reset(self.log, req.topic, to, req.partitions)
        at = self.coordinator.reset_offsets(req.group, offsets, ctx.now_ms)
        rows = tuple(ResetOffset(tp.topic, tp.partition, off) for tp, off in sorted(offsets.items()))
        return self.when_durable(at, lambda: Answer(OffsetsReset(rows)))

    def delete(self, req: DeleteGroup, ctx: Context) -> Outcome:
        at = self.coordinator.delete_group(req.group, ctx.now_ms)
        return self.when_durable(at, lambda: Answer(None))


__all__ = ["GroupApi"]
