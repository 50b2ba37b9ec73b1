# The consumer-group core's vocabulary: topic-partitions, states, settings, and the frozen records the coordinator
# answers with. Plain data only: must not know about storage, the wire protocol, clocks or trio.
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import NamedTuple

from millpond.broker.wire.errors import InvalidGroupIdError, InvalidRequestError, InvalidSessionTimeoutError

JOIN_EPOCH = 0  # as KIP-848's ConsumerGroupHeartbeat: member_epoch 0 = join
LEAVE_EPOCH = -1  # member_epoch -1 = leave the group
STATIC_LEAVE_EPOCH = -2  # member_epoch -2 = a static member leaves for a while and keeps its partitions reserved
NO_MEMBER_EPOCH = -1  # an admin commit (no member), as Kafka's generation -1

GROUP_ID_CHARS_MAX = 255
_GROUP_ID_RE = re.compile(r"[!-~]{1,255}")  # printable ASCII, no spaces: safe in logs, CLIs and record keys
MEMBER_ID_CHARS_MAX = 255


class TopicPartition(NamedTuple):
    """One partition of one topic; sorts by topic, then partition number."""

    topic: str
    partition: int


class GroupState(enum.Enum):
    """A consumer group's state, as KIP-848's consumer group (``ASSIGNING`` never lasts: assignors run inline).

    ``DEAD`` = not known to the coordinator (never created, or deleted).
    """

    DEAD = "dead"
    EMPTY = "empty"  # no members; may hold committed offsets
    RECONCILING = "reconciling"  # some member's assignment differs from its target, or a revoke is pending
    STABLE = "stable"  # every member owns exactly its target assignment


class MemberState(enum.Enum):
    """A member's reconciliation state, as KIP-848's ``MemberState``."""

    STABLE = "stable"  # owns exactly its target
    UNREVOKED_PARTITIONS = "unrevoked_partitions"  # must stop owning some partitions first
    UNRELEASED_PARTITIONS = "unreleased_partitions"  # waits for other members to release partitions it will get
    LEFT_TEMPORARILY = "left_temporarily"  # a static member that left with epoch -2; partitions held for it


class Op(enum.Enum):
    """What a caller asks of a consumer group: the events of the coordinator's transition table."""

    JOIN = "join"
    HEARTBEAT = "heartbeat"
    LEAVE = "leave"
    MEMBER_COMMIT = "member_commit"  # a commit by a member, fenced by ownership and member epoch
    ADMIN_COMMIT = "admin_commit"  # a commit by no member (reset-offsets, tools): only while the group is empty
    FETCH_OFFSETS = "fetch_offsets"
    DESCRIBE = "describe"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """The coordinator's settings. Durations in seconds (monotonic), as Kafka's group.* broker settings.

    ``session_timeout_s``: a member silent this long is expired (Kafka session.timeout.ms; 10 s as kafka-python).
    ``rebalance_timeout_s``: how long a member asked to revoke partitions may take before it is expired (KIP-848's
    rebalance timeout, which clients set from max.poll.interval.ms, default 300 s). ``heartbeat_interval_s``: what
    stable members are told to heartbeat at (KIP-848 group.consumer.heartbeat.interval.ms; capped at a third of
    the session timeout); members still reconciling are told ``unsettled_heartbeat_interval_s``, so a moved
    partition reaches its new owner within a fraction of a second of its release. Per-member overrides at join
    must lie within the ``*_min``/``*_max`` bounds.
    """

    session_timeout_s: float = 10.0
    session_timeout_s_min: float = 1.0
    session_timeout_s_max: float = 1800.0  # Kafka group.max.session.timeout.ms
    rebalance_timeout_s: float = 300.0
    rebalance_timeout_s_max: float = 3600.0
    heartbeat_interval_s: float = 1.0
    unsettled_heartbeat_interval_s: float = 0.25
    assignor: str = "sticky"
    members_per_group_max: int = 1000
    offset_metadata_bytes_max: int = 4096  # Kafka offset.metadata.max.bytes

    def session_timeout(self, value: float | None) -> float:
        """``value`` (a member's ask) checked against the bounds, or the default.

        Raises ``InvalidSessionTimeoutError``.
        """
        return _bounded("session_timeout_s", value, self.session_timeout_s, self.session_timeout_s_min,
                        self.session_timeout_s_max)

    def rebalance_timeout(self, value: float | None) -> float:
        """As ``session_timeout``, for the rebalance timeout (same lower bound)."""
        return _bounded("rebalance_timeout_s", value, self.rebalance_timeout_s, self.session_timeout_s_min,
                        self.rebalance_timeout_s_max)


