# The async client: owns the current Connection, reconnects with bounded exponential backoff + jitter when it dies,
# retries THROTTLED answers after retry_after_s, and offers the admin APIs plus producer()/consumer() factories.
# Runs under Trio or asyncio (anyio). Must not know the broker's internals: it speaks only broker.wire.
from __future__ import annotations

import functools
import random
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Iterable, Mapping

import anyio
from anyio.abc import TaskGroup

from millpond.broker.wire.errors import ConnectionClosedError, ThrottledError, UnknownTopicOrPartitionError

from millpond.client._connection import Connection
from millpond.client.consumer import Consumer
from millpond.client.producer import Producer
from millpond.client._protocol import (create_topic_body, offset_spec, parse_address, parse_topic_description,
                                       topic_config_from_wire)
from millpond.client._gather import Gathering
from millpond.client._group import Callback
from millpond.client.limits import LimitPolicy, parse_policy, policy_body
from millpond.client.queues import Queue, QueueInfo, parse_queue_info, queue_attributes_body
from millpond.client.fanout import (
    SubscriptionDescription,
    SubscriptionInfo,
    parse_description,
    parse_info,
    publish_body,
    subscribe_body,
)
from millpond.client.types import (
    BrokerLimits,
    GroupDescription,
    GroupListing,
    GroupMemberDescription,
    GroupPartitionOffsets,
    RecordMetadata,
    TopicDescription,
)
from millpond.client._seconds import refuse_ms, seconds_api

DEFAULT_ADDRESS = "127.0.0.1:7420"


MISUSE = ("connect() gives an async context manager: use `async with connect(...) as c:` in a Trio or asyncio "
          "program; in a plain script, use the blocking client: `with millpond.client.sync.connect(...) as c:`")


class _Connecting:
    """What ``connect()`` returns: only ``async with`` opens it; any other use says how to."""

    __slots__ = ("_cm",)

    def __init__(self, cm: Any) -> None:
        self._cm = cm

    async def __aenter__(self) -> Client:
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc: Any) -> bool | None:
        return await self._cm.__aexit__(*exc)

    def __enter__(self) -> None:
        raise TypeError(MISUSE)

    def __exit__(self, *exc: Any) -> None:
        return None

    def __await__(self) -> Any:
        raise TypeError(MISUSE)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"{name!r}: {MISUSE}")


@asynccontextmanager
async def _open(
    address: str | tuple[str, int] = DEFAULT_ADDRESS,
    *,
    client_id: str = "millpond-python",
    connect_timeout_s: float = 10.0,
    request_timeout_s: float = 30.0,
    reconnect_backoff_s: tuple[float, float] = (0.05, 2.0),
    reconnect_timeout_s: float = 30.0,
    busy_poll_s: float = 0.0005,
) -> AsyncIterator[Client]:
    """Open a client: ``async with connect("127.0.0.1:7420", client_id="x") as c: ...``.

    ``address`` is ``"host:port"`` or ``(host, port)``. The first connection is tried once (so a wrong address
    fails fast with ``ConnectionClosedError("cannot connect to HOST:PORT: connection refused")``); later ones are
    re-established on demand with exponential backoff from ``reconnect_backoff_s[0]`` to ``[1]`` seconds, with
    jitter, for at most ``reconnect_timeout_s`` seconds per request. Leaving the block closes the connection and
    cancels anything the client still runs.

    ``busy_poll_s``: while a task awaits an answer (``await producer.send(...)``, an admin request), the event loop
    keeps polling for it instead of sleeping, for at most this many seconds per request (0 turns it off): an
    answer that comes back meanwhile meets a running process, about a third off an awaited send's round trip on
    loopback. A consumer's fetches and requests nobody awaits never poll, and polling pauses by itself while answers
    keep coming later than the window (fsync="always", many requests in flight, a queue receive waiting for
    messages). The blocking client
    (``millpond.client.sync``) does not poll: its loop thread would hold the GIL its caller's threads need.
    """
    host, port = parse_address(address)
    # The caller's own exception is carried out of the task group and re-raised bare: callers should catch
    # KeyError or ConnectionClosedError, not an ExceptionGroup wrapping it.
    error: BaseException | None = None
    async with anyio.create_task_group() as tg:
        client = Client(tg, host, port, client_id=client_id, connect_timeout_s=connect_timeout_s,
                        request_timeout_s=request_timeout_s, reconnect_backoff_s=reconnect_backoff_s,
                        reconnect_timeout_s=reconnect_timeout_s, busy_poll_s=busy_poll_s)
        try:
            await client._reconnect(first=True)
            yield client
        except BaseException as exc:
            error = exc
        finally:
            with anyio.CancelScope(shield=True):
                await client.aclose()
            tg.cancel_scope.cancel()
    if error is not None:
        raise error


