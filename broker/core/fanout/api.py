# The fan-out's requests and their handlers (SNS's Subscribe, Unsubscribe, ListSubscriptionsByTopic,
# GetSubscriptionAttributes, in millpond's names and units), and what drives delivery: the engine tells `woken` which
# keys moved (a partition's high watermark: records became durable; the queues' journal: sends became durable), asks
# `next_deadline` (now, while records wait) and runs `tick`, one bounded turn of pump.py at a time. Sans-IO like
# every core: must not know about any wire protocol, sockets, clocks or trio.
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from millpond.broker.core.fanout.filter_policy import MESSAGE_ATTRIBUTES
from millpond.broker.core.fanout.journal import SUBSCRIPTIONS_TOPIC, SubscriptionJournal
from millpond.broker.core.fanout.pump import Pump, lag
from millpond.broker.core.fanout.subscriptions import QUEUE_TARGET, Subscription, Subscriptions, Target
from millpond.broker.core.log import LogManager, PartitionLog, is_internal_topic
from millpond.broker.core.outcomes import Answer, Context, Outcome
from millpond.broker.core.queues.api import QueueApi
from millpond.broker.wire.errors import InvalidParameterValueError, UnknownQueueError, UnknownTopicOrPartitionError

START_END, START_BEGINNING = "end", "beginning"


# -- requests -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Subscribe:
    """As SNS Subscribe with protocol sqs. ``filter_policy``: JSON text (SNS FilterPolicy; None or "": every
    record); ``filter_policy_scope``: ``"MessageAttributes"`` (record headers) or ``"MessageBody"`` (the JSON
    value); ``raw``: SNS RawMessageDelivery; ``start``: ``"end"`` (new records only, the default), ``"beginning"``
    (the oldest record kept) or a record timestamp in ms (the first record at or after it, per partition)."""

    topic: str
    queue: str
    filter_policy: str | None = None
    filter_policy_scope: str = MESSAGE_ATTRIBUTES
    raw: bool = False
    dead_letter_queue: str | None = None
    start: str | int = START_END


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: str


@dataclass(frozen=True, slots=True)
class ListSubscriptions:
    topic: str | None = None  # None: every topic's


@dataclass(frozen=True, slots=True)
class DescribeSubscription:
    id: str


# -- answers ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    id: str
    topic: str
    queue: str
    filter_policy: str | None
    filter_policy_scope: str
    raw: bool
    dead_letter_queue: str | None
    created_ms: int


@dataclass(frozen=True, slots=True)
class SubscriptionList:
    subscriptions: tuple[SubscriptionInfo, ...]


@dataclass(frozen=True, slots=True)
class PartitionCursor:
    partition: int
    cursor: int  # the next offset the subscription looks at
    high_watermark: int
    lag: int  # records


@dataclass(frozen=True, slots=True)
class SubscriptionDescription:
    """A subscription, its cursors and counters: ``lag`` records not yet looked at, ``lag_s`` seconds since the
    oldest of them was published, ``last_delivery_lag_s`` publish to "in the queue" of the last record delivered
    (None before the first), ``paused``: its queue was full, delivery tries again shortly."""

    subscription: SubscriptionInfo
    partitions: tuple[PartitionCursor, ...]
    delivered: int
    filtered_out: int
    failed: int
    dead_lettered: int
    lag: int
    lag_s: float
    last_delivery_lag_s: float | None
    paused: bool


def _info(s: Subscription) -> SubscriptionInfo:
    return SubscriptionInfo(s.id, s.topic, s.target.name, s.filter_policy, s.scope, s.raw, s.dead_letter_queue,
                            s.created_ms)


