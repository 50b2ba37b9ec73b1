# The engine: the one entry point of the broker's cores. Typed requests in (`handle(request, ctx)`), outcomes out
# (broker/core/outcomes.py); which keys woke, which deadline comes next, which background work and which fsync plan
# are due. Each concept (log, groups, limits, queues) is a core folder whose api module registers its handlers here, so a
# new concept never edits the server. Sans-IO: takes `ctx`/`now`, never waits. Must not know about any protocol,
# sockets or trio.
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable

from millpond import __version__
from millpond.broker.config import BrokerConfig
from millpond.broker.core.fanout.api import FanoutApi
from millpond.broker.core.fanout.webhook import AllowList
from millpond.broker.core.groups import GroupConfig, GroupCoordinator, OffsetStore
from millpond.broker.core.groups.api import GroupApi
from millpond.broker.core.limits.api import LimitApi, check_policies
from millpond.broker.core.limits.registry import Algorithms
from millpond.broker.core.log import LogManager, is_internal_topic
from millpond.broker.core.log.api import LogApi, partition_key
from millpond.broker.core.log.internal import CHECKPOINT_BACKGROUND_INTERVAL_S
from millpond.broker.core.outcomes import Answer, Context, Job, Outcome
from millpond.broker.core.queues.api import QueueApi
from millpond.broker.core.queues.attributes import BATCH_ENTRIES_MAX
from millpond.broker.core.queues.push import PushApi
from millpond.broker.wire.errors import InvalidConfigError, UnknownApiError

log = logging.getLogger("millpond.engine")

LIMITS_SWEEP_INTERVAL_S = 10.0


@dataclass(frozen=True, slots=True)
class Hello:
    """The handshake's request, once the front door has checked it (protocol version, a client id of at most 255
    characters)."""

    client_id: str = ""


@dataclass(frozen=True, slots=True)
class BrokerLimits:
    frame_bytes_max: int
    batch_bytes_max: int
    requests_in_flight_max: int
    partitions_max: int
    fetch_bytes_max: int
    queue_batch_entries_max: int


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    broker_version: str
    fsync: str
    limits: BrokerLimits


