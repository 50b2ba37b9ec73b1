# The log's requests and their handlers: topics, produce, fetch, offsets, idempotent producer ids. Typed requests
# in, outcomes out (broker/core/outcomes.py); file work is handed out as Offload, waiting as Wait. Sans-IO: never
# reads a clock, never waits. Must not know about any wire protocol, sockets or trio.
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Callable, Hashable, NamedTuple

from millpond.broker.config import BrokerConfig
from millpond.broker.core.log.manager import LogManager, Topic
from millpond.broker.core.log.partition import PartitionLog
from millpond.broker.core.log.topic_config import is_internal_topic
from millpond.broker.core.outcomes import NEVER, Answer, Context, Offload, Outcome, Wait, all_of
from millpond.broker.wire.errors import (
    CorruptRangeError,
    InvalidRequestError,
    InvalidTopicNameError,
    MillpondError,
    StorageError,
    UnknownTopicOrPartitionError,
)

FETCH_WAIT_S_MAX = 300.0
_CORRUPT_DETAILS_BYTES = 1024  # answer room a CORRUPT_RANGE row's details need (message, names, three offsets)


def partition_key(topic: str, partition: int) -> Hashable:
    """The wake key of one partition: woken when its high watermark moves, its sync fails or it is deleted."""
    return ("log", topic, partition)


# -- requests -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CreateTopic:
    name: str
    partitions: int | None = None  # None: the broker's default
    config: dict[str, Any] | None = None  # topic config keys over the broker's defaults (TopicConfig.from_wire)


@dataclass(frozen=True, slots=True)
class DeleteTopic:
    name: str


@dataclass(frozen=True, slots=True)
class AddPartitions:
    name: str
    partitions: int  # the new total


@dataclass(frozen=True, slots=True)
class ListTopics:
    pass


@dataclass(frozen=True, slots=True)
class DescribeTopic:
    name: str


@dataclass(frozen=True, slots=True)
class Metadata:
    topics: tuple[str, ...] | None = None  # None: every user topic


@dataclass(frozen=True, slots=True)
class Produce:
    topic: str
    partition: int
    batch: bytes  # one record batch: Kafka's record batch v2 (broker/wire/batch.py, docs/protocol.md)


class ProduceBatch(NamedTuple):
    topic: str
    partition: int
    batch: bytes  # one record batch, as Produce's


@dataclass(frozen=True, slots=True)
class ProduceBatches:
    """Several batches in one request (Kafka's ProduceRequest carries every partition a producer has ready for a
    broker): each is produced as a ``Produce`` would be, with its own result; the request is answered once all are
    settled. At most ``BATCHES_PER_REQUEST_MAX``."""

    batches: tuple[ProduceBatch, ...]


BATCHES_PER_REQUEST_MAX = 10_000


class FetchPartition(NamedTuple):
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Fetch:
    partitions: tuple[FetchPartition, ...]
    max_bytes: int | None = None  # total over partitions; None: the broker's fetch_bytes_max
    max_wait_s: float = 0.0  # long poll: answer at once when any partition has data, else after this


@dataclass(frozen=True, slots=True)
class ListOffsets:
    topic: str
    partition: int
    spec: str | int = "latest"  # "earliest", "latest" or a timestamp in ms (Kafka's ListOffsets)


@dataclass(frozen=True, slots=True)
class InitProducer:
    pass


# -- answers ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TopicCreated:
    name: str
    partitions: int
    config: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PartitionsAdded:
    name: str
    partitions: int


@dataclass(frozen=True, slots=True)
class Topics:
    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PartitionDescription:
    partition: int
    log_start_offset: int
    log_end_offset: int
    high_watermark: int
    size_bytes: int
    segments: int


@dataclass(frozen=True, slots=True)
class TopicDescription:
    name: str
    config: dict[str, Any]
    partitions: tuple[PartitionDescription, ...]


@dataclass(frozen=True, slots=True)
class PartitionCounts:
    topics: dict[str, int]


@dataclass(frozen=True, slots=True)
class Produced:
    partition: int
    base_offset: int
    timestamp_ms: int  # the batch's max timestamp


class BatchResult(NamedTuple):
    """One batch of a ``ProduceBatches``: ``produced``, or the ``error`` that refused it (as Kafka's per-partition
    error codes in a ProduceResponse)."""

    topic: str
    partition: int
    produced: Produced | None
    error: Exception | None


@dataclass(frozen=True, slots=True)
class ProducedBatches:
    results: tuple[BatchResult, ...]  # in the request's order


class FetchedPartition(NamedTuple):
    """One partition of a fetch answer: ``code`` 0 or an error code; ``data`` whole stored batches (a view of the
    store's bytes: encode it without copying). With CORRUPT_RANGE, ``data`` holds the intact batches before the
    damage and ``corrupt`` the error's details (``first_offset``, ``last_offset``, ``next_offset``, ``message``)."""

    topic: str
    partition: int
    code: int
    log_start_offset: int
    high_watermark: int
    data: Any
    corrupt: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Fetched:
    partitions: tuple[FetchedPartition, ...]