def _bounded(name: str, value: float | None, default: float, low: float, high: float) -> float:
    if value is None:
        return default
    if not _is_number(value) or not low <= value <= high:
        raise InvalidSessionTimeoutError(f"{name} must be within {low}..{high}, got {value!r}", minimum=low, maximum=high)
    return float(value)


@dataclass(frozen=True, slots=True)
class Committed:
    """A committed offset: the next offset the group will read (Kafka's convention), the committer's metadata
    string, and when it was committed (wall-clock ms since the epoch)."""

    offset: int
    metadata: str = ""
    commit_timestamp_ms: int = -1


@dataclass(frozen=True, slots=True)
class HeartbeatAnswer:
    """What a member is told after join or heartbeat (as KIP-848's ConsumerGroupHeartbeatResponse).

    ``assignment``: every partition the member may own now (sorted). It stops consuming and commits any partition it
    owns that is not listed, then reports its owned partitions in the next heartbeat, at once (not waiting for
    ``heartbeat_interval_s``) when ``state`` is not stable. ``member_epoch``: send it with every heartbeat and commit.
    """

    member_id: str
    member_epoch: int
    assignment: tuple[TopicPartition, ...]
    state: MemberState
    heartbeat_interval_s: float


@dataclass(frozen=True, slots=True)
class MemberDescription:
    member_id: str
    group_instance_id: str | None
    client_id: str
    host: str
    member_epoch: int
    state: MemberState
    topics: tuple[str, ...]
    assignment: tuple[TopicPartition, ...]  # what the member was last told it may own
    revoking: tuple[TopicPartition, ...]  # told to give up, not yet confirmed
    target: tuple[TopicPartition, ...]  # where the assignor wants it to end up


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """One partition of a described group: committed offset (-1 = none), end offset and lag (None if unknown)."""

    topic: str
    partition: int
    committed_offset: int
    metadata: str
    end_offset: int | None
    lag: int | None


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group_id: str
    state: GroupState
    group_epoch: int  # the generation: bumped on every change of members, subscriptions or partition counts
    assignor: str
    members: tuple[MemberDescription, ...]
    offsets: tuple[PartitionOffsets, ...]


@dataclass(frozen=True, slots=True)
class GroupListing:
    group_id: str
    state: GroupState
    members: int


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def validate_group_id(group_id: object) -> str:
    """Return ``group_id`` or raise ``InvalidGroupIdError``: 1-255 printable ASCII characters, no spaces."""
    if not isinstance(group_id, str) or _GROUP_ID_RE.fullmatch(group_id) is None:
        shown = repr(group_id)[:80]
        raise InvalidGroupIdError(
            f"invalid group id {shown}: use 1-{GROUP_ID_CHARS_MAX} printable ASCII characters without spaces"
        )
    return group_id


def validate_member_id(member_id: object) -> str:
    if not isinstance(member_id, str) or not 1 <= len(member_id) <= MEMBER_ID_CHARS_MAX:
        raise InvalidRequestError(f"member_id must be a string of 1-{MEMBER_ID_CHARS_MAX} characters")
    return member_id


def validate_partitions(items: object, what: str) -> frozenset[TopicPartition]:
    """``[(topic, partition), ...]`` as a frozenset of TopicPartition; raises ``InvalidRequestError`` otherwise."""
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise InvalidRequestError(f"{what} must be a list of [topic, partition]")
    out = set()
    for item in items:
        if (
            not isinstance(item, (list, tuple))
            or len(item) != 2
            or not isinstance(item[0], str)
            or type(item[1]) is not int
            or item[1] < 0
        ):
            raise InvalidRequestError(f"{what} must be a list of [topic (str), partition (int >= 0)], got {item!r}")
        out.add(TopicPartition(item[0], item[1]))
    return frozenset(out)


def validate_topics(topics: object) -> tuple[str, ...]:
    if not isinstance(topics, (list, tuple, set, frozenset)) or not all(isinstance(t, str) and t for t in topics):
        raise InvalidRequestError("topics must be a list of topic names")
    return tuple(sorted(set(topics)))


class AtTimestamp(NamedTuple):
    """A reset target: the first offset whose record timestamp is >= ``timestamp_ms`` (wall clock, ms)."""

    timestamp_ms: int