class Engine:
    """Every core of one broker over one ``LogManager``. Call ``open(ctx)`` first and ``close()`` last.

    ``handle`` raises a ``MillpondError`` subclass for a refused request and changes nothing in that case. After
    any call, ``take_woken()`` and ``take_jobs()`` give what it woke and what background work it handed out.
    """

    @classmethod
    def for_directory(cls, config: BrokerConfig, data_dir: Path) -> "Engine":
        """An engine over the stores ``config`` describes (``storage="file"``: under ``data_dir``; ``"memory"``:
        nothing on disk, ``data_dir`` unused). Not opened yet."""
        return cls(config, LogManager(
            data_dir if config.storage == "file" else None, storage=config.storage, defaults=config.topic_defaults, batch_bytes_max=config.batch_bytes_max,
            partitions_max=config.partitions_max, fsync_mode=config.fsync, sync_method=config.sync_method,
            logger=logging.getLogger("millpond.log"),
        ))

    def __init__(self, config: BrokerConfig, log_manager: LogManager) -> None:
        self.config = config
        self.log = log_manager
        self.offsets = OffsetStore(log_manager)
        try:
            algorithms = Algorithms(config.limit_algorithms)
        except ValueError as exc:
            raise InvalidConfigError(str(exc)) from None
        self.limits = LimitApi(log_manager.data_dir, check_policies(list(config.limits), algorithms),
                               config.default_limit_policy(), algorithms)
        self.groups = GroupCoordinator(self._partition_count, self.offsets, GroupConfig())
        self._woken: set[Hashable] = set()
        self._retention_at = math.inf
        self._sweep_at = math.inf
        self.log_api = LogApi(config, log_manager, admit=self.limits.admit, topics_changed=self._topics_changed,
                              wake=self._woken.add)
        group_api = GroupApi(log_manager, self.groups, self.offsets, self._when_offsets_durable)
        self.queues = QueueApi(log_manager, wake=self._woken.add, when_durable=self.log_api.when_durable,
                               admit=self.limits.admit, receivable=self.limits.receivable,
                               received=self.limits.received, bytes_max=config.fetch_bytes_max,
                               messages_max=config.queue_messages_max)
        self._handlers: dict[type, Callable[[Any, Context], Outcome]] = {Hello: self._hello}
        self.push = PushApi(self.queues, wake=self._woken.add)
        try:
            allow = AllowList.parse(config.webhook_allow)
        except ValueError as exc:
            raise InvalidConfigError(str(exc)) from None
        self.fanout = FanoutApi(log_manager, self.queues, when_durable=self.log_api.when_durable,
                                webhook_allow=allow, webhook_requests_max=config.webhook_requests_max)
        for api in (self.log_api, group_api, self.limits, self.queues, self.push, self.fanout):
            self._handlers.update(api.handlers())
        # the internal topics' owners, for background checkpoint steps (internal.py)
        self._journals = (self.offsets, self.queues.journal, self.fanout.journal)
        self._checkpoint_at = -math.inf

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def open(self, ctx: Context) -> None:
        """Open the log (recovering every partition), replay committed offsets, load limit policies. Blocking file
        work: call before serving. Raises ``StorageError``, ``InvalidConfigError``."""
        self.log.open(ctx.now_ms)
        self.offsets.open(ctx.now_ms)
        self.queues.open(ctx)
        self.fanout.open(ctx)  # after the queues: it reads their fan-out marks
        self.limits.open()
        self._retention_at = ctx.now + self.config.retention_check_interval_s
        self._sweep_at = ctx.now + LIMITS_SWEEP_INTERVAL_S

    def close(self) -> None:
        """Fsync and close every store (blocking; call at the end)."""
        self.queues.journal.write_pending()
        self.fanout.close()
        self.log.close()

    def abandon(self) -> None:
        """Let go of every store as a killed process would (after a failed start): the data directory is free."""
        self.log.abandon()

    # -- requests -----------------------------------------------------------------------------------------------
    def handle(self, request: Any, ctx: Context) -> Outcome:
        """Answer one typed request: ``Answer``, ``Wait`` or ``Offload`` (broker/core/outcomes.py)."""
        handler = self._handlers.get(type(request))
        if handler is None:
            raise UnknownApiError(f"no handler for {type(request).__name__}")
        return handler(request, ctx)

    def _hello(self, req: Hello, ctx: Context) -> Outcome:
        c = self.config
        return Answer(BrokerInfo(__version__, c.fsync, BrokerLimits(
            c.frame_bytes_max, c.batch_bytes_max, c.requests_in_flight_max, c.partitions_max, c.fetch_bytes_max,
            BATCH_ENTRIES_MAX)))

    def _partition_count(self, topic: str) -> int | None:
        t = self.log.topics.get(topic)
        return None if t is None or is_internal_topic(topic) else len(t.partitions)

    def _topics_changed(self, deleted: str | None, now_ms: int) -> Outcome | None:
        self.groups.topics_changed()
        if deleted is None:
            return None
        self.fanout.topic_deleted(deleted, now_ms)  # as SNS DeleteTopic: its subscriptions go with it
        at = self.offsets.delete_topic(deleted, now_ms)  # a deleted topic's committed offsets go with it
        return None if at is None else self._when_offsets_durable(at, lambda: Answer(None))

    def _when_offsets_durable(self, offset: int, answer: Callable[[], Outcome]) -> Outcome:
        plog = self.offsets.partition_log
        assert plog is not None  # OffsetStore.open created it
        return self.log_api.when_durable(plog, offset, answer)

    # -- what the server asks between requests ------------------------------------------------------------------
    def take_woken(self) -> set[Hashable]:
        """The keys woken since the last call (waiters on them resume)."""
        woken = set(self._woken)
        self._woken.clear()
        self.fanout.woken(woken)  # durable records to fan out, durable queue sends whose cursors may be saved
        return woken

    def take_jobs(self) -> list[Job]:
        """Background work handed out since the last call, to run in worker threads (webhook requests too)."""
        return self.log.take_jobs() + self.fanout.take_jobs()

    def next_deadline(self) -> float:
        """When ``tick`` next has work (monotonic seconds; ``inf``: nothing scheduled)."""
        group = self.groups.next_deadline()
        return min(self._retention_at, self._sweep_at, math.inf if group is None else group,
                   self.queues.next_deadline(), self.fanout.next_deadline(),
                   self._checkpoint_at if self._checkpointing() else math.inf)

    def _checkpointing(self) -> bool:
        for journal in self._journals:  # a loop, not any(): this runs after every request
            cps = journal.checkpoints
            if cps is not None and cps.writing:
                return True
        return False

    def tick(self, ctx: Context) -> set[Hashable]:
        """Run what is due at ``ctx.now``: group members' session expiry, queue timers, fan-out, background
        checkpoint steps of the internal topics, retention, limiter sweeps.
        Returns the keys woken."""
        now = ctx.now
        for group, member in self.groups.expire(now):
            log.info("consumer group %s: member %s expired", group, member)
        self.queues.tick(ctx)  # visibility timeouts and delays ending, retention, FIFO deduplication windows
        self.fanout.tick(ctx)  # one bounded turn of fan-out delivery (next_deadline says now while more waits)
        if now >= self._checkpoint_at and self._checkpointing():
            self._checkpoint_at = now + CHECKPOINT_BACKGROUND_INTERVAL_S
            for journal in self._journals:
                journal.background_step(ctx.now_ms, now)
        if now >= self._retention_at:
            self._retention_at = now + self.config.retention_check_interval_s
            deleted = self.log.enforce_retention(ctx.now_ms)
            if deleted:
                log.info("retention deleted %d segment(s)", deleted)
        if now >= self._sweep_at:
            self._sweep_at = now + LIMITS_SWEEP_INTERVAL_S
            # gives back the memory of limiter keys that are back to a fresh key's state; bounded work per call
            self.limits.policies.sweep(int(now * 1e9), max_checks=1000)
        return self.take_woken()

    # -- durability ---------------------------------------------------------------------------------------------
    def sync_plan(self) -> Any:
        """What to fsync now (``plan.run()`` in a worker thread), or None when everything is durable. What the
        cores held back is written first (``write_held``)."""
        self.write_held()
        return self.log.sync_plan()

    def write_held(self) -> bool:
        """Write what the cores held back for the group commit (fsync="always": the queues' journal records of the
        requests handled since the last call, as one write); the server calls it after each pass of requests (one
        read's frames) and before each sync plan. Returns False when a write failed: its waiters are woken
        (``take_woken``) and answered STORAGE_ERROR."""
        journal = self.queues.journal
        if journal.write_pending():
            return True
        self._woken.add(partition_key(journal.plog.topic, journal.plog.partition))
        return False

    def synced(self, plan: Any, error: OSError | None) -> set[Hashable]:
        """Apply a finished plan: high watermarks move (or the failure is recorded, answered to the writers
        waiting). Returns the keys woken."""
        for plog in self.log.synced(plan, error):
            self._woken.add(partition_key(plog.topic, plog.partition))
        return self.take_woken()


__all__ = ["BrokerInfo", "BrokerLimits", "Engine", "Hello"]