@refuse_ms
@functools.wraps(_open, assigned=("__doc__", "__module__", "__annotations__"))  # its signature, our name
def connect(*args: Any, **kwargs: Any) -> _Connecting:
    return _Connecting(_open(*args, **kwargs))


@seconds_api
class Client:
    """An open client (see ``connect``). Methods are safe to call from many tasks at once; requests pipeline."""

    def __init__(self, tg: TaskGroup, host: str, port: int, *, client_id: str, connect_timeout_s: float,
                 request_timeout_s: float, reconnect_backoff_s: tuple[float, float],
                 reconnect_timeout_s: float, busy_poll_s: float = 0.0) -> None:
        self._tg = tg
        self.busy_poll_s = busy_poll_s
        self.host, self.port = host, port
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # as connect() takes it
        self.client_id = client_id
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.reconnect_backoff_s = reconnect_backoff_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self._conn: Connection | None = None
        self._connecting = anyio.Lock()
        self._closed = False
        self._gone: str | None = None  # why watch() gave the broker up, if it did
        self._connect_error: ConnectionClosedError | None = None  # the last failed connect, for watch() to name
        self.reconnects = 0
        self._partition_counts: dict[str, int] = {}  # publish's partition choice, per topic
        self._gathering = Gathering(tg)  # queue calls made together leave as one batch request (client._gather)

    @property
    def limits(self) -> BrokerLimits:
        """Limits the broker announced at the handshake (``batch_bytes_max`` etc., bytes)."""
        assert self._conn is not None and self._conn.protocol.limits is not None
        return self._conn.protocol.limits

    @property
    def broker_version(self) -> str | None:
        return self._conn.protocol.broker_version if self._conn else None

    async def aclose(self) -> None:
        self._closed = True
        if self._conn is not None:
            await self._conn.aclose()

    # ---- connection management ----
    async def _connection(self) -> Connection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        return await self._reconnect()

    def watch(self, gone_after_s: float, on_gone: Callable[[str], None]) -> None:
        """Call ``on_gone(reason)`` once, from the client's event loop, when the connection ends (its end of stream
        or a reset, known at once) and cannot be opened again within ``gone_after_s`` seconds; ``reason`` names the
        broker's address and why. For a program that must notice a broker that went away while it waits on
        something else (``millpond produce`` reading its input); a broker back within the bound is used again.
        Once given up, every request that needs a new connection fails at once with ``ConnectionClosedError``."""
        self._tg.start_soon(self._watch, gone_after_s, on_gone)

    async def _watch(self, gone_after_s: float, on_gone: Callable[[str], None]) -> None:
        while not self._closed:
            conn = self._conn
            lost = "not connected"
            if conn is not None:
                await conn.closed_event.wait()
                lost = conn.close_reason
            if self._closed:
                return
            self._connect_error = None
            with anyio.move_on_after(gone_after_s):
                try:
                    await self._reconnect(timeout_s=gone_after_s)
                    continue
                except ConnectionClosedError:
                    pass
            # the last attempt's failure, whichever task made it (a group member's heartbeat may be reconnecting)
            why = "no answer" if self._connect_error is None else self._connect_error.message.removeprefix(
                f"cannot connect to {self.host}:{self.port}: ")
            if not self._closed:
                reason = (f"lost the connection to the broker at {self.address} ({lost}) and could not connect "
                          f"again within {gone_after_s:g} s ({why})")
                try:
                    on_gone(reason)  # first: the caller hears it from here before any request fails with it
                finally:
                    self._gone = reason
            return

    async def _reconnect(self, first: bool = False, timeout_s: float | None = None) -> Connection:
        async with self._connecting:
            if self._conn is not None and not self._conn.closed:
                return self._conn  # another task reconnected while we waited
            if self._closed:
                raise ConnectionClosedError("client is closed")
            if self._gone is not None:  # watch() gave up on it: what is left (a leave, a commit) fails at once
                raise ConnectionClosedError(self._gone)
            host, port = self.host, self.port
            delay, delay_max = self.reconnect_backoff_s
            deadline = anyio.current_time() + (self.reconnect_timeout_s if timeout_s is None else timeout_s)
            while True:
                try:
                    self._conn = await Connection.open(self._tg, host, port, self.client_id, self.connect_timeout_s,
                                                      self.busy_poll_s)
                    if not first:
                        self.reconnects += 1
                    return self._conn
                except ConnectionClosedError as exc:
                    self._connect_error = exc
                    if first or anyio.current_time() + delay > deadline:
                        raise
                await anyio.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, delay_max)
                if self._gone is not None:
                    raise ConnectionClosedError(self._gone)

    async def request(self, api: str, body: dict[str, Any], *, timeout_s: float | None = None,
                      retry_throttled: bool = True, on_late: Callable[[Any, Any], None] | None = None) -> Any:
        """Send any protocol request and return its answer map (docs/protocol.md).

        Reconnects if needed; waits and retries on THROTTLED (``details["retry_after_s"]``) until the timeout,
        unless ``retry_throttled=False`` (the producer waits out throttling itself, bounded per batch).
        Raises the typed error of the answer; ``ConnectionClosedError`` (retriable) if the connection dies while
        the request is in flight (the request may or may not have been applied). ``on_late(connection, response)``:
        the answer to a request whose wait was cancelled or timed out, still coming, is handed to it (from the
        connection's reader: it must not raise or block) instead of dropped.
        """
        timeout = self.request_timeout_s if timeout_s is None else timeout_s
        give_up = anyio.current_time() + timeout
        while True:
            conn = await self._connection()
            try:
                return await conn.request(api, body, timeout,
                                          None if on_late is None else functools.partial(on_late, conn))
            except ThrottledError as exc:
                wait = float(exc.details.get("retry_after_s", 0.1))
                if not retry_throttled or anyio.current_time() + wait > give_up:
                    raise
                await anyio.sleep(wait)

    # ---- admin ----
    async def create_topic(self, name: str, partitions: int = 1, *, retention_s: float | None = None,
                           retention_bytes: int | None = None, segment_bytes: int | None = None,
                           segment_s: float | None = None) -> dict[str, Any]:
        """Create a topic. Durations in seconds (negative = unlimited), sizes in bytes; ``None`` = broker default.

        Returns ``{"name", "partitions", "config"}``, ``config`` as in ``TopicDescription`` (seconds and bytes).
        Raises ``TopicAlreadyExistsError``, ``InvalidTopicNameError``, ``InvalidPartitionsError``,
        ``InvalidConfigError``.
        """
        answer = await self.request("create_topic", create_topic_body(
            name, partitions, retention_s, retention_bytes, segment_bytes, segment_s))
        return {**answer, "config": topic_config_from_wire(answer.get("config"))}

    async def delete_topic(self, name: str) -> None:
        """Delete a topic and its data. Raises ``UnknownTopicOrPartitionError``."""
        await self.request("delete_topic", {"name": name})

    async def list_topics(self) -> list[str]:
        """All topic names, sorted."""
        return list((await self.request("list_topics", {}))["topics"])

    async def describe_topic(self, name: str) -> TopicDescription:
        """Per-partition offsets and sizes. Raises ``UnknownTopicOrPartitionError``."""
        return parse_topic_description(await self.request("describe_topic", {"name": name}))

    async def metadata(self, topics: Iterable[str]) -> dict[str, int]:
        """``{topic: partition_count}`` for the topics that exist (unknown names are left out)."""
        return dict((await self.request("metadata", {"topics": list(topics)}))["topics"])

    async def list_offsets(self, topic: str, partition: int, spec: str | int) -> tuple[int, int]:
        """``(offset, timestamp_ms)`` for ``"earliest"``, ``"latest"`` or a timestamp (epoch ms): the first offset
        whose record timestamp is at or after it, or ``(-1, -1)`` if there is none."""
        body = await self.request("list_offsets", {"topic": topic, "partition": partition,
                                                   "spec": offset_spec(spec)})
        return int(body["offset"]), int(body["timestamp_ms"])

    # ---- factories ----
    def producer(self, *, linger_s: float = 0.005, batch_bytes: int = 1048576, delivery_timeout_s: float = 120.0,
                 retry_backoff_s: tuple[float, float] = (0.05, 1.0), throttle_wait_max_s: float = 60.0,
                 idempotent: bool = True, max_in_flight: int = 5, compression: str | None = None,
                 on_throttled: Callable[[str | None, float], Any] | None = None,
                 metadata_max_age_s: float = 300.0) -> Producer:
        """A batching producer; use as ``async with c.producer() as p:`` (leaving it flushes). See ``Producer``
        (``throttle_wait_max_s``: seconds a batch may wait on THROTTLED answers before its records fail;
        ``on_throttled(policy, retry_after_s)``: called on each THROTTLED answer, on the event loop).

        ``idempotent`` (default, as Kafka's enable.idempotence): the broker recognises a resent batch and stores
        it once, and refuses one that would land out of order, so up to ``max_in_flight`` (1-5) batches per
        partition are in flight at once. ``idempotent=False``: one batch per partition in flight; a batch resent
        after a lost answer may be stored twice (never reordered).

        ``compression``: ``"gzip"`` (always there), ``"snappy"``, ``"lz4"`` or ``"zstd"`` (the ``compression``
        extra: ``pip install 'millpond[compression]'``; without it they raise ``UnsupportedCompressionTypeError``
        naming the extra) compresses each batch as Kafka's producers do; the broker stores it as sent.

        ``metadata_max_age_s`` (as Kafka's metadata.max.age.ms, 5 minutes): how often the partition counts of the
        topics it sends to are asked again, so a topic that grew is used whole (keyed records then map by the new
        count). Raises ``ValueError`` unless it is > 0."""
        return Producer(self, linger_s=linger_s, batch_bytes=batch_bytes, delivery_timeout_s=delivery_timeout_s,
                        retry_backoff_s=retry_backoff_s, throttle_wait_max_s=throttle_wait_max_s,
                        idempotent=idempotent, max_in_flight=max_in_flight, compression=compression,
                        on_throttled=on_throttled, metadata_max_age_s=metadata_max_age_s)

    # ---- limit policies (issue 4; docs/protocol.md "Limits") ----
    async def set_limit(self, name: str, *, scope: str = "client:*", unit: str = "records",
                        algorithm: str = "leaky_bucket", mode: str = "reject", max_keys: int | None = None,
                        operation: str = "write", **params: Any) -> LimitPolicy:
        """Add or replace limit policy ``name``; the algorithm's parameters are keywords, e.g.
        ``await c.set_limit("slow", scope="client:app-*", rate=1000, burst=100)``. See ``client.limits``.
        ``operation``: what it counts, ``"write"`` (produces and queue sends) or ``"receive"`` (queue receives and
        push deliveries: scope client, queue or global, unit requests or records, mode reject).
        Returns the policy as applied (saved before the answer). Raises ``InvalidConfigError``."""
        answer = await self.request("limits_set", {"policy": policy_body(
            name, scope=scope, unit=unit, algorithm=algorithm, mode=mode, max_keys=max_keys, params=params,
            operation=operation)})
        return parse_policy(answer["policy"])

    async def list_limits(self) -> list[LimitPolicy]:
        """Every limit policy with its ``stats`` (admitted, throttled, throttled_by_key...), sorted by name."""
        return sorted((parse_policy(p) for p in (await self.request("limits_list", {}))["policies"]),
                      key=lambda p: p.name)

    async def delete_limit(self, name: str) -> None:
        """Remove limit policy ``name`` (saved before the answer). Raises ``UnknownPolicyError``."""
        await self.request("limits_delete", {"name": name})

    def consumer(self, topics: str | Iterable[str] | None = None, group: str | None = None, *,
                 auto_offset_reset: str = "latest", max_wait_s: float = 0.5, fetch_bytes: int = 4 * 1024 * 1024,
                 retry_backoff_s: tuple[float, float] = (0.05, 2.0), enable_auto_commit: bool = True,
                 auto_commit_interval_s: float = 5.0, session_timeout_s: float = 10.0,
                 max_poll_interval_s: float = 300.0, group_instance_id: str | None = None,
                 assignor: str | None = None, on_assigned: Callback | None = None,
                 on_revoked: Callback | None = None, skip_corrupt: bool = False) -> Consumer:
        """A consumer of ``topics`` (every partition of each), or of what ``assign()`` gives it later; use as
        ``async with c.consumer("logs") as cons: async for record in cons: ...``. See ``Consumer``.

        With ``group="g"`` it is a member of consumer group g, shaped like Kafka's KIP-848 consumer: it joins,
        heartbeats in the background at the interval the broker answers (at once after a revoke), and reads only
        the partitions the broker assigns it, from the group's committed offset, else by ``auto_offset_reset``
        (``"latest"``, ``"earliest"``, or ``"error"``: ``OffsetOutOfRangeError`` from the iteration); a committed
        offset below the log start is reset by the same rule. ``enable_auto_commit``: commit, every
        ``auto_commit_interval_s`` seconds, what was processed (records handed out before the application's last
        pull), and commit revoked partitions before the revoke is reported. ``on_revoked(partitions)`` /
        ``on_assigned(partitions)`` (plain or async) run before a revoke is reported to the broker / once new
        partitions are readable; partitions lost to fencing (FENCED_MEMBER_EPOCH, UNKNOWN_MEMBER_ID, session
        lapsed) also go through ``on_revoked``, uncommitted. ``session_timeout_s``: the broker expires the member
        after this long without a heartbeat. ``max_poll_interval_s``: without a pull for this long the member
        leaves the group (KIP-62) and rejoins at the next pull. ``group_instance_id``: static membership
        (KIP-345). ``assignor``: ``"sticky"`` (broker default), ``"range"`` or ``"round_robin"``. Leaving the
        ``async with`` commits (with auto-commit) and leaves the group. ``skip_corrupt``: continue past records
        the broker reports damaged on disk (logged, listed in ``skipped``) instead of raising ``CorruptRangeError``.
        """
        return Consumer(self, topics, group=group, auto_offset_reset=auto_offset_reset, max_wait_s=max_wait_s,
                        fetch_bytes=fetch_bytes, retry_backoff_s=retry_backoff_s,
                        enable_auto_commit=enable_auto_commit, auto_commit_interval_s=auto_commit_interval_s,
                        session_timeout_s=session_timeout_s, max_poll_interval_s=max_poll_interval_s,
                        group_instance_id=group_instance_id, assignor=assignor, on_assigned=on_assigned,
                        on_revoked=on_revoked, skip_corrupt=skip_corrupt)

    # ---- queues (SQS-style; client/queues.py) ----
    async def create_queue(self, name: str, *, visibility_timeout_s: float | None = None,
                           delay_s: float | None = None, retention_s: float | None = None,
                           message_bytes_max: int | None = None, receive_wait_s: float | None = None,
                           dead_letter_queue: str | None = None, max_receive_count: int | None = None,
                           content_based_deduplication: bool | None = None) -> QueueInfo:
        """Create queue ``name`` (as SQS CreateQueue; a name ending ``.fifo`` makes a FIFO queue); with the same
        attributes an existing queue is answered as it is. ``None`` = SQS's default: visibility 30 s (0-43,200),
        delay 0 (0-900), retention 4 days (60 s-14 days), message_bytes_max 1 MiB (1,024-1,048,576),
        receive_wait 0 (0-20), no redrive policy (``dead_letter_queue`` and ``max_receive_count`` 1-1,000
        together). Raises ``QueueAlreadyExistsError`` (other attributes), ``InvalidQueueNameError``,
        ``InvalidConfigError``."""
        body = queue_attributes_body(dict(
            visibility_timeout_s=visibility_timeout_s, delay_s=delay_s, retention_s=retention_s,
            message_bytes_max=message_bytes_max, receive_wait_s=receive_wait_s, dead_letter_queue=dead_letter_queue,
            max_receive_count=max_receive_count, content_based_deduplication=content_based_deduplication))
        return parse_queue_info(await self.request("create_queue", body | {"name": name}))

    async def delete_queue(self, name: str) -> None:
        """Delete a queue and its messages. Raises ``UnknownQueueError``."""
        await self.request("delete_queue", {"name": name})

    async def list_queues(self, prefix: str = "") -> list[str]:
        """Queue names starting with ``prefix``, sorted."""
        return list((await self.request("list_queues", {"prefix": prefix}))["queues"])

    async def queue_attributes(self, name: str) -> QueueInfo:
        """A queue's attributes and message counts. Raises ``UnknownQueueError``."""
        return parse_queue_info(await self.request("get_queue_attributes", {"name": name}))

    def queue(self, name: str) -> Queue:
        """Queue ``name`` for send, receive, delete, change_visibility (see ``client.queues.Queue``)."""
        return Queue(self, name)

    # ---- fan-out (issue 12; docs/fanout.md, docs/protocol.md "Fan-out") ----
    async def publish(self, topic: str, value: bytes | str, *, headers: Mapping[str, bytes | str] | None = None,
                      key: bytes | str | None = None, timestamp_ms: int | None = None) -> RecordMetadata:
        """Append one record to ``topic`` (a produce; SNS's Publish): every subscription whose filter policy
        matches it delivers it to its queue. ``headers`` are what filter policies on ``MessageAttributes`` read;
        a ``key`` picks the partition (as the producer; none: a random one) and is a FIFO queue's message group; str
        is sent as UTF-8; ``timestamp_ms`` (epoch ms) defaults to now. One produce request, answered once the record
        is durable; not retried when the connection fails meanwhile (the record may or may not be stored). Raises
        ``UnknownTopicOrPartitionError``, ``RecordTooLargeError``, ``TypeError`` (a value, key or header that is
        neither bytes nor str)."""
        stamp = time.time_ns() // 1_000_000 if timestamp_ms is None else int(timestamp_ms)
        for attempt in (0, 1):
            count = self._partition_counts.get(topic)
            if count is None:
                count = (await self.metadata([topic])).get(topic)
                if count is None:
                    raise UnknownTopicOrPartitionError(f"unknown topic {topic!r}", topic=topic)
                self._partition_counts[topic] = count
            body = publish_body(topic, value, headers, key, count, stamp)
            try:
                answer = await self.request("produce", body)
            except UnknownTopicOrPartitionError:
                self._partition_counts.pop(topic, None)  # deleted, or recreated with fewer partitions
                if attempt:
                    raise
                continue
            return RecordMetadata(topic, int(answer["partition"]), int(answer["base_offset"]), stamp)
        raise AssertionError("unreachable")

    async def subscribe(self, topic: str, *, queue: str | None = None, url: str | None = None,
                        filter_policy: Mapping[str, Any] | str | None = None,
                        filter_policy_scope: str = "MessageAttributes", raw: bool = False,
                        dead_letter_queue: str | None = None, start: str | int = "end",
                        attempts_max: int | None = None, min_delay_s: float | None = None,
                        max_delay_s: float | None = None, total_s: float | None = None,
                        timeout_s: float | None = None, concurrency_max: int | None = None,
                        rate_per_second: float | None = None) -> SubscriptionInfo:
        """Subscribe ``queue`` to ``topic`` (SNS Subscribe with an SQS endpoint): each record appended from
        ``start`` on (``"end"``: new records only, ``"beginning"``: every record kept, or an int: the first
        record at or after that timestamp in epoch ms) that matches ``filter_policy`` (SNS's syntax, a dict or
        JSON text, on the headers or, with ``filter_policy_scope="MessageBody"``, on the JSON value) becomes one
        message of the queue, exactly once: SNS's JSON envelope, or with ``raw`` the value with the headers as
        message attributes. Records the queue refuses go to ``dead_letter_queue`` (an envelope). The same queue
        subscribed again with the same settings answers the existing subscription. Raises
        ``UnknownTopicOrPartitionError``, ``UnknownQueueError``, ``InvalidParameterValueError`` (an invalid
        filter policy, naming the bad part), ``TooManySubscriptionsError``.

        With ``url`` instead of ``queue`` (SNS's http/https protocol) each record is POSTed to that URL, at least
        once (an endpoint must be idempotent by the ``x-millpond-message-id`` header, as SNS's): a 2xx answer
        delivers; other answers and timeouts are retried up to ``attempts_max`` requests in all, ``min_delay_s``
        doubling up to ``max_delay_s`` apart with jitter, within ``total_s`` of the first, then the record goes to
        ``dead_letter_queue`` (defaults: SNS's HTTP/S policy, 4 attempts 20 s apart, 15 s ``timeout_s`` per
        request); at most ``concurrency_max`` requests in flight (default 4) and ``rate_per_second`` started per
        second (SNS's maxReceivesPerSecond; default no limit). The URL's host must be in the broker's
        ``webhook_allow`` list (loopback by default), else ``InvalidParameterValueError``."""
        delivery = {"attempts_max": attempts_max, "min_delay_s": min_delay_s, "max_delay_s": max_delay_s,
                    "total_s": total_s, "timeout_s": timeout_s, "concurrency_max": concurrency_max,
                    "rate_per_second": rate_per_second}
        return parse_info(await self.request("subscribe", subscribe_body(
            topic, queue, filter_policy, filter_policy_scope, raw, dead_letter_queue, start, url, delivery)))

    async def unsubscribe(self, subscription_id: str) -> None:
        """Remove a subscription; delivery stops. Raises ``UnknownSubscriptionError``."""
        await self.request("unsubscribe", {"id": subscription_id})

    async def subscriptions(self, topic: str | None = None) -> list[SubscriptionInfo]:
        """A topic's subscriptions (every topic's with None), oldest first."""
        body = {} if topic is None else {"topic": topic}
        return [parse_info(s) for s in (await self.request("list_subscriptions", body))["subscriptions"]]

    async def describe_subscription(self, subscription_id: str) -> SubscriptionDescription:
        """A subscription's cursors, lag and counters. Raises ``UnknownSubscriptionError``."""
        return parse_description(await self.request("describe_subscription", {"id": subscription_id}))

    # ---- consumer-group admin ----
    async def list_groups(self) -> list[GroupListing]:
        """Every consumer group the broker knows (with members or committed offsets), sorted by id."""
        body = await self.request("list_groups", {})
        return [GroupListing(str(g["group"]), str(g["state"]), int(g["members"])) for g in body["groups"]]

    async def describe_group(self, group: str) -> GroupDescription:
        """State, group epoch, members (client id, host, assignment) and, per partition, committed offset, end
        offset and lag. Raises ``UnknownGroupError``, ``InvalidGroupIdError``."""
        return parse_group_description(await self.request("describe_group", {"group": group}))

    async def reset_offsets(self, group: str, topic: str, to: str | int | None = None, *,
                            timestamp_ms: int | None = None,
                            partitions: Iterable[int] | None = None) -> dict[tuple[str, int], int]:
        """Set the group's committed offsets of ``topic`` (every partition, or ``partitions``): ``to="earliest"``,
        ``"latest"``, an offset (int), or ``timestamp_ms=`` (epoch ms: the first record at or after it). Only
        while the group has no members (as Kafka's kafka-consumer-groups --reset-offsets). Returns
        ``{(topic, partition): offset}`` once durable. Raises ``GroupNotEmptyError``,
        ``UnknownTopicOrPartitionError``, ``ValueError`` (neither or both of ``to`` and ``timestamp_ms``)."""
        if (to is None) == (timestamp_ms is None):
            raise ValueError("give exactly one of to='earliest'|'latest'|offset and timestamp_ms=")
        if timestamp_ms is not None:
            spec: Any = {"timestamp_ms": int(timestamp_ms)}
        elif isinstance(to, str):
            if to not in ("earliest", "latest"):
                raise ValueError(f"to must be 'earliest', 'latest' or an offset, got {to!r}")
            spec = to
        elif isinstance(to, int) and not isinstance(to, bool) and to >= 0:
            spec = {"offset": to}
        else:
            raise ValueError(f"to must be 'earliest', 'latest' or an offset (int >= 0), got {to!r}")
        body: dict[str, Any] = {"group": group, "topic": topic, "to": spec}
        if partitions is not None:
            body["partitions"] = [int(p) for p in partitions]
        answer = await self.request("reset_offsets", body)
        return {(str(t), int(p)): int(off) for t, p, off in answer["offsets"]}

    async def delete_group(self, group: str) -> None:
        """Delete a consumer group with no members and its committed offsets; it stays deleted after a broker
        restart. Raises ``GroupNotEmptyError``, ``UnknownGroupError``."""
        await self.request("delete_group", {"group": group})

    async def add_partitions(self, topic: str, total: int) -> int:
        """Grow ``topic`` to ``total`` partitions (never shrinks); consumer groups subscribed to it rebalance and
        hand out the new ones. Returns the new count. Raises ``InvalidPartitionsError``,
        ``UnknownTopicOrPartitionError``."""
        answer = await self.request("add_partitions", {"name": topic, "partitions": int(total)})
        return int(answer["partitions"])


def parse_group_description(body: dict[str, Any]) -> GroupDescription:
    members = tuple(
        GroupMemberDescription(
            member_id=str(m["member_id"]), group_instance_id=m.get("group_instance_id"),
            client_id=str(m.get("client_id", "")), host=str(m.get("host", "")), member_epoch=int(m["member_epoch"]),
            state=str(m["state"]), topics=tuple(m.get("topics", ())),
            assignment=tuple((str(t), int(p)) for t, p in m["assignment"]),
            revoking=tuple((str(t), int(p)) for t, p in m.get("revoking", ())))
        for m in body["members"])
    offsets = tuple(
        GroupPartitionOffsets(str(o["topic"]), int(o["partition"]), int(o["committed_offset"]),
                              str(o.get("metadata") or ""), o.get("end_offset"), o.get("lag"))
        for o in body["offsets"])
    return GroupDescription(str(body["group"]), str(body["state"]), int(body["group_epoch"]), str(body["assignor"]),
                            members, offsets)
