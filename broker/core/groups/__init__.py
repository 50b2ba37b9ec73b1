# Consumer groups (issue 3): the coordinator's state machine, the server-side assignors and the durable committed
# offsets. Sans-IO: synchronous, takes `now` (monotonic seconds) and `now_ms` (wall-clock ms, for stored records),
# never reads a clock, imports trio or opens a socket; its only IO is appending to and replaying the internal topic
# __millpond_offsets through the LogManager. Must not know about frames, connections or waiting.
"""Consumer groups, shaped like Kafka's KIP-848 protocol: the broker assigns, members reconcile incrementally.

Design
------
* Server-side assignment. A member joins with its subscribed topics; on every change of members, subscriptions or
  partition counts the group epoch (generation) is bumped and the group's assignor (``sticky`` default, ``range``,
  ``round_robin``) computes a *target* assignment.
* Incremental (cooperative) reconciliation, per member, at each of its heartbeats. A member first revokes the
  partitions that leave it (they stay its own, commits allowed, until a heartbeat's ``owned`` list no longer shows
  them, or until it is expired); only then does it reach the new epoch and take the target partitions nobody else
  holds. So a partition has at most one holder at any time, and members whose partitions do not move keep
  consuming throughout.
* Liveness. A member silent for ``session_timeout_s`` (10 s), or not confirming a revoke within
  ``rebalance_timeout_s`` (the client's max_poll_interval_s, 300 s), is expired by ``expire(now)``; every member
  expired in one call costs its group one epoch bump. max_poll_interval_s itself is enforced by the client, as
  Kafka's (KIP-62): a consumer whose application stops polling stops heartbeating and calls ``leave``.
* Static membership (KIP-345): a join with a ``group_instance_id`` still in the group takes over that member's
  partitions and epoch with no rebalance; ``leave(temporary=True)`` holds them for ``session_timeout_s``.
* Offsets. ``commit`` is fenced: only a current member, with its current member epoch, for partitions it holds
  (assigned or being revoked), in every group state; admin commits (``reset_offsets``) only while the group is
  empty. Commits are records of __millpond_offsets (latest per key wins; a group tombstone erases a group) and
  ``OffsetStore.open`` replays them on start.

Member states (KIP-848 ``MemberState``), per heartbeat: STABLE -(new target drops partitions)-> UNREVOKED_PARTITIONS
-(owned no longer lists them)-> UNRELEASED_PARTITIONS -(holders released them)-> STABLE; LEFT_TEMPORARILY after
``leave(temporary=True)``. Group states and what each operation meets: ``coordinator.TRANSITIONS``.

==========  ======  =========  ========  ============  ============  =============  ========  =======
state       join    heartbeat  leave     member commit admin commit  fetch offsets  describe  delete
==========  ======  =========  ========  ============  ============  =============  ========  =======
DEAD        create  UNKNOWN_M  UNKNOWN_M UNKNOWN_M     ok (->EMPTY)  ok (empty)     UNKNOWN_G UNKNOWN_G
EMPTY       ok      UNKNOWN_M  UNKNOWN_M UNKNOWN_M     ok            ok             ok        ok (->DEAD)
RECONCILING ok      ok         ok        fenced ok     NOT_EMPTY     ok             ok        NOT_EMPTY
STABLE      ok      ok         ok        fenced ok     NOT_EMPTY     ok             ok        NOT_EMPTY
==========  ======  =========  ========  ============  ============  =============  ========  =======
(UNKNOWN_M = UNKNOWN_MEMBER_ID, UNKNOWN_G = UNKNOWN_GROUP, NOT_EMPTY = GROUP_NOT_EMPTY; "fenced ok" = allowed for
the owner with its current epoch, else NOT_PARTITION_OWNER / STALE_MEMBER_EPOCH / UNKNOWN_MEMBER_ID.)

What the server calls, and when
-------------------------------
start:      ``store = OffsetStore(log_manager); store.open(now_ms)`` (after ``LogManager.open``), then
            ``coord = GroupCoordinator(partition_count, store, GroupConfig(...))`` with
            ``partition_count(topic) -> int | None``.
join:       ``coord.join(group, topics, now, member_id=None, group_instance_id=None, client_id=, host=,
            session_timeout_s=None, rebalance_timeout_s=None, assignor=None) -> HeartbeatAnswer``.
heartbeat:  ``coord.heartbeat(group, member_id, member_epoch, owned, now, topics=None) -> HeartbeatAnswer``;
            the member heartbeats every ``answer.heartbeat_interval_s``, and at once after it revoked partitions.
leave:      ``coord.leave(group, member_id, now, temporary=False)``.
topics:     ``coord.topics_changed()`` after a topic is created, deleted or grows.
timer:      sleep until ``coord.next_deadline()`` (None = nothing scheduled; re-read it after every group call),
            then ``coord.expire(now)``.
offsets:    ``coord.commit(group, member_id, member_epoch, {(topic, p): offset | (offset, metadata)}, now_ms)``,
            ``coord.reset_offsets(group, resolve_reset(log, topic, to), now_ms)``, ``coord.delete_group(group, now_ms)``
            each return an offset: answer once ``store.partition_log.high_watermark`` reaches it (the grouped fsync
            moves it under fsync="always"). ``coord.fetch_offsets(group, partitions=None)``,
            ``coord.list_groups()``, ``coord.describe(group, end_offset=lambda t, p: ...)``.
Every call raises a ``MillpondError`` subclass for a refused request, and then changed nothing.
"""
from millpond.broker.core.groups.assignors import ASSIGNORS, MemberSpec, range_assign, round_robin_assign, sticky_assign
from millpond.broker.core.groups.coordinator import TRANSITIONS, GroupCoordinator
from millpond.broker.core.groups.offsets import OFFSETS_TOPIC, OffsetStore, resolve_reset
from millpond.broker.core.groups.types import (
    JOIN_EPOCH,
    LEAVE_EPOCH,
    NO_MEMBER_EPOCH,
    STATIC_LEAVE_EPOCH,
    AtTimestamp,
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
)

__all__ = [
    "ASSIGNORS", "JOIN_EPOCH", "LEAVE_EPOCH", "NO_MEMBER_EPOCH", "OFFSETS_TOPIC", "STATIC_LEAVE_EPOCH", "TRANSITIONS",
    "AtTimestamp", "Committed", "GroupConfig", "GroupCoordinator", "GroupDescription", "GroupListing", "GroupState",
    "HeartbeatAnswer", "MemberDescription", "MemberSpec", "MemberState", "OffsetStore", "Op", "PartitionOffsets",
    "TopicPartition", "range_assign", "resolve_reset", "round_robin_assign", "sticky_assign",
]