# -- handlers -----------------------------------------------------------------------------------------------------
class FanoutApi:
    """Answers the subscription requests and delivers records into queues. ``queues`` is the broker's QueueApi
    (sends go through its manager and journal); ``when_durable(plog, offset, answer)`` holds an answer until
    ``plog`` is durable up to ``offset``."""

    def __init__(self, log: LogManager, queues: QueueApi, *,
                 when_durable: Callable[[PartitionLog, int, Callable[[], Outcome]], Outcome], **pump: Any) -> None:
        self.log = log
        self.queues = queues
        self.when_durable = when_durable
        self.subs = Subscriptions()
        self.journal = SubscriptionJournal(log)
        self.pump = Pump(log, self.subs, queues.manager, **pump)

    def handlers(self) -> dict[type, Callable[[Any, Context], Outcome]]:
        return {Subscribe: self.subscribe, Unsubscribe: self.unsubscribe, ListSubscriptions: self.list,
                DescribeSubscription: self.describe}

    def open(self, ctx: Context) -> None:
        """Replay the journal (after the queues': their fan-out marks are read); every subscribed partition is
        looked at once."""
        self.journal.open(self.subs, ctx.now_ms)
        for sub_id in list(self.queues.manager.origins):
            if sub_id not in self.subs.by_id:
                self.queues.manager.forget_origin(sub_id)
        for topic in self.subs.by_topic:
            self.pump.mark_topic(topic)

    # -- driving ------------------------------------------------------------------------------------------------
    def woken(self, keys: set[Hashable]) -> None:
        """Keys the engine woke: a subscribed partition's high watermark moved (records to deliver)."""
        by_topic = self.subs.by_topic
        if not by_topic:
            return
        for key in keys:
            if type(key) is tuple and len(key) == 3 and key[0] == "log" and key[1] in by_topic:
                self.pump.dirty[(key[1], key[2])] = None

    def _sends_durable(self) -> float:
        plog = self.queues.journal.plog
        return math.inf if plog is None else plog.high_watermark

    def next_deadline(self) -> float:
        """Now while records wait; else the next retry of a paused subscription or cursor save due (the queues'
        journal becoming durable moves the server's timer: it asks again after every fsync)."""
        if self.pump.dirty:
            return -math.inf
        retry = self.pump.retry_at()
        return min(retry, self.subs.save_at(self._sends_durable())) if self.subs.pending else retry

    def tick(self, ctx: Context) -> None:
        """One bounded turn of delivery, then journal the sends and save the cursors whose sends are durable."""
        self.pump.resume_due(ctx.now)
        moved = self.pump.turn(ctx.now, ctx.now_ms) if self.pump.dirty else []
        end = self.queues.journal.append(self.queues.manager.take_events(), ctx.now, ctx.now_ms)
        for s in moved:
            self.subs.progressed(s, end)
        if self.subs.pending:
            self.subs.save(self._sends_durable(), ctx.now)
        self.journal.append(self.subs.take_events(), ctx.now_ms)

    def topic_deleted(self, topic: str, now_ms: int) -> None:
        self.pump.forget(topic)
        for s in self.subs.topic_deleted(topic):
            self.queues.manager.forget_origin(s.id)
        self.journal.append(self.subs.take_events(), now_ms)

    # -- requests -----------------------------------------------------------------------------------------------
    def _durable(self, value: Any, now_ms: int) -> Outcome:
        end = self.journal.append(self.subs.take_events(), now_ms)
        plog = self.journal.plog
        return Answer(value) if plog is None else self.when_durable(plog, end, lambda: Answer(value))

    def subscribe(self, req: Subscribe, ctx: Context) -> Outcome:
        """Raises ``UnknownTopicOrPartitionError``, ``UnknownQueueError``, ``InvalidParameterValueError`` (the
        filter policy, ``start``, settings differing from an existing subscription of the queue),
        ``TooManySubscriptionsError``."""
        topic = self.log.topics.get(req.topic)
        if topic is None or is_internal_topic(req.topic):
            raise UnknownTopicOrPartitionError(f"subscribe: unknown topic {req.topic[:250]!r}", topic=req.topic[:250])
        for name in (req.queue, req.dead_letter_queue):
            if name is not None and name not in self.queues.manager.queues:
                raise UnknownQueueError(f"subscribe: queue {name[:250]!r} does not exist", queue=name[:250])
        cursors = {}
        for plog in topic.partitions:
            cursors[plog.partition] = self._start(plog, req.start)
        policy = req.filter_policy or None
        s, created = self.subs.subscribe(str(uuid.uuid4()), req.topic, Target(QUEUE_TARGET, req.queue), policy,
                                         req.filter_policy_scope, req.raw, req.dead_letter_queue, cursors,
                                         ctx.now_ms)
        if created:
            self.pump.mark_topic(req.topic)
        return self._durable(_info(s), ctx.now_ms)

    @staticmethod
    def _start(plog: PartitionLog, start: str | int) -> int:
        if start == START_END:
            return plog.high_watermark
        if start == START_BEGINNING:
            return plog.log_start_offset
        if type(start) is int and start >= 0:
            found = plog.offset_for_timestamp(start, plog.high_watermark)
            return plog.high_watermark if found is None else found[0]
        raise InvalidParameterValueError(
            f"start must be 'end', 'beginning' or a record timestamp in ms (>= 0), got {str(start)[:100]!r}",
            parameter="start")

    def unsubscribe(self, req: Unsubscribe, ctx: Context) -> Outcome:
        """Raises ``UnknownSubscriptionError``."""
        s = self.subs.unsubscribe(req.id)
        self.queues.manager.forget_origin(s.id)
        return self._durable(None, ctx.now_ms)

    def list(self, req: ListSubscriptions, ctx: Context) -> Outcome:
        subs = self.subs.by_id.values() if req.topic is None else self.subs.by_topic.get(req.topic, {}).values()
        return Answer(SubscriptionList(tuple(_info(s) for s in sorted(subs, key=lambda s: (s.topic, s.created_ms,
                                                                                              s.id)))))

    def describe(self, req: DescribeSubscription, ctx: Context) -> Outcome:
        """Raises ``UnknownSubscriptionError``."""
        s = self.subs.get(req.id)
        rows, behind, lag_s = lag(self.log, s, ctx.now_ms)
        return Answer(SubscriptionDescription(
            _info(s), tuple(PartitionCursor(p, c, hw, hw - c) for p, c, hw in rows), s.delivered, s.filtered,
            s.failed, s.dead_lettered, behind, lag_s, None if s.last_lag_ms is None else s.last_lag_ms / 1000,
            s.paused_until > ctx.now))


__all__ = [
    "DescribeSubscription", "FanoutApi", "ListSubscriptions", "PartitionCursor", "SUBSCRIPTIONS_TOPIC", "Subscribe",
    "SubscriptionDescription", "SubscriptionInfo", "SubscriptionList", "Unsubscribe",
]
