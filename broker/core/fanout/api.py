# The fan-out's requests and their handlers (SNS's Subscribe, Unsubscribe, ListSubscriptionsByTopic,
# GetSubscriptionAttributes, in millpond's names and units), and what drives delivery: the engine tells `woken` which
# keys moved (a partition's high watermark: records became durable; the queues' journal: sends became durable), asks
# `next_deadline` (now, while records wait) and runs `tick`, one bounded turn of pump.py at a time. A webhook's
# requests are handed out as jobs (`take_jobs`, through the engine's): http.py's POST runs in a worker thread, and
# its result comes back through the job's `done`, to be settled at the next tick with that tick's time. Sans-IO like
# every core: must not know about any wire protocol, sockets, clocks or trio.
from __future__ import annotations

import logging
import math
import random
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from millpond import __version__
from millpond.broker.core.fanout.filter_policy import MESSAGE_ATTRIBUTES
from millpond.broker.core.fanout.http import HttpPoster, HttpResult
from millpond.broker.core.fanout.journal import SUBSCRIPTIONS_TOPIC, SubscriptionJournal
from millpond.broker.core.fanout.pump import Pump, lag
from millpond.broker.core.fanout.subscriptions import QUEUE_TARGET, Subscription, Subscriptions, Target
from millpond.broker.core.fanout.webhook import (
    LOOPBACK,
    WEBHOOK_TARGET,
    AllowList,
    Delivery,
    DeliveryPolicy,
    check_url,
    request_headers,
)
from millpond.broker.core.log import LogManager, PartitionLog, is_internal_topic
from millpond.broker.core.outcomes import Answer, Context, Job, Outcome
from millpond.broker.core.queues.api import QueueApi
from millpond.broker.wire.errors import InvalidParameterValueError, UnknownQueueError, UnknownTopicOrPartitionError

START_END, START_BEGINNING = "end", "beginning"
WEBHOOK_REQUESTS_MAX = 16  # webhook requests in flight over the broker (worker threads; trio lends 40 in all)
DLQ_RETRY_S = 0.5  # a dead delivery whose dead-letter queue is full tries it again after this long

log = logging.getLogger("millpond.fanout")


# -- requests -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Subscribe:
    """As SNS Subscribe with protocol sqs (``queue``) or http/https (``url``): exactly one of them.
    ``filter_policy``: JSON text (SNS FilterPolicy; None or "": every record); ``filter_policy_scope``:
    ``"MessageAttributes"`` (record headers) or ``"MessageBody"`` (the JSON value); ``raw``: SNS
    RawMessageDelivery; ``start``: ``"end"`` (new records only, the default), ``"beginning"`` (the oldest record
    kept) or a record timestamp in ms (the first record at or after it, per partition). A webhook's delivery
    policy (webhook.py ``DeliveryPolicy``; None: its default, SNS's HTTP/S one): ``attempts_max``,
    ``min_delay_s``, ``max_delay_s``, ``total_s``, ``timeout_s``, ``concurrency_max``, ``rate_per_second``."""

    topic: str
    queue: str | None = None
    filter_policy: str | None = None
    filter_policy_scope: str = MESSAGE_ATTRIBUTES
    raw: bool = False
    dead_letter_queue: str | None = None
    start: str | int = START_END
    url: str | None = None
    attempts_max: int | None = None
    min_delay_s: float | None = None
    max_delay_s: float | None = None
    total_s: float | None = None
    timeout_s: float | None = None
    concurrency_max: int | None = None
    rate_per_second: float | None = None

    def delivery_policy(self) -> DeliveryPolicy | None:
        """The webhook delivery policy the request asks for (None: none of its fields given). Raises
        ``InvalidParameterValueError`` for a field out of range."""
        given = {name: getattr(self, name) for name in _POLICY_FIELDS if getattr(self, name) is not None}
        return DeliveryPolicy(**given) if given else None


_POLICY_FIELDS = ("attempts_max", "min_delay_s", "max_delay_s", "total_s", "timeout_s", "concurrency_max",
                  "rate_per_second")


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
    """A subscription's settings: its target is ``queue`` or ``url`` (the other None); a webhook has its
    ``delivery`` policy."""

    id: str
    topic: str
    queue: str | None
    filter_policy: str | None
    filter_policy_scope: str
    raw: bool
    dead_letter_queue: str | None
    created_ms: int
    url: str | None = None
    delivery: DeliveryPolicy | None = None


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
    webhook = s.target.kind == WEBHOOK_TARGET
    return SubscriptionInfo(s.id, s.topic, None if webhook else s.target.name, s.filter_policy, s.scope, s.raw,
                            s.dead_letter_queue, s.created_ms, s.target.name if webhook else None, s.delivery)


