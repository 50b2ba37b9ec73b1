# The request engine: validates decoded request bodies and turns them into core calls, answering plain maps.
# Sans-IO: takes `now_ms`, never waits. Waiting (produce acks under fsync="always", long-poll fetch) is the
# server's job; the engine tells it what to wait for. Must not know about sockets, trio or frames.
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Callable

from millpond import __version__
from millpond.broker.config import BrokerConfig
from millpond.broker.core.fields import field
from millpond.broker.core.group_api import GroupApi
from millpond.broker.core.limit_api import LimitApi, check_policies
from millpond.broker.core.groups import GroupConfig, GroupCoordinator, OffsetStore
from millpond.broker.core.log import LogManager, PartitionLog, is_internal_topic
from millpond.broker.wire.batch import BatchHeader, check_batch
from millpond.broker.wire.errors import (
    InvalidRequestError,
    InvalidTopicNameError,
    MillpondError,
    UnknownApiError,
    UnknownTopicOrPartitionError,
    UnsupportedVersionError,
)
from millpond.broker.wire.frames import PROTOCOL_VERSION

SUPPORTED_VERSIONS = (PROTOCOL_VERSION,)
FETCH_WAIT_MS_MAX = 300_000


@dataclass(slots=True)
class Context:
    """Who asks and when: ``now_ms`` wall-clock ms (record timestamps, commits), ``now`` monotonic seconds (group
    liveness deadlines), and the connection's ``client_id`` and peer ``host``."""

    now_ms: int
    now: float
    client_id: str = ""
    host: str = ""


@dataclass(slots=True)
class Durable:
    """An answer that may go out only once ``partition_log``'s high watermark reaches ``offset`` (a write to an
    internal topic, e.g. an offset commit, under fsync="always")."""

    answer: dict[str, Any]
    partition_log: PartitionLog
    offset: int


@dataclass(slots=True)
class ProduceResult:
    """A produce applied to the log. ``durable_offset``: the answer may go out once the partition's high
    watermark reaches it (already true unless fsync="always")."""

    partition_log: PartitionLog
    answer: dict[str, Any]
    durable_offset: int


@dataclass(slots=True)
class Shaped:
    """A produce admitted by a shaping policy: it is appended after ``delay_s`` seconds (the leaky bucket's queue
    form; as nginx limit_req with burst and delay)."""

    delay_s: float
    partition_log: PartitionLog
    blob: bytes
    header: BatchHeader


@dataclass(slots=True)
class FetchRequest:
    """A validated fetch: ``specs`` are ``(topic, partition, offset)``; ``max_bytes`` total; ``max_wait_ms``."""

    specs: list[tuple[str, int, int]]
    max_bytes: int
    max_wait_ms: int


