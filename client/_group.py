# A consumer group member on the client side (KIP-848): `MemberCore`, a sans-IO state machine that decides when to
# join, heartbeat, auto-commit or leave and turns each answer into a reconciliation step (partitions to revoke and
# to take), and `GroupMember`, the thin async driver that sends its requests and applies its steps to a Consumer.
# The core takes `now` (monotonic seconds) and never reads a clock or opens a socket; neither knows the broker's
# internals (only the wire bodies of docs/protocol.md).
from __future__ import annotations

import enum
import inspect
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

import anyio

from millpond.broker.wire.errors import (
    FencedMemberEpochError,
    MillpondError,
    NotPartitionOwnerError,
    StaleMemberEpochError,
    UnknownMemberIdError,
)

if TYPE_CHECKING:
    from millpond.client._client import Client
    from millpond.client.consumer import Consumer

log = logging.getLogger("millpond.client.group")
TopicPartition = tuple[str, int]
Callback = Callable[[frozenset[TopicPartition]], "Awaitable[None] | None"]
RESETS = ("earliest", "latest", "error")
COMMIT_TRIES = 3  # a commit crossed by this many epoch changes in a row is surfaced
FENCED = (NotPartitionOwnerError, StaleMemberEpochError, UnknownMemberIdError, FencedMemberEpochError)


class MemberState(enum.Enum):
    UNJOINED = "unjoined"  # must (re)join: at start, after fencing, after the session lapsed unanswered
    MEMBER = "member"  # joined: heartbeats, commits
    POLL_EXPIRED = "poll_expired"  # left because the application stopped pulling (KIP-62); rejoins when it pulls
    CLOSED = "closed"


class Action(enum.Enum):
    JOIN = "join"
    HEARTBEAT = "heartbeat"
    COMMIT = "commit"  # auto-commit is due
    LEAVE = "leave"  # max_poll_interval_s passed without a pull: give up the partitions and leave


# state -> the actions it can be due for, in priority order (anything else is an illegal move)
ACTIONS: dict[MemberState, tuple[Action, ...]] = {
    MemberState.UNJOINED: (Action.JOIN,),
    MemberState.MEMBER: (Action.LEAVE, Action.HEARTBEAT, Action.COMMIT),
    MemberState.POLL_EXPIRED: (),
    MemberState.CLOSED: (),
}


@dataclass(frozen=True, slots=True)
class Step:
    """What the driver must do after an answer: first revoke (stop reading, commit unless ``lost``, call
    on_revoked, then ``revoked()``), then take ``assign`` (fetch committed offsets, read, ``assigned()``)."""

    revoke: frozenset[TopicPartition] = frozenset()
    assign: frozenset[TopicPartition] = frozenset()
    lost: bool = False  # the partitions may already be someone else's: do not commit them


NOTHING = Step()