# -- handlers -----------------------------------------------------------------------------------------------------
class FanoutApi:
    """Answers the subscription requests and delivers records into queues. ``queues`` is the broker's QueueApi
    (sends go through its manager and journal); ``when_durable(plog, offset, answer)`` holds an answer until
    ``plog`` is durable up to ``offset``. Webhooks: ``webhook_allow`` the hosts and networks they may reach,
    ``webhook_requests_max`` requests in flight over the broker, ``poster`` what makes the POST (http.py's
    ``HttpPoster`` over the allow-list, made at the first request when None), ``rng`` the jitter's draws."""

    def __init__(self, log: LogManager, queues: QueueApi, *,
                 when_durable: Callable[[PartitionLog, int, Callable[[], Outcome]], Outcome],
                 webhook_allow: AllowList | None = None, webhook_requests_max: int = WEBHOOK_REQUESTS_MAX,
                 poster: Any = None, rng: random.Random | None = None, **pump: Any) -> None:
        self.log = log
        self.queues = queues
        self.when_durable = when_durable
        self.subs = Subscriptions()
        self.journal = SubscriptionJournal(log)
        self.pump = Pump(log, self.subs, queues.manager, **pump)
        self.allow = AllowList.parse(LOOPBACK) if webhook_allow is None else webhook_allow
        self.requests_max = webhook_requests_max
        self.poster = poster
        self.rng = rng or random.Random()
        self.in_flight = 0  # webhook requests out
        self._jobs: list[Job] = []
        self._finished: list[tuple[Subscription, Delivery, Any]] = []  # results back from the worker threads
        self._dead: dict[tuple[str, int, int], tuple[Subscription, Delivery]] = {}  # waiting for room in their DLQ
        self._webhook_due = math.inf  # when a webhook request may next start

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
        """Now while records wait or webhook results are back; else the next retry of a paused subscription, of
        a webhook request or cursor save due (the queues' journal becoming durable moves the server's timer: it
        asks again after every fsync)."""
        if self.pump.dirty or self._finished:
            return -math.inf
        retry = min(self.pump.retry_at(), self._webhook_due)
        return min(retry, self.subs.save_at(self._sends_durable())) if self.subs.pending else retry

    def tick(self, ctx: Context) -> None:
        """One bounded turn of delivery, then journal the sends and save the cursors whose sends are durable."""
        self.pump.resume_due(ctx.now)
        moved = self._settle(ctx.now, ctx.now_ms) if self._finished or self._dead else []
        if self.pump.dirty:
            moved += self.pump.turn(ctx.now, ctx.now_ms)
        if self.pump.active:
            self._start_requests(ctx.now)
        self._webhook_due = self._next_due() if self.pump.active or self._dead else math.inf
        end = self.queues.journal.append(self.queues.manager.take_events(), ctx.now, ctx.now_ms)
        for s in moved:
            self.subs.progressed(s, end)
        if self.subs.pending:
            self.subs.save(self._sends_durable(), ctx.now)
        self.journal.append(self.subs.take_events(), ctx.now_ms)

    # -- webhooks -----------------------------------------------------------------------------------------------
    def take_jobs(self) -> list[Job]:
        """The webhook requests to run (each a ``Job``: the POST in a worker thread, its result handed back)."""
        jobs, self._jobs = self._jobs, []
        return jobs

    def _start_requests(self, now: float) -> None:
        """Hand out the requests due at ``now``: each subscription's ``concurrency_max`` and pacing, and
        ``webhook_requests_max`` over the broker (the subscriptions take turns for it)."""
        if self.poster is None:
            self.poster = HttpPoster(self.allow)
        for sub_id in list(self.pump.active):
            s = self.pump.active.pop(sub_id)
            w = s.webhook
            if w is None or self.subs.by_id.get(sub_id) is not s:
                continue
            if w.held:
                self.pump.active[sub_id] = s  # to the end: the next tick starts with the others
            room = self.requests_max - self.in_flight
            if room <= 0:
                continue
            for d in w.startable(now, room):
                self.in_flight += 1
                self._jobs.append(self._request(s, d))

    def _next_due(self) -> float:
        due = min((d.due for _, d in self._dead.values()), default=math.inf)
        if self.in_flight < self.requests_max:
            for s in self.pump.active.values():
                assert s.webhook is not None
                due = min(due, s.webhook.next_due())
        return due

    def _request(self, s: Subscription, d: Delivery) -> Job:
        poster, policy = self.poster, s.delivery
        assert policy is not None
        headers = request_headers(s.topic, s.id, d.message_id, d.partition, d.offset, d.attempts, s.raw,
                                  f"millpond/{__version__}")
        url, body, timeout_s = s.target.name, d.body, policy.timeout_s
        return Job(lambda: poster.post(url, body, headers, timeout_s),
                   lambda result: self._finished.append((s, d, result)))

    def _settle(self, now: float, now_ms: int) -> list[Subscription]:
        """Apply the webhook results back since the last tick: a 2xx answer delivers, a failure is retried
        after its backoff or, out of attempts or time, dead-lettered; the dead-letter sends that found their
        queue full are tried again. Returns the subscriptions whose cursors moved."""
        finished, self._finished = self._finished, []
        moved: dict[str, Subscription] = {}
        for s, d, result in finished:
            self.in_flight -= 1
            w = s.webhook
            if w is None or self.subs.by_id.get(s.id) is not s:
                continue  # unsubscribed meanwhile
            ok = isinstance(result, HttpResult) and result.ok
            permanent = isinstance(result, HttpResult) and result.permanent
            verdict = w.finished(d, ok, permanent, now, self.rng.random())
            if verdict == "delivered":
                s.delivered += 1
                s.last_lag_ms = now_ms - d.record.timestamp_ms
            elif verdict == "dead":
                error = result.error if isinstance(result, HttpResult) else repr(result)
                log.warning("subscription %s: record %s/%d@%d not delivered to %s after %d attempt(s): %s", s.id,
                            s.topic, d.partition, d.offset, s.target.name, d.attempts, error)
                d.due = -math.inf
                self._dead[(s.id, d.partition, d.offset)] = (s, d)
                continue
            else:
                self.pump.active[s.id] = s
                continue
            self._settled(s, d, moved)
        for key, (s, d) in list(self._dead.items()):
            if d.due > now:
                continue
            if self.subs.by_id.get(s.id) is not s:
                del self._dead[key]
            elif self.pump.dead_letter(s, d.record, now, now_ms):
                del self._dead[key]
                self._settled(s, d, moved)
            else:
                d.due = now + DLQ_RETRY_S
        return list(moved.values())

    def _settled(self, s: Subscription, d: Delivery, moved: dict[str, Subscription]) -> None:
        w = s.webhook
        assert w is not None
        w.settle(d)
        before = s.cursors.get(d.partition, 0)
        s.cursors[d.partition] = w.cursor(d.partition, before)
        if s.cursors[d.partition] != before:
            moved[s.id] = s
        self.pump.dirty[(s.topic, d.partition)] = None  # room in its window: look for more records
        if w.held:
            self.pump.active[s.id] = s

    def close(self) -> None:
        """Let go of the HTTP client's connections."""
        if self.poster is not None and hasattr(self.poster, "close"):
            self.poster.close()

    def topic_deleted(self, topic: str, now_ms: int) -> None:
        self.pump.forget(topic)
        for s in self.subs.topic_deleted(topic):
            self.pump.active.pop(s.id, None)
            self.queues.manager.forget_origin(s.id)
        self.journal.append(self.subs.take_events(), now_ms)

    # -- requests -----------------------------------------------------------------------------------------------
    def _durable(self, value: Any, now_ms: int) -> Outcome:
        end = self.journal.append(self.subs.take_events(), now_ms)
        plog = self.journal.plog
        return Answer(value) if plog is None else self.when_durable(plog, end, lambda: Answer(value))

    def subscribe(self, req: Subscribe, ctx: Context) -> Outcome:
        """Raises ``UnknownTopicOrPartitionError``, ``UnknownQueueError``, ``InvalidParameterValueError`` (neither
        or both of ``queue`` and ``url``; a URL refused by ``check_url``: not http(s), user info, too long, its host
        not in ``webhook_allow``; a delivery policy field out of range or given with a queue; the filter policy,
        ``start``, settings differing from an existing subscription of the target), ``TooManySubscriptionsError``."""
        topic = self.log.topics.get(req.topic)
        if topic is None or is_internal_topic(req.topic):
            raise UnknownTopicOrPartitionError(f"subscribe: unknown topic {req.topic[:250]!r}", topic=req.topic[:250])
        if (req.queue is None) == (req.url is None):
            raise InvalidParameterValueError("subscribe: give a queue or a url (one of them)", parameter="queue")
        delivery = req.delivery_policy()
        if req.url is not None:
            target = Target(WEBHOOK_TARGET, check_url(req.url, self.allow).url)
            delivery = delivery or DeliveryPolicy()
        elif delivery is not None:
            raise InvalidParameterValueError("subscribe: a delivery policy (attempts_max, ...) is for a url target",
                                             parameter="queue")
        else:
            target = Target(QUEUE_TARGET, req.queue)
        for name in (req.queue, req.dead_letter_queue):
            if name is not None and name not in self.queues.manager.queues:
                raise UnknownQueueError(f"subscribe: queue {name[:250]!r} does not exist", queue=name[:250])
        cursors = {}
        for plog in topic.partitions:
            cursors[plog.partition] = self._start(plog, req.start)
        policy = req.filter_policy or None
        s, created = self.subs.subscribe(str(uuid.uuid4()), req.topic, target, policy, req.filter_policy_scope,
                                         req.raw, req.dead_letter_queue, cursors, ctx.now_ms, delivery)
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
        self.pump.active.pop(s.id, None)
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