class Engine:
    """Answers every API of docs/protocol.md over one ``LogManager``.

    Each handler raises a ``MillpondError`` subclass for a refused request and changes nothing in that case.
    """

    def __init__(self, config: BrokerConfig, log: LogManager) -> None:
        self.config = config
        self.log = log
        self.offsets = OffsetStore(log)
        self._held_until: dict[tuple[PartitionLog, int], float] = {}  # (partition, producer id) -> monotonic s
        self.limits = LimitApi(log.data_dir, check_policies(list(config.limits)), config.default_limit_policy())
        self.groups = GroupCoordinator(self._partition_count, self.offsets, GroupConfig())
        self._handlers: dict[str, Callable[[dict[str, Any], Context], Any]] = {
            "create_topic": self.create_topic,
            "delete_topic": self.delete_topic,
            "add_partitions": self.add_partitions,
            "list_topics": self.list_topics,
            "describe_topic": self.describe_topic,
            "metadata": self.metadata,
            "list_offsets": self.list_offsets,
            "init_producer": self.init_producer,
        }
        self._handlers.update(GroupApi(log, self.groups, self.offsets).handlers())
        self._handlers.update(self.limits.handlers())

    def open(self, now_ms: int) -> None:
        """Open the log (recovering every partition) and replay committed offsets. Raises ``StorageError``."""
        self.log.open(now_ms)
        self.offsets.open(now_ms)
        self.limits.open()

    def _partition_count(self, topic: str) -> int | None:
        t = self.log.topics.get(topic)
        return None if t is None or is_internal_topic(topic) else len(t.partitions)

    def _user_topic(self, name: str, api: str) -> None:
        if is_internal_topic(name):
            raise InvalidTopicNameError(f"{api}: topic {name!r} is internal to the broker")

    # -- handshake ---------------------------------------------------------------------------------------------
    def hello(self, body: dict[str, Any]) -> dict[str, Any]:
        version = field(body, "protocol_version", int, "hello")
        client_id = field(body, "client_id", str, "hello", "")
        if len(client_id) > 255:
            raise InvalidRequestError("hello: client_id is longer than 255 characters")
        if version not in SUPPORTED_VERSIONS:
            raise UnsupportedVersionError(
                f"protocol version {version} is not supported; this broker speaks {list(SUPPORTED_VERSIONS)}",
                supported=list(SUPPORTED_VERSIONS),
            )
        c = self.config
        return {
            "protocol_version": version,
            "broker_version": __version__,
            "fsync": c.fsync,
            "limits": {
                "frame_bytes_max": c.frame_bytes_max,
                "batch_bytes_max": c.batch_bytes_max,
                "requests_in_flight_max": c.requests_in_flight_max,
                "partitions_max": c.partitions_max,
                "fetch_bytes_max": c.fetch_bytes_max,
            },
        }

    def handle(self, api: str, body: dict[str, Any], ctx: Context) -> dict[str, Any] | Durable:
        """Answer a request that never parks. ``produce`` and ``fetch`` go through their own methods."""
        handler = self._handlers.get(api)
        if handler is None:
            raise UnknownApiError(f"unknown api {api!r}")
        return handler(body, ctx)

    # -- topics ------------------------------------------------------------------------------------------------
    def create_topic(self, body: dict[str, Any], ctx: Context) -> dict[str, Any]:
        name = field(body, "name", str, "create_topic")
        partitions = field(body, "partitions", int, "create_topic", self.config.topic_defaults.partitions)
        config = field(body, "config", dict, "create_topic", None)
        topic = self.log.create_topic(name, partitions, config, ctx.now_ms)
        self.groups.topics_changed()
        return {"name": topic.name, "partitions": len(topic.partitions), "config": topic.config.to_wire()}

    def add_partitions(self, body: dict[str, Any], ctx: Context) -> dict[str, Any]:
        name = field(body, "name", str, "add_partitions")
        total = field(body, "partitions", int, "add_partitions")
        self._user_topic(name, "add_partitions")
        topic = self.log.add_partitions(name, total, ctx.now_ms)
        self.groups.topics_changed()
        return {"name": name, "partitions": len(topic.partitions)}

    def delete_topic(self, body: dict[str, Any], ctx: Context) -> dict[str, Any] | Durable:
        name = field(body, "name", str, "delete_topic")
        self._user_topic(name, "delete_topic")
        self.log.delete_topic(name)
        self.groups.topics_changed()
        at = self.offsets.delete_topic(name, ctx.now_ms)
        if at is not None and self.offsets.partition_log is not None:
            return Durable({}, self.offsets.partition_log, at)
        return {}

    def list_topics(self, body: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return {"topics": sorted(n for n in self.log.topics if not is_internal_topic(n))}

    def describe_topic(self, body: dict[str, Any], ctx: Context) -> dict[str, Any]:
        name = field(body, "name", str, "describe_topic")
        topic = self.log.topics.get(name)
        if topic is None:
            raise UnknownTopicOrPartitionError(f"unknown topic {name!r}")
        return {
            "name": topic.name,
            "config": topic.config.to_wire(),
            "partitions": [
                {
                    "partition": p.partition,
                    "log_start_offset": p.log_start_offset,
                    "log_end_offset": p.log_end_offset,
                    "high_watermark": p.high_watermark,
                    "size_bytes": p.size_bytes,
                    "segments": p.segment_count,
                }
                for p in topic.partitions
            ],
        }

    def metadata(self, body: dict[str, Any], ctx: Context) -> dict[str, Any]:
        names = field(body, "topics", (list, type(None)), "metadata", None)
        topics = self.log.topics
        if names is None:
            return {"topics": {n: len(t.partitions) for n, t in topics.items() if not is_internal_topic(n)}}
        out = {}
        for n in names:
            if not isinstance(n, str):
                raise InvalidRequestError("metadata: topics must be a list of strings")
            t = topics.get(n)
            if t is not None:
                out[n] = len(t.partitions)
        return {"topics": out}

    # -- produce, fetch, offsets -------------------------------------------------------------------------------
    def produce(self, body: dict[str, Any], ctx: Context) -> ProduceResult | Shaped:
        """Validate, pass the admission check, append. A shaping policy answers ``Shaped``: call ``complete``
        after its delay. Raises the refusals of ``check_batch`` and of ``LimitApi.admit``, having changed nothing."""
        topic = field(body, "topic", str, "produce")
        partition = field(body, "partition", int, "produce")
        blob = field(body, "batch", bytes, "produce")
        self._user_topic(topic, "produce")
        plog = self.log.partition(topic, partition)
        header = check_batch(blob, self.config.batch_bytes_max)
        pid = header.producer_id
        if pid >= 0:  # sequence first: a retry already stored, or a batch out of order, is not charged to limits
            stored_at = plog.producers.check(pid, header.producer_epoch, header.base_sequence, header.record_count)
            if stored_at is not None:
                return ProduceResult(plog, {"partition": partition, "base_offset": stored_at,
                                            "timestamp_ms": header.max_timestamp_ms}, stored_at + header.record_count)
        delay_s = self.limits.admit(ctx, topic=topic, records=header.record_count, nbytes=len(blob)) / 1e9
        behind_held = pid >= 0 and plog.producers.held(pid)
        if behind_held:
            # behind a held batch of the same producer: leave after it, never before, even when its time has come
            # and its timer has not run yet (the timer breaks equal deadlines in the order they were set)
            delay_s = max(delay_s, self._held_until.get((plog, pid), 0.0) - ctx.now, 0.0)
        if delay_s > 0 or behind_held:
            if pid >= 0:
                plog.producers.hold(pid, header.producer_epoch, header.base_sequence, header.record_count)
                self._held_until[(plog, pid)] = ctx.now + delay_s
            return Shaped(delay_s, plog, blob, header)
        return self._append(plog, blob, header, ctx.now_ms, sequence_checked=True)  # checked above, nothing since

    def complete(self, shaped: Shaped, now_ms: int) -> ProduceResult:
        """Append a produce whose shaping delay is over (it was already admitted and charged). The sequence is
        checked again: during the delay the batch may have been stored by a retry, or fenced by a newer epoch."""
        plog, header = shaped.partition_log, shaped.header
        try:
            return self._append(plog, shaped.blob, header, now_ms, sequence_checked=False)
        except Exception:
            if header.producer_id >= 0:
                plog.producers.release(header.producer_id)
            raise
        finally:
            if header.producer_id >= 0 and not plog.producers.held(header.producer_id):
                self._held_until.pop((plog, header.producer_id), None)

    @staticmethod
    def _append(plog: PartitionLog, blob: bytes, header: BatchHeader, now_ms: int, *,
                sequence_checked: bool) -> ProduceResult:
        base = plog.append(blob, header, now_ms, sequence_checked=sequence_checked)
        answer = {"partition": plog.partition, "base_offset": base, "timestamp_ms": header.max_timestamp_ms}
        return ProduceResult(plog, answer, base + header.record_count)

    def parse_fetch(self, body: dict[str, Any]) -> FetchRequest:
        raw = field(body, "partitions", list, "fetch")
        max_bytes = field(body, "max_bytes", int, "fetch", self.config.fetch_bytes_max)
        max_wait_ms = field(body, "max_wait_ms", int, "fetch", 0)
        if max_bytes < 1:
            raise InvalidRequestError(f"fetch: max_bytes must be >= 1, got {max_bytes}")
        if max_wait_ms < 0:
            raise InvalidRequestError(f"fetch: max_wait_ms must be >= 0, got {max_wait_ms}")
        if not raw:
            raise InvalidRequestError("fetch: partitions must not be empty")
        specs = []
        for item in raw:
            if (
                not isinstance(item, (list, tuple))
                or len(item) != 3
                or not isinstance(item[0], str)
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in item[1:])
            ):
                raise InvalidRequestError("fetch: each partition must be [topic (str), partition (int), offset (int)]")
            specs.append((item[0], item[1], item[2]))
        return FetchRequest(specs, min(max_bytes, self.config.fetch_bytes_max), min(max_wait_ms, FETCH_WAIT_MS_MAX))

    def fetch(self, req: FetchRequest) -> tuple[list[list[Any]], bool]:
        """Read every spec. Returns ``(rows, ready)``: rows ``[topic, partition, code, log_start, hw, data]``;
        ``ready`` is true if any row carries data or an error, i.e. the answer should not wait."""
        remaining = req.max_bytes
        rows: list[list[Any]] = []
        ready = False
        log = self.log
        for topic, partition, offset in req.specs:
            try:
                plog = log.partition(topic, partition)
            except MillpondError as exc:
                rows.append([topic, partition, exc.code, -1, -1, b""])
                ready = True
                continue
            data = b""
            code = 0
            try:
                if remaining > 0 or offset < plog.log_start_offset or offset > plog.log_end_offset:
                    data = plog.read(offset, remaining, plog.high_watermark)
            except MillpondError as exc:
                code = exc.code
            if data or code:
                ready = True
                remaining -= len(data)
            rows.append([topic, partition, code, plog.log_start_offset, plog.high_watermark, data])
        return rows, ready

    def init_producer(self, body: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """A fresh producer id for an idempotent producer (as Kafka's InitProducerId with no transactional id):
        62 random bits, so ids stay unique across broker restarts without stored state."""
        return {"producer_id": secrets.randbits(62), "producer_epoch": 0}

    def list_offsets(self, body: dict[str, Any], ctx: Context) -> dict[str, Any]:
        topic = field(body, "topic", str, "list_offsets")
        partition = field(body, "partition", int, "list_offsets")
        spec = body.get("spec", "latest")
        plog = self.log.partition(topic, partition)
        if spec == "earliest":
            return {"offset": plog.log_start_offset, "timestamp_ms": -1}
        if spec == "latest":
            return {"offset": plog.high_watermark, "timestamp_ms": -1}
        if isinstance(spec, int) and not isinstance(spec, bool):
            found = plog.offset_for_timestamp(spec, plog.high_watermark)
            if found is None:
                return {"offset": -1, "timestamp_ms": -1}
            return {"offset": found[0], "timestamp_ms": found[1]}
        raise InvalidRequestError(f"list_offsets: spec must be 'earliest', 'latest' or a timestamp in ms, got {spec!r}")