class MemberCore:
    """One member's protocol state. Times are monotonic seconds, given by the caller.

    ``due(now)`` names the next action (or None); ``wakeup_at()`` is when to ask again. After a JOIN or HEARTBEAT
    request, ``answered(body, now)`` or ``failed(exc, now)`` returns the ``Step`` to apply. Rules: heartbeat at the
    interval the broker answers, at once after a revoke (KIP-848); FENCED_MEMBER_EPOCH / UNKNOWN_MEMBER_ID lose
    every partition and rejoin with the same member id; no answer for ``session_timeout_s`` loses them too; no
    pull for ``max_poll_interval_s`` leaves the group (KIP-62) until the next pull.
    """

    def __init__(self, group: str, topics: Iterable[str], now: float, *, session_timeout_s: float = 10.0,
                 max_poll_interval_s: float = 300.0, auto_commit_interval_s: float | None = 5.0,
                 group_instance_id: str | None = None, assignor: str | None = None,
                 retry_backoff_s: tuple[float, float] = (0.05, 1.0)) -> None:
        self.group = group
        self.topics = sorted(set(topics))
        self.session_timeout_s = session_timeout_s
        self.max_poll_interval_s = max_poll_interval_s
        self.auto_commit_interval_s = auto_commit_interval_s
        self.group_instance_id = group_instance_id
        self.assignor = assignor
        self.retry_backoff_s = retry_backoff_s
        self.state = MemberState.UNJOINED
        self.member_id: str | None = None
        self.member_epoch = 0
        self.owned: frozenset[TopicPartition] = frozenset()
        self.heartbeat_interval_s = min(1.0, session_timeout_s / 3)
        self.next_heartbeat_at = now
        self.next_commit_at = now + (auto_commit_interval_s or 0.0)
        self.retry_at = now  # UNJOINED: when to try joining
        self.last_answer_at = now  # last answer from the coordinator (the session's own clock, as the broker's)
        self.last_pull_at = now
        self.pulling = 0  # pulls in progress: a consumer waiting for records is polling
        self._backoff = retry_backoff_s[0]
        self.error: MillpondError | None = None  # fatal: the application must see it
        self.losses = 0  # times every partition was lost or given up: a commit begun before one is never retried

    # -- what to do next ---------------------------------------------------------------------------------------
    def due(self, now: float) -> Action | None:
        for action in ACTIONS[self.state]:
            if now >= self._deadline(action):
                return action
        return None

    def wakeup_at(self) -> float:
        """The earliest time ``due`` may name an action (inf: only a pull or close can change that)."""
        return min((self._deadline(a) for a in ACTIONS[self.state]), default=float("inf"))

    def _deadline(self, action: Action) -> float:
        if action is Action.JOIN:
            return self.retry_at
        if action is Action.HEARTBEAT:
            return self.next_heartbeat_at
        if action is Action.COMMIT:
            return self.next_commit_at if self.auto_commit_interval_s and self.owned else float("inf")
        # LEAVE: the poll timer runs only while no pull is in progress
        return float("inf") if self.pulling else self.last_pull_at + self.max_poll_interval_s

    # -- request bodies ----------------------------------------------------------------------------------------
    def join_body(self) -> dict[str, Any]:
        self._require(MemberState.UNJOINED, "join")
        body: dict[str, Any] = {"group": self.group, "topics": self.topics,
                                "session_timeout_ms": int(self.session_timeout_s * 1000),
                                "rebalance_timeout_ms": int(self.max_poll_interval_s * 1000)}
        for key, value in (("member_id", self.member_id), ("group_instance_id", self.group_instance_id),
                           ("assignor", self.assignor)):
            if value is not None:
                body[key] = value
        return body

    def heartbeat_body(self) -> dict[str, Any]:
        self._require(MemberState.MEMBER, "heartbeat")
        return {"group": self.group, "member_id": self.member_id, "member_epoch": self.member_epoch,
                "owned": [list(tp) for tp in sorted(self.owned)]}

    def commit_body(self, offsets: dict[TopicPartition, int]) -> dict[str, Any]:
        self._require(MemberState.MEMBER, "commit")
        return {"group": self.group, "member_id": self.member_id, "member_epoch": self.member_epoch,
                "offsets": [[t, p, int(off)] for (t, p), off in sorted(offsets.items())]}

    def leave_body(self) -> dict[str, Any]:
        return {"group": self.group, "member_id": self.member_id, "temporary": self.group_instance_id is not None}

    def _require(self, state: MemberState, what: str) -> None:
        if self.state is not state:
            raise RuntimeError(f"cannot {what} in state {self.state.value}")

    # -- answers -----------------------------------------------------------------------------------------------
    def answered(self, body: dict[str, Any], now: float) -> Step:
        """A join or heartbeat answer: ``member_id``, ``member_epoch``, ``assignment``, ``heartbeat_interval_ms``."""
        if self.state is MemberState.CLOSED:
            return NOTHING
        self.state = MemberState.MEMBER
        self.member_id = str(body["member_id"])
        self.member_epoch = int(body["member_epoch"])
        self.heartbeat_interval_s = int(body["heartbeat_interval_ms"]) / 1000
        self.last_answer_at = now
        self.next_heartbeat_at = now + self.heartbeat_interval_s
        self._backoff = self.retry_backoff_s[0]
        target = frozenset((str(t), int(p)) for t, p in body["assignment"])
        return Step(revoke=self.owned - target, assign=target - self.owned)

    def failed(self, exc: BaseException, now: float) -> Step:
        """A join or heartbeat that got an error (or no answer in time)."""
        if self.state is MemberState.CLOSED:
            return NOTHING
        if isinstance(exc, (FencedMemberEpochError, UnknownMemberIdError)):
            return self._lose(now, at=now)  # rejoin at once, with the same member id
        if isinstance(exc, MillpondError) and not exc.retriable:
            self.error = exc
            self.state = MemberState.CLOSED
            return self._lose_all()
        retry = now + self._backoff * (0.5 + random.random() / 2)
        self._backoff = min(self._backoff * 2, self.retry_backoff_s[1])
        if self.state is MemberState.MEMBER and now - self.last_answer_at >= self.session_timeout_s:
            return self._lose(now, at=retry)  # the coordinator has expired us by now
        self.retry_at = self.next_heartbeat_at = retry
        return NOTHING

    def _lose(self, now: float, at: float) -> Step:
        self.state = MemberState.UNJOINED
        self.member_epoch = 0
        self.retry_at = at
        return self._lose_all()

    def _lose_all(self) -> Step:
        self.losses += 1
        return Step(revoke=self.owned, lost=True) if self.owned else NOTHING

    def may_retry_commit(self, partitions: Iterable[TopicPartition], losses: int) -> bool:
        """Whether a commit refused with STALE_MEMBER_EPOCH is retried with the broker's epoch: only while this
        member still holds every partition in it and lost none since it began (a heartbeat answer with a new epoch
        crossed it; KIP-848 clients retry such a commit with the new epoch)."""
        return self.state is MemberState.MEMBER and self.losses == losses and frozenset(partitions) <= self.owned

    def heartbeat_now(self, now: float) -> None:
        """Report at once (partitions could not be taken: the coordinator hands them out again)."""
        if self.state is MemberState.MEMBER:
            self.next_heartbeat_at = now

    # -- the driver reports what it did ------------------------------------------------------------------------
    def revoked(self, partitions: Iterable[TopicPartition], now: float) -> None:
        """The consumer stopped reading these (and committed them): report it in a heartbeat at once."""
        self.owned -= frozenset(partitions)
        if self.state is MemberState.MEMBER:
            self.next_heartbeat_at = now

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        self.owned |= frozenset(partitions)

    def committed(self, now: float) -> None:
        if self.auto_commit_interval_s:
            self.next_commit_at = now + self.auto_commit_interval_s

    def poll_started(self, now: float) -> None:
        self.pulling += 1
        self.last_pull_at = now
        if self.state is MemberState.POLL_EXPIRED:
            self.state = MemberState.UNJOINED
            self.retry_at = now

    def poll_ended(self, now: float) -> None:
        self.pulling -= 1
        self.last_pull_at = now

    def left(self, now: float, *, poll_expired: bool) -> Step:
        """The member gave up its partitions and sent its leave (or is closing): a new join starts fresh."""
        step = self._lose_all()
        self.state = MemberState.POLL_EXPIRED if poll_expired else MemberState.CLOSED
        self.member_id, self.member_epoch = (None if poll_expired else self.member_id), 0
        return step