@dataclass(frozen=True, slots=True)
class OffsetFound:
    offset: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class ProducerId:
    producer_id: int
    producer_epoch: int


# -- handlers -----------------------------------------------------------------------------------------------------
class LogApi:
    """Answers the log's requests over one ``LogManager``. ``admit(ctx, topic, records, nbytes) -> delay_s`` is the
    limits' admission check (raises when refused); ``topics_changed(deleted)`` tells the other cores (groups,
    committed offsets) and may return an outcome to answer after (a durable write); ``wake`` wakes keys."""

    def __init__(self, config: BrokerConfig, log: LogManager, *, admit: Callable[..., float],
                 topics_changed: Callable[[str | None, int], Outcome | None],
                 wake: Callable[[Hashable], None]) -> None:
        self.config = config
        self.log = log
        self.admit = admit
        self.topics_changed = topics_changed
        self.wake = wake
        self._held_until: dict[tuple[PartitionLog, int], float] = {}  # (partition, producer id) -> monotonic s

    def handlers(self) -> dict[type, Callable[[Any, Context], Outcome]]:
        return {
            CreateTopic: self.create_topic, DeleteTopic: self.delete_topic, AddPartitions: self.add_partitions,
            ListTopics: self.list_topics, DescribeTopic: self.describe_topic, Metadata: self.metadata,
            Produce: self.produce, ProduceBatches: self.produce_batches, Fetch: self.fetch,
            ListOffsets: self.list_offsets,
            InitProducer: self.init_producer,
        }

    def _user_topic(self, name: str, api: str) -> None:
        if is_internal_topic(name):
            raise InvalidTopicNameError(f"{api}: topic {name!r} is internal to the broker")

    def wake_topic(self, topic: Topic) -> None:
        for plog in topic.partitions:
            self.wake(partition_key(plog.topic, plog.partition))

    # -- topics (file work off the event loop: reserve, build in a worker thread, register) -----------------------
    def create_topic(self, req: CreateTopic, ctx: Context) -> Outcome:
        partitions = self.config.topic_defaults.partitions if req.partitions is None else req.partitions
        pending = self.log.begin_create_topic(req.name, partitions, req.config, ctx.now_ms)

        def created(ctx: Context, result: Any) -> Outcome:
            topic = self.log.finish_create_topic(pending, result)
            self.topics_changed(None, ctx.now_ms)
            return Answer(TopicCreated(topic.name, len(topic.partitions), topic.config.to_wire()))

        return Offload(pending.build, created)

    def add_partitions(self, req: AddPartitions, ctx: Context) -> Outcome:
        self._user_topic(req.name, "add_partitions")
        pending = self.log.begin_add_partitions(req.name, req.partitions, ctx.now_ms)

        def added(ctx: Context, result: Any) -> Outcome:
            topic = self.log.finish_add_partitions(pending, result)
            self.topics_changed(None, ctx.now_ms)
            return Answer(PartitionsAdded(req.name, len(topic.partitions)))

        return Offload(pending.build, added)

    def delete_topic(self, req: DeleteTopic, ctx: Context) -> Outcome:
        self._user_topic(req.name, "delete_topic")
        pending = self.log.begin_delete_topic(req.name)
        self.wake_topic(pending.topic)  # its waiters answer at once: the topic is gone

        def deleted(ctx: Context, result: Any) -> Outcome:
            self.log.finish_delete_topic(pending, result)
            return self.topics_changed(req.name, ctx.now_ms) or Answer(None)

        return Offload(pending.build, deleted)

    def list_topics(self, req: ListTopics, ctx: Context) -> Outcome:
        return Answer(Topics(tuple(sorted(n for n in self.log.topics if not is_internal_topic(n)))))

    def describe_topic(self, req: DescribeTopic, ctx: Context) -> Outcome:
        topic = self.log.topics.get(req.name)
        if topic is None:
            raise UnknownTopicOrPartitionError(f"unknown topic {req.name!r}")
        return Answer(TopicDescription(topic.name, topic.config.to_wire(), tuple(
            PartitionDescription(p.partition, p.log_start_offset, p.log_end_offset, p.high_watermark, p.size_bytes,
                                 p.segment_count)
            for p in topic.partitions)))

    def metadata(self, req: Metadata, ctx: Context) -> Outcome:
        topics = self.log.topics
        if req.topics is None:
            return Answer(PartitionCounts({n: len(t.partitions) for n, t in topics.items()
                                           if not is_internal_topic(n)}))
        return Answer(PartitionCounts({n: len(topics[n].partitions) for n in req.topics if n in topics}))

    # -- produce ------------------------------------------------------------------------------------------------
    def produce(self, req: Produce, ctx: Context) -> Outcome:
        """Validate, pass the admission check, append; answered once durable (``fsync="always"``). A shaping policy
        delays the append (the leaky bucket's queue form, as nginx limit_req with burst and delay). Raises the
        refusals of the batch format's ``check`` (Kafka's record batch v2, checked completely: header fields,
        CRC-32C, every record) and of the limits, having changed nothing."""
        self._user_topic(req.topic, "produce")
        plog = self.log.partition(req.topic, req.partition)
        blob = req.batch
        header = self.log.format.check(blob, self.config.batch_bytes_max)
        pid = header.producer_id
        if pid >= 0:  # sequence first: a retry already stored, or a batch out of order, is not charged to limits
            stored_at = plog.producers.check(pid, header.producer_epoch, header.base_sequence, header.record_count)
            if stored_at is not None:
                return self._when_durable(plog, Produced(req.partition, stored_at, header.max_timestamp_ms),
                                          stored_at + header.record_count)
        delay_s = self.admit(ctx, topic=req.topic, records=header.record_count, nbytes=len(blob))
        behind_held = pid >= 0 and plog.producers.held(pid)
        if behind_held:
            # behind a held batch of the same producer: leave after it, never before, even when its time has come
            # and its timer has not run yet (equal deadlines resume in the order they were set)
            delay_s = max(delay_s, self._held_until.get((plog, pid), 0.0) - ctx.now, 0.0)
        if delay_s > 0 or behind_held:
            if pid >= 0:
                plog.producers.hold(pid, header.producer_epoch, header.base_sequence, header.record_count)
                self._held_until[(plog, pid)] = ctx.now + delay_s
            return Wait((), ctx.now + delay_s, lambda ctx, _: self._complete_shaped(plog, blob, header, ctx),
                        abandon=lambda ctx: self._release(plog, pid))
        return self._append(plog, blob, header, ctx.now_ms, sequence_checked=True)  # checked above, nothing since

    def produce_batches(self, req: ProduceBatches, ctx: Context) -> Outcome:
        """Each batch as ``produce`` (validated, admitted, appended, answered once durable), in the request's
        order; one refused batch refuses only itself. Raises ``InvalidRequestError`` for no batches or more than
        ``BATCHES_PER_REQUEST_MAX``."""
        n = len(req.batches)
        if not 1 <= n <= BATCHES_PER_REQUEST_MAX:
            raise InvalidRequestError(f"produce_batches takes 1 to {BATCHES_PER_REQUEST_MAX} batches, got {n}",
                                      field="batches")
        parts: list[Outcome | Exception] = []
        for topic, partition, batch in req.batches:
            try:
                parts.append(self.produce(Produce(topic, partition, batch), ctx))
            except MillpondError as exc:
                parts.append(exc)

        def combine(results: list[Any]) -> ProducedBatches:
            return ProducedBatches(tuple(
                BatchResult(b.topic, b.partition, None, r) if isinstance(r, Exception)
                else BatchResult(b.topic, b.partition, r, None) for b, r in zip(req.batches, results)))

        return all_of(parts, combine)

    def _release(self, plog: PartitionLog, pid: int) -> None:
        if pid >= 0:
            plog.producers.release(pid)
            self._held_until.pop((plog, pid), None)

    def _complete_shaped(self, plog: PartitionLog, blob: bytes, header: Any, ctx: Context) -> Outcome:
        """Append a produce whose shaping delay is over (already admitted and charged). The sequence is checked
        again: during the delay the batch may have been stored by a retry, or fenced by a newer epoch."""
        pid = header.producer_id
        try:
            self._check_alive(plog)
            return self._append(plog, blob, header, ctx.now_ms, sequence_checked=False)
        except Exception:
            self._release(plog, pid)
            raise
        finally:
            if pid >= 0 and not plog.producers.held(pid):
                self._held_until.pop((plog, pid), None)

    def _append(self, plog: PartitionLog, blob: bytes, header: Any, now_ms: int, *,
                sequence_checked: bool) -> Outcome:
        base = plog.append(blob, header, now_ms, sequence_checked=sequence_checked)
        end = base + header.record_count
        if plog.high_watermark >= end:
            self.wake(partition_key(plog.topic, plog.partition))
        return self._when_durable(plog, Produced(plog.partition, base, header.max_timestamp_ms), end)

    def _check_alive(self, plog: PartitionLog) -> None:
        topic = self.log.topics.get(plog.topic)
        if topic is None or plog.partition >= len(topic.partitions) or topic.partitions[plog.partition] is not plog:
            raise UnknownTopicOrPartitionError(f"topic {plog.topic!r} was deleted before the write was durable",
                                               topic=plog.topic)

    def _when_durable(self, plog: PartitionLog, answer: Any, offset: int) -> Outcome:
        """``Answer(answer)`` once ``plog``'s high watermark reaches ``offset``; a sync failing meanwhile answers
        ``STORAGE_ERROR`` (never acknowledge what may not be on disk: the producer retries)."""
        return self.when_durable(plog, offset, lambda: Answer(answer))

    def when_durable(self, plog: PartitionLog, offset: int, answer: Callable[[], Outcome]) -> Outcome:
        """``answer()`` once ``plog``'s high watermark reaches ``offset``: at once, or as a ``Wait`` on its key."""
        if plog.high_watermark >= offset:
            return answer()
        failures = plog.sync_failures
        key = partition_key(plog.topic, plog.partition)

        def resume(ctx: Context, timed_out: bool) -> Outcome:
            if plog.high_watermark >= offset:
                return answer()
            self._check_alive(plog)
            if plog.sync_failures != failures:
                raise StorageError(f"fsync of {plog.topic}/{plog.partition} failed; the write may not be durable")
            return Wait((key,), NEVER, resume)

        return Wait((key,), NEVER, resume)

    # -- fetch --------------------------------------------------------------------------------------------------
    def fetch(self, req: Fetch, ctx: Context) -> Outcome:
        """Read every partition; answer at once if any has data or an error, else wait (long poll) until one does
        or ``max_wait_s`` passes, as Kafka's Fetch with max_wait_ms."""
        if not req.partitions:
            raise InvalidRequestError("fetch: partitions must not be empty")
        max_bytes = self.config.fetch_bytes_max if req.max_bytes is None else req.max_bytes
        if max_bytes < 1:
            raise InvalidRequestError(f"fetch: max_bytes must be >= 1, got {max_bytes}")
        max_bytes = min(max_bytes, self.config.fetch_bytes_max)
        answer, ready = self._read(req.partitions, max_bytes)
        wait_s = min(req.max_wait_s, FETCH_WAIT_S_MAX)
        if ready or wait_s <= 0:
            return answer
        keys = tuple({partition_key(t, p) for t, p, _ in req.partitions})
        until = ctx.now + wait_s

        def resume(ctx: Context, timed_out: bool) -> Outcome:
            answer, ready = self._read(req.partitions, max_bytes)
            return answer if ready or timed_out else Wait(keys, until, resume)

        return Wait(keys, until, resume)

    def _read(self, specs: tuple[FetchPartition, ...], max_bytes: int) -> tuple[Answer, bool]:
        remaining = max_bytes
        rows: list[FetchedPartition] = []
        ready = False
        partition = self.log.partition
        for topic, p, offset in specs:
            try:
                plog = partition(topic, p)
            except MillpondError as exc:
                rows.append(FetchedPartition(topic, p, exc.code, -1, -1, b""))
                ready = True
                continue
            data: Any = b""
            code = 0
            corrupt = None
            try:
                if remaining > 0 or offset < plog.log_start_offset or offset > plog.log_end_offset:
                    data = plog.read(offset, remaining, plog.high_watermark)
            except CorruptRangeError as exc:  # the intact batches before the damage, then what to skip
                data = exc.data  # type: ignore[attr-defined]
                if not data or remaining - len(data) >= _CORRUPT_DETAILS_BYTES:
                    code, corrupt = exc.code, {**exc.details, "message": exc.message}
                # else the details might not fit the answer: the next fetch starts at the damage and gets them
            except MillpondError as exc:
                code = exc.code
            if data or code:
                ready = True
                remaining -= len(data)
            rows.append(FetchedPartition(topic, p, code, plog.log_start_offset, plog.high_watermark, data, corrupt))
        return Answer(Fetched(tuple(rows))), ready

    # -- offsets, producer ids ----------------------------------------------------------------------------------
    def list_offsets(self, req: ListOffsets, ctx: Context) -> Outcome:
        plog = self.log.partition(req.topic, req.partition)
        spec = req.spec
        if spec == "earliest":
            return Answer(OffsetFound(plog.log_start_offset, -1))
        if spec == "latest":
            return Answer(OffsetFound(plog.high_watermark, -1))
        if isinstance(spec, int):
            found = plog.offset_for_timestamp(spec, plog.high_watermark)
            return Answer(OffsetFound(-1, -1) if found is None else OffsetFound(*found))
        raise InvalidRequestError(f"list_offsets: spec must be 'earliest', 'latest' or a timestamp in ms, got {spec!r}")

    def init_producer(self, req: InitProducer, ctx: Context) -> Outcome:
        """A fresh producer id for an idempotent producer (as Kafka's InitProducerId with no transactional id):
        62 random bits, so ids stay unique across broker restarts without stored state."""
        return Answer(ProducerId(secrets.randbits(62), 0))
