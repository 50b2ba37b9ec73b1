# A topic's subscriptions (issue 12; SNS Subscribe/Unsubscribe): each delivers the topic's records to one target,
# a queue or a webhook (webhook.py), with an optional filter policy, raw delivery on or off and an optional
# dead-letter queue, and keeps a cursor per partition (the next offset it will look at) and counters. Every change
# is an event (subscribed, unsubscribed, cursor saved) kept in `events` for journal.py to append; replay applies the
# same events. Pure: takes `now` (monotonic s) and `now_ms` (wall-clock ms); must not know about the log, the
# queues, storage or protocols.
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from millpond.broker.core.fanout.filter_policy import FilterPolicy, compile_policy
from millpond.broker.core.fanout.webhook import DeliveryPolicy, WebhookState
from millpond.broker.wire.errors import (
    InvalidParameterValueError,
    TooManySubscriptionsError,
    UnknownSubscriptionError,
)

SUBSCRIPTIONS_PER_TOPIC_MAX = 200  # as SNS's filter policies per topic
SUBSCRIPTIONS_MAX = 1_000  # per broker (SNS: 10,000 filter policies per account); each may hold 256 KiB of policy
POLICY_BYTES_TOTAL_MAX = 16 * 1024 * 1024  # filter policy text of every subscription together (each up to 256 KiB)
CHECKPOINTS_MAX = 16  # cursor positions waiting for their queue sends to be durable, per subscription
SAVE_INTERVAL_S = 1.0  # a subscription's cursors are journaled at most this often (monotonic s)
QUEUE_TARGET = "queue"
Event = tuple  # ("sub", record, cursors) | ("unsub", id) | ("cursor", id, cursors, delivered, filtered, failed, dlq)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a subscription delivers: ``kind`` ``"queue"`` (``name`` a queue) or ``"webhook"`` (``name`` its
    URL)."""

    kind: str
    name: str


class Subscription:
    """One subscription. ``cursors``: partition -> next offset to look at (a partition missing: 0, so partitions
    added later are read from their start); ``saved``: the cursors last journaled. Counters count records:
    ``delivered`` into the target, ``filtered`` out by the policy, ``failed`` (not delivered to the target: moved to
    the dead-letter queue, counted in ``dead_lettered`` too, or dropped). ``paused_until``: monotonic s before
    which delivery is not tried again (the target was full); ``last_lag_ms``: publish to "in the queue" of the last
    delivered record (wall-clock ms, from the record's timestamp). A webhook subscription has its ``delivery``
    policy and its ``webhook`` state (webhook.py); its cursor is the first record of the partition not settled."""

    __slots__ = ("id", "topic", "target", "filter_policy", "scope", "raw", "dead_letter_queue", "created_ms",
                 "policy", "cursors", "saved", "delivered", "filtered", "failed", "dead_lettered", "paused_until",
                 "last_lag_ms", "checkpoints", "saved_at", "delivery", "webhook")

    def __init__(self, id: str, topic: str, target: Target, filter_policy: str | None, scope: str, raw: bool,
                 dead_letter_queue: str | None, created_ms: int, delivery: DeliveryPolicy | None = None) -> None:
        self.id = id
        self.topic = topic
        self.target = target
        self.filter_policy = filter_policy
        self.scope = scope
        self.raw = raw
        self.dead_letter_queue = dead_letter_queue
        self.created_ms = created_ms
        self.policy: FilterPolicy | None = None if filter_policy is None else compile_policy(filter_policy, scope)
        self.cursors: dict[int, int] = {}
        self.saved: dict[int, int] = {}
        self.delivered = self.filtered = self.failed = self.dead_lettered = 0
        self.paused_until = -math.inf
        self.last_lag_ms: int | None = None
        self.checkpoints: deque[tuple[int, dict[int, int], tuple[int, int, int, int]]] = deque()
        self.saved_at = -math.inf  # when the cursors were last journaled (monotonic s)
        self.delivery = delivery
        self.webhook = None if delivery is None else WebhookState(delivery)

    def settings(self) -> tuple[Any, ...]:
        # the policy as parsed: whitespace or key order alone does not make another one
        policy = None if self.policy is None else self.policy.canonical
        return (self.topic, self.target, policy, self.scope, self.raw, self.dead_letter_queue, self.delivery)

    def counters(self) -> tuple[int, int, int, int]:
        return self.delivered, self.filtered, self.failed, self.dead_lettered

    def to_record(self) -> dict[str, Any]:
        out = {"id": self.id, "topic": self.topic, "kind": self.target.kind, "target": self.target.name,
               "filter_policy": self.filter_policy, "scope": self.scope, "raw": self.raw,
               "dead_letter_queue": self.dead_letter_queue, "created_ms": self.created_ms}
        if self.delivery is not None:
            out["delivery"] = self.delivery.to_record()
        return out

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> "Subscription":
        delivery = r.get("delivery")
        return cls(r["id"], r["topic"], Target(r["kind"], r["target"]), r["filter_policy"], r["scope"], r["raw"],
                   r["dead_letter_queue"], r["created_ms"],
                   None if delivery is None else DeliveryPolicy(**delivery))


class Subscriptions:
    """Every subscription of a broker, by id and by topic. A refused call raises a ``MillpondError`` subclass and
    changes nothing; after a call ``events`` holds what it changed (``take_events()``)."""

    def __init__(self, *, per_topic_max: int = SUBSCRIPTIONS_PER_TOPIC_MAX,
                 total_max: int = SUBSCRIPTIONS_MAX) -> None:
        self.by_id: dict[str, Subscription] = {}
        self.by_topic: dict[str, dict[str, Subscription]] = {}
        self.per_topic_max = per_topic_max
        self.total_max = total_max
        self.events: list[Event] = []
        self.pending: dict[str, Subscription] = {}  # those with checkpoints waiting
        self.policy_bytes = 0  # of every subscription's filter policy text
        self.policy_bytes_max = POLICY_BYTES_TOTAL_MAX
        self.save_interval_s = SAVE_INTERVAL_S

    def take_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    def get(self, sub_id: str) -> Subscription:
        """Raises ``UnknownSubscriptionError``."""
        s = self.by_id.get(sub_id) if isinstance(sub_id, str) else None
        if s is None:
            raise UnknownSubscriptionError(f"no subscription {str(sub_id)[:100]!r}", subscription=str(sub_id)[:100])
        return s

    # -- events -------------------------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        self.apply(event)
        self.events.append(event)

    def apply(self, event: Event) -> None:
        """Apply one event (live, or replayed: a cursor of a subscription that is gone is skipped)."""
        kind = event[0]
        if kind == "sub":
            s = Subscription.from_record(event[1])
            s.cursors = {int(p): int(o) for p, o in event[2]}
            s.saved = dict(s.cursors)
            self.by_id[s.id] = s
            self.by_topic.setdefault(s.topic, {})[s.id] = s
            self.policy_bytes += _policy_bytes(s.filter_policy)
        elif kind == "unsub":
            s = self.by_id.pop(event[1], None)
            self.pending.pop(event[1], None)
            if s is not None:
                self.policy_bytes -= _policy_bytes(s.filter_policy)
                mine = self.by_topic[s.topic]
                del mine[s.id]
                if not mine:
                    del self.by_topic[s.topic]
        elif kind == "cursor":
            s = self.by_id.get(event[1])
            if s is not None:
                s.saved = {int(p): int(o) for p, o in event[2]}
                s.cursors.update(s.saved)
                s.delivered, s.filtered, s.failed, s.dead_lettered = (int(n) for n in event[3:7])
        else:
            raise ValueError(f"unknown subscription event {kind!r}")

    # -- requests -----------------------------------------------------------------------------------------------
    def subscribe(self, sub_id: str, topic: str, target: Target, filter_policy: str | None, scope: str, raw: bool,
                  dead_letter_queue: str | None, cursors: dict[int, int], now_ms: int,
                  delivery: DeliveryPolicy | None = None) -> tuple[Subscription, bool]:
        """Subscribe ``target`` to ``topic`` starting at ``cursors``; returns ``(subscription, created)``. As SNS
        Subscribe, subscribing the same target to the same topic again with the same settings answers the existing
        subscription (``created`` False); other settings raise ``InvalidParameterValueError``. The filter policy
        (JSON text, ``None``: every record) is compiled here, so an invalid one raises
        ``InvalidParameterValueError`` naming the bad part (filter_policy.py). Raises
        ``TooManySubscriptionsError`` past ``per_topic_max`` subscriptions of a topic, ``total_max`` in all, or
        ``policy_bytes_max`` bytes of filter policy text in all."""
        candidate = Subscription(sub_id, topic, target, filter_policy, scope, raw, dead_letter_queue, now_ms,
                                 delivery)
        for s in self.by_topic.get(topic, {}).values():
            if s.target == target:
                if s.settings() != candidate.settings():
                    raise InvalidParameterValueError(
                        f"{target.kind} {target.name!r} is already subscribed to topic {topic!r} ({s.id}) with other "
                        "settings; unsubscribe it first", parameter="url" if target.kind != QUEUE_TARGET else "queue",
                        subscription=s.id)
                return s, False
        if len(self.by_topic.get(topic, ())) >= self.per_topic_max:
            raise TooManySubscriptionsError(
                f"topic {topic!r} has {self.per_topic_max} subscriptions, the most it may have "
                "(subscriptions_per_topic_max)", topic=topic, subscriptions_max=self.per_topic_max)
        if len(self.by_id) >= self.total_max:
            raise TooManySubscriptionsError(
                f"the broker has {self.total_max} subscriptions, the most it may have (subscriptions_max)",
                subscriptions_max=self.total_max)
        size = _policy_bytes(filter_policy)
        if self.policy_bytes + size > self.policy_bytes_max:
            raise TooManySubscriptionsError(
                f"the subscriptions' filter policies hold {self.policy_bytes} bytes; this one's {size} would pass "
                f"their bound ({self.policy_bytes_max} bytes together)", policy_bytes_max=self.policy_bytes_max)
        self.emit(("sub", candidate.to_record(), sorted(cursors.items())))
        return self.by_id[sub_id], True

    def unsubscribe(self, sub_id: str) -> Subscription:
        """Remove a subscription (as SNS Unsubscribe). Raises ``UnknownSubscriptionError``."""
        s = self.get(sub_id)
        self.emit(("unsub", s.id))
        return s

    def topic_deleted(self, topic: str) -> list[Subscription]:
        """Remove every subscription of a deleted topic (as SNS DeleteTopic)."""
        gone = list(self.by_topic.get(topic, {}).values())
        for s in gone:
            self.emit(("unsub", s.id))
        return gone

    # -- cursors ------------------------------------------------------------------------------------------------
    def progressed(self, s: Subscription, needs: int) -> None:
        """``s`` moved its cursors; the position may be saved once the target's journal is durable up to
        ``needs`` (what was sent on the way is then durable: a cursor saved never runs ahead of a send). At most
        ``CHECKPOINTS_MAX`` wait: past that the oldest is dropped (a later one covers it)."""
        if s.checkpoints and s.checkpoints[-1][0] == needs:
            s.checkpoints.pop()
        s.checkpoints.append((needs, dict(s.cursors), s.counters()))
        if len(s.checkpoints) > CHECKPOINTS_MAX:
            s.checkpoints.popleft()
        self.pending[s.id] = s

    def save_at(self, durable: int) -> float:
        """When ``save`` next has a position to journal, given the target's journal is durable up to ``durable``
        (``inf``: none until more of it is durable)."""
        return min((s.saved_at + self.save_interval_s for s in self.pending.values()
                    if s.checkpoints[0][0] <= durable), default=math.inf)

    def save(self, durable: int, now: float) -> None:
        """Journal the newest position of each subscription whose sends are durable up to ``durable`` and whose
        last save is ``save_interval_s`` old (a position not saved costs nothing but looking at its records again
        after a restart: the queues' fan-out marks keep what was sent from being sent twice)."""
        for s in list(self.pending.values()):
            if s.checkpoints[0][0] > durable or now < s.saved_at + self.save_interval_s:
                continue
            latest = s.checkpoints.popleft()
            while s.checkpoints and s.checkpoints[0][0] <= durable:
                latest = s.checkpoints.popleft()
            # appended, not applied: the live cursors may be ahead of it
            self.events.append(("cursor", s.id, sorted(latest[1].items()), *latest[2]))
            s.saved = latest[1]
            s.saved_at = now
            if not s.checkpoints:
                del self.pending[s.id]


def _policy_bytes(policy: str | None) -> int:
    return 0 if policy is None else len(policy.encode())


__all__ = [
    "CHECKPOINTS_MAX", "POLICY_BYTES_TOTAL_MAX", "QUEUE_TARGET", "SAVE_INTERVAL_S", "SUBSCRIPTIONS_MAX", "SUBSCRIPTIONS_PER_TOPIC_MAX", "Event",
    "Subscription", "Subscriptions", "Target",
]