async def _call(callback: Callback | None, partitions: frozenset[TopicPartition]) -> None:
    if callback is None or not partitions:
        return
    result = callback(partitions)
    if inspect.isawaitable(result):
        await result


class GroupMember:
    """Drives a ``MemberCore`` for one ``Consumer``: a background task that joins, heartbeats, reconciles,
    auto-commits and leaves. Started by the consumer's ``__aenter__``, stopped by ``close``."""

    def __init__(self, client: Client, consumer: Consumer, core: MemberCore, *, auto_offset_reset: str,
                 on_assigned: Callback | None, on_revoked: Callback | None) -> None:
        self._client = client
        self._consumer = consumer
        self.core = core
        self.auto_offset_reset = auto_offset_reset
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        self._wake = anyio.Event()
        self._lock = anyio.Lock()  # one reconciliation or commit at a time

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        core = self.core
        while core.state is not MemberState.CLOSED:
            now = anyio.current_time()
            action = core.due(now)
            if action is None:
                self._wake = anyio.Event()
                with anyio.move_on_after(max(0.0, core.wakeup_at() - now)):
                    await self._wake.wait()
                continue
            async with self._lock:
                # close() may have run while we waited for the lock: decide again (nothing is due once closed)
                action = core.due(anyio.current_time())
                if action is not None:
                    await self._act(action)
        if core.error is not None:
            self._consumer._fail(core.error)

    async def _act(self, action: Action) -> None:
        core = self.core
        if action is Action.COMMIT:
            await self._commit_quietly(self._consumer._offsets(processed=True))
            core.committed(anyio.current_time())
            return
        if action is Action.LEAVE:
            log.warning("consumer group %s: no pull for %g s (max_poll_interval_s): leaving the group",
                        core.group, core.max_poll_interval_s)
            body = core.leave_body()
            await self._apply(core.left(anyio.current_time(), poll_expired=True))
            await self._quietly("group_leave", body)
            return
        api, body = ("group_join", core.join_body()) if action is Action.JOIN else \
            ("group_heartbeat", core.heartbeat_body())
        timeout = max(0.5, core.last_answer_at + core.session_timeout_s - anyio.current_time()) \
            if core.state is MemberState.MEMBER else core.session_timeout_s
        answer: Any = None
        try:
            with anyio.move_on_after(timeout):
                answer = await self._client.request(api, body, timeout_s=timeout)
        except MillpondError as exc:
            step = core.failed(exc, anyio.current_time())
        else:
            if answer is None:
                step = core.failed(TimeoutError(f"{api} unanswered after {timeout:g} s"), anyio.current_time())
            else:
                step = core.answered(answer, anyio.current_time())
        await self._apply(step)

    async def _apply(self, step: Step) -> None:
        """Revoke before assign (KIP-848): a partition leaves this member completely before another arrives."""
        cons = self._consumer
        if step.revoke:
            await self._revoke(step.revoke, commit=not step.lost and cons.enable_auto_commit, processed=True)
        if step.assign:
            starts = await self._starts(step.assign)
            if starts is None:  # fenced while taking them: not taken; the next heartbeat settles who has them
                self.core.heartbeat_now(anyio.current_time())
                return
            cons._add(starts)
            self.core.assigned(step.assign)
            await _call(self.on_assigned, step.assign)

    async def _revoke(self, partitions: frozenset[TopicPartition], *, commit: bool, processed: bool) -> None:
        """Stop reading, commit (if asked), on_revoked, then let the core report it."""
        cons = self._consumer
        cons._pause(partitions)  # no more records of them reach the application
        if commit:
            await self._commit_quietly(cons._offsets(partitions, processed=processed))
        await _call(self.on_revoked, partitions)
        cons._drop(partitions)
        self.core.revoked(partitions, anyio.current_time())

    async def _starts(self, partitions: frozenset[TopicPartition]) -> dict[TopicPartition, int | str] | None:
        """Committed offsets (offset_fetch), else the reset rule; "error" is raised when the app pulls. With
        ``earliest``/``latest`` the broker resolves the rule for partitions never committed and commits the result
        before answering, so the group's start is fixed when it first reads a partition (a member that dies before
        committing hands over that start, not a later end). None: fenced meanwhile or a retriable error (the start
        not durable), take nothing now."""
        core = self.core
        request: dict[str, Any] = {"group": core.group, "partitions": [list(tp) for tp in sorted(partitions)]}
        if self.auto_offset_reset != "error":
            request.update(reset=self.auto_offset_reset, member_id=core.member_id, member_epoch=core.member_epoch)
        try:
            body = await self._client.request("offset_fetch", request)
        except MillpondError as exc:
            if not (isinstance(exc, FENCED) or exc.retriable):  # e.g. a deleted topic: the application sees it
                raise
            # fenced meanwhile, or the start could not be made durable: the coordinator hands them out again
            log.info("consumer group %s: partitions not taken: %s", core.group, exc)
            return None
        starts: dict[TopicPartition, int | str] = {tp: self.auto_offset_reset for tp in partitions}
        for t, p, offset, _meta in body["offsets"]:
            if (t, p) in starts and offset >= 0:
                starts[(t, p)] = int(offset)
        return starts

    # -- commits -----------------------------------------------------------------------------------------------
    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit now, fenced by this member's epoch. A commit that crossed a heartbeat answer with a new epoch
        (STALE_MEMBER_EPOCH) is sent again with the epoch the broker names while the member still holds every
        partition in it and lost none meanwhile, as KIP-848 clients do. Raises the broker's refusal
        (``NotPartitionOwnerError``, ``UnknownMemberIdError``, ``StaleMemberEpochError`` after ``COMMIT_TRIES``
        epoch changes in a row...) or ``UnknownMemberIdError`` if not in the group."""
        if not offsets:
            return
        core = self.core
        if core.state is not MemberState.MEMBER:
            raise UnknownMemberIdError(f"not a member of consumer group {core.group!r} now; nothing committed")
        body, losses = core.commit_body(offsets), core.losses
        for attempt in range(COMMIT_TRIES):
            try:
                await self._client.request("offset_commit", body)
                return
            except StaleMemberEpochError as exc:
                epoch = exc.details.get("member_epoch")
                if attempt + 1 == COMMIT_TRIES or type(epoch) is not int or not core.may_retry_commit(offsets, losses):
                    raise
                body = {**body, "member_epoch": epoch}

    async def _commit_quietly(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self.commit(offsets)
        except FENCED as exc:
            log.info("consumer group %s: auto-commit refused: %s", self.core.group, exc)
        except MillpondError as exc:
            log.warning("consumer group %s: auto-commit failed: %s", self.core.group, exc)

    async def _quietly(self, api: str, body: dict[str, Any]) -> None:
        try:
            with anyio.move_on_after(self.core.session_timeout_s):
                await self._client.request(api, body, timeout_s=self.core.session_timeout_s)
        except MillpondError as exc:
            log.info("consumer group %s: %s failed: %s", self.core.group, api, exc)

    async def close(self, commit: bool, processed_only: bool) -> None:
        """Commit (if asked) and call on_revoked while still a member, then leave (temporarily for a static
        member, KIP-345)."""
        async with self._lock:
            core = self.core
            if core.state is MemberState.MEMBER:
                if core.owned:
                    await self._revoke(core.owned, commit=commit, processed=processed_only)
                body = core.leave_body()
                core.left(anyio.current_time(), poll_expired=False)
                await self._quietly("group_leave", body)
            else:
                await self._apply(core.left(anyio.current_time(), poll_expired=False))
            self.wake()
