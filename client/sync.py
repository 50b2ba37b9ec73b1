# The blocking client: the same names as the async one (connect, create_topic, producer, consumer...) for plain
# scripts. Owns the bridge between the caller's thread and one background event-loop thread; must not know the
# protocol (the async client does that work).
#
# Why a background loop (anyio blocking portal) and not plain sockets on the sans-IO core: reconnect, pipelining,
# retries, long-poll prefetch and linger timers already live in the async client; a second implementation would
# drift. The one path where a thread hop per call would hurt, producer.send(), never crosses threads: the caller
# appends to the shared Accumulator under a lock (~0.1 µs) and only wakes the loop (setting a threading.Event) when
# a batch opens or fills.
# When a batch leaves is the async producer's rule (Producer): at once for a record sent to an idle producer, as
# soon as its partition has nothing in flight when awaited (result()), else when full, at flush()/close(), or
# linger_s after its first record even if the caller thread is busy (the loop thread keeps the timer).
from __future__ import annotations

import inspect
import threading
import time
import weakref
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterable, Iterator

import anyio.to_thread
from anyio.from_thread import start_blocking_portal

from millpond.broker.wire.batch import Record

from millpond.client._accumulator import RecordHandle
from millpond.client._native import running_loop
from millpond.client._client import DEFAULT_ADDRESS, Client
from millpond.client._client import connect as _aconnect
from millpond.client.limits import LimitPolicy
from millpond.client.consumer import Consumer, TopicPartition
from millpond.client.fanout import SubscriptionDescription, SubscriptionInfo
from millpond.client.producer import Producer, check_close_timeout
from millpond.client.queues import Queue, QueueInfo, QueueMessage, SendResult
from millpond.client.subscription import Subscription, SubscriptionStatistics
from millpond.client.types import GroupDescription, GroupListing, ProducerStatistics, RecordMetadata, TopicDescription
from millpond.client._seconds import check as check_ms
from millpond.client._seconds import refuse_ms, seconds_api

__all__ = ["SyncClient", "SyncConsumer", "SyncProducer", "SyncPushedMessage", "SyncQueue", "SyncRecordHandle",
           "SyncSubscription", "connect"]


class SyncRecordHandle(RecordHandle):
    """What the blocking ``send()`` returns; ``result(timeout=None)`` -> RecordMetadata or raises the error."""

    __slots__ = ()

    def result(self, timeout: float | None = None) -> RecordMetadata:
        """Block until acknowledged; raises the delivery error, or ``TimeoutError`` after ``timeout`` seconds."""
        while True:
            b = self._follow()
            if not b.eager:
                b.hurry()  # the caller waits for it: it need not linger
            if not b.event.wait(timeout):
                raise TimeoutError(f"record not acknowledged within {timeout} s")
            if not b.routed:
                return self._outcome()


def _interruptible(portal: Any, fn: Any, *args: Any) -> Any:
    """``portal.call`` for a call that may wait long (a consumer's poll): an exception in the caller's thread
    (Ctrl-C) cancels the task in the event loop too, so closing the client does not wait for it forever."""
    future = portal.start_task_soon(fn, *args)
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


def _refuse_in_loop() -> None:
    """Raise ``RuntimeError`` when this thread runs an event loop: a blocking call would stop that loop (and the
    client's own loop thread cannot be stopped from there); under Trio anyio refuses with a vaguer message."""
    loop = running_loop()
    if loop is None:
        return
    raise RuntimeError(
        f"millpond.client.sync blocks its caller, and this thread runs an event loop ({loop}): use the async "
        f"client (millpond.client.connect) here, or run the blocking one in a worker thread "
        f"({'trio.to_thread.run_sync' if loop == 'trio' else 'asyncio.to_thread'})")


class _Blocking:
    """The client's portal into its loop thread, refusing blocking calls from a thread that runs a loop."""

    __slots__ = ("_portal",)

    def __init__(self, portal: Any) -> None:
        self._portal = portal

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        _refuse_in_loop()
        return self._portal.call(fn, *args)

    def start_task_soon(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        _refuse_in_loop()
        return self._portal.start_task_soon(fn, *args, **kwargs)

    def wrap_async_context_manager(self, cm: Any) -> Any:
        return self._portal.wrap_async_context_manager(cm)


@refuse_ms
def connect(address: str | tuple[str, int] = DEFAULT_ADDRESS, **options: Any) -> SyncClient:
    """Connect now (errors raise here) and return a client: ``with connect("127.0.0.1:7420") as c: ...``.

    Options as ``client.connect`` (``client_id``, ``request_timeout_s``...). Raises ``RuntimeError`` when called
    from a thread that runs an event loop (an ``async def``): every call of the blocking client would stop that
    loop, and its own loop thread could not be stopped from there.
    """
    return SyncClient(address, **options)


@seconds_api
class SyncClient:
    """Blocking twin of ``client.Client``; every method may block for one round trip to the broker."""

    def __init__(self, address: str | tuple[str, int], **options: Any) -> None:
        _refuse_in_loop()
        # The loop thread never busy-polls here: it would hold the GIL the caller's other threads need.
        options.setdefault("busy_poll_s", 0.0)
        self._stack = ExitStack()
        self._portal: Any = _Blocking(self._stack.enter_context(start_blocking_portal("trio")))
        try:
            self._client: Client = self._stack.enter_context(
                self._portal.wrap_async_context_manager(_aconnect(address, **options)))
        except BaseException:
            self._stack.close()
            raise
        self.address = self._client.address
        # A client never closed (no `with`, no close()) would keep the script from exiting: its loop thread runs
        # until closed, and the interpreter joins it. Close it as the main thread ends, before that join, as
        # concurrent.futures does for its own workers.
        ref = weakref.ref(self)
        at_exit = threading._register_atexit  # type: ignore[attr-defined]
        at_exit(lambda: (c := ref()) is not None and c._close_at_exit())

    def close(self) -> None:
        """Close the connection and stop the client's loop thread. Raises ``RuntimeError`` from a thread that runs
        an event loop (it could not stop that thread from there)."""
        _refuse_in_loop()
        self._stack.close()

    def _close_at_exit(self) -> None:
        """The script ended with this client open: close it, and cancel what it still runs (a producer or consumer
        left open would otherwise be waited for)."""
        ended = SystemExit(0)
        try:
            self._stack.__exit__(SystemExit, ended, None)  # an exception: the portal cancels what remains
        except SystemExit:
            pass

    def watch(self, gone_after_s: float, on_gone: Callable[[str], None]) -> None:
        """See ``Client.watch``: ``on_gone(reason)`` is called from the client's own thread."""
        self._portal.call(self._client.watch, gone_after_s, on_gone)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def limits(self) -> Any:
        return self._client.limits

    def create_topic(self, name: str, partitions: int = 1, **config: Any) -> dict[str, Any]:
        """See ``Client.create_topic`` (``retention_s``, ``retention_bytes``, ``segment_bytes``, ``segment_s``)."""
        return self._portal.call(lambda: self._client.create_topic(name, partitions, **config))

    def delete_topic(self, name: str) -> None:
        self._portal.call(self._client.delete_topic, name)

    def list_topics(self) -> list[str]:
        return self._portal.call(self._client.list_topics)

    def describe_topic(self, name: str) -> TopicDescription:
        return self._portal.call(self._client.describe_topic, name)

    def metadata(self, topics: Iterable[str]) -> dict[str, int]:
        return self._portal.call(self._client.metadata, list(topics))

    def list_offsets(self, topic: str, partition: int, spec: str | int) -> tuple[int, int]:
        return self._portal.call(self._client.list_offsets, topic, partition, spec)

    def list_groups(self) -> list[GroupListing]:
        """See ``Client.list_groups``."""
        return self._portal.call(self._client.list_groups)

    def describe_group(self, group: str) -> GroupDescription:
        """See ``Client.describe_group``."""
        return self._portal.call(self._client.describe_group, group)

    def reset_offsets(self, group: str, topic: str, to: str | int | None = None, *, timestamp_ms: int | None = None,
                      partitions: Iterable[int] | None = None) -> dict[tuple[str, int], int]:
        """See ``Client.reset_offsets``."""
        return self._portal.call(lambda: self._client.reset_offsets(
            group, topic, to, timestamp_ms=timestamp_ms, partitions=None if partitions is None else list(partitions)))

    def delete_group(self, group: str) -> None:
        """See ``Client.delete_group``."""
        self._portal.call(self._client.delete_group, group)

    def add_partitions(self, topic: str, total: int) -> int:
        """See ``Client.add_partitions``."""
        return self._portal.call(self._client.add_partitions, topic, total)

    def set_limit(self, name: str, **options: Any) -> LimitPolicy:
        """See ``Client.set_limit`` (``scope``, ``unit``, ``algorithm``, ``mode``, ``max_keys``, ``operation``,
        algorithm params)."""
        return self._portal.call(lambda: self._client.set_limit(name, **options))

    def list_limits(self) -> list[LimitPolicy]:
        """See ``Client.list_limits``."""
        return self._portal.call(self._client.list_limits)

    def delete_limit(self, name: str) -> None:
        """See ``Client.delete_limit``."""
        self._portal.call(self._client.delete_limit, name)

    def create_queue(self, name: str, **attributes: Any) -> QueueInfo:
        """See ``Client.create_queue``."""
        return self._portal.call(lambda: self._client.create_queue(name, **attributes))

    def delete_queue(self, name: str) -> None:
        """See ``Client.delete_queue``."""
        self._portal.call(self._client.delete_queue, name)

    def list_queues(self, prefix: str = "") -> list[str]:
        """See ``Client.list_queues``."""
        return self._portal.call(self._client.list_queues, prefix)

    def queue_attributes(self, name: str) -> QueueInfo:
        """See ``Client.queue_attributes``."""
        return self._portal.call(self._client.queue_attributes, name)

    def queue(self, name: str) -> SyncQueue:
        """A blocking ``Queue`` (see ``client.queues.Queue``)."""
        return SyncQueue(self, name)

    def publish(self, topic: str, value: bytes | str, **options: Any) -> RecordMetadata:
        """See ``Client.publish`` (``headers``, ``key``, ``timestamp_ms``)."""
        return self._portal.call(lambda: self._client.publish(topic, value, **options))

    def subscribe(self, topic: str, **options: Any) -> SubscriptionInfo:
        """See ``Client.subscribe`` (``queue`` or ``url``, ``filter_policy``, ``filter_policy_scope``, ``raw``,
        ``dead_letter_queue``, ``start``; a webhook's ``attempts_max``, ``min_delay_s``, ``max_delay_s``,
        ``total_s``, ``timeout_s``, ``concurrency_max``, ``rate_per_second``)."""
        return self._portal.call(lambda: self._client.subscribe(topic, **options))

    def unsubscribe(self, subscription_id: str) -> None:
        """See ``Client.unsubscribe``."""
        self._portal.call(self._client.unsubscribe, subscription_id)

    def subscriptions(self, topic: str | None = None) -> list[SubscriptionInfo]:
        """See ``Client.subscriptions``."""
        return self._portal.call(self._client.subscriptions, topic)

    def describe_subscription(self, subscription_id: str) -> SubscriptionDescription:
        """See ``Client.describe_subscription``."""
        return self._portal.call(self._client.describe_subscription, subscription_id)

    def producer(self, **options: Any) -> SyncProducer:
        """A blocking producer (options as ``Client.producer`` plus ``max_buffered_records``); use with ``with``."""
        return SyncProducer(self, **options)

    def consumer(self, topics: str | Iterable[str] | None = None, group: str | None = None,
                 **options: Any) -> SyncConsumer:
        """A blocking consumer (options as ``Client.consumer``, ``group=`` included); iterate it, or call
        ``getmany``. Group callbacks (``on_assigned``, ``on_revoked``) are plain functions; they run in a worker
        thread, so they may call the consumer (e.g. ``commit()``)."""
        return SyncConsumer(self, topics, group=group, **options)


@seconds_api
class SyncQueue:
    """Blocking twin of ``client.queues.Queue``: the same methods, each one round trip (``receive`` up to its
    long poll); a long poll is cancelled with the caller (Ctrl-C)."""

    def __init__(self, sc: SyncClient, name: str) -> None:
        self._portal = sc._portal
        self._q = Queue(sc._client, name)
        self.name = name

    def send(self, body: bytes, **options: Any) -> SendResult:
        return self._portal.call(lambda: self._q.send(body, **options))

    def send_batch(self, messages: Iterable[bytes | dict[str, Any]]) -> list[Any]:
        return self._portal.call(self._q.send_batch, list(messages))

    def receive(self, max_messages: int = 1, *, wait_s: float | None = None,
                visibility_timeout_s: float | None = None) -> list[QueueMessage]:
        return _interruptible(self._portal, lambda: self._q.receive(
            max_messages, wait_s=wait_s, visibility_timeout_s=visibility_timeout_s))

    def delete(self, message: QueueMessage | str) -> None:
        self._portal.call(self._q.delete, message)

    def delete_batch(self, messages: Iterable[QueueMessage | str]) -> list[Any]:
        return self._portal.call(self._q.delete_batch, list(messages))

    def change_visibility(self, message: QueueMessage | str, visibility_timeout_s: float) -> None:
        self._portal.call(self._q.change_visibility, message, visibility_timeout_s)

    def change_visibility_batch(self, messages: Iterable[QueueMessage | str],
                                visibility_timeout_s: float) -> list[Any]:
        return self._portal.call(self._q.change_visibility_batch, list(messages), visibility_timeout_s)

    def worker(self, handler: Any, **options: Any) -> Any:
        """A blocking worker runner (``client.worker.SyncWorker``): ``handler`` is a plain function, run in worker
        threads; options as ``Queue.worker``."""
        from millpond.client.worker import SyncWorker

        return SyncWorker(self._portal, self._q, handler, **options)

    def subscribe(self, prefetch: int, *, visibility_timeout_s: float | None = None) -> SyncSubscription:
        """Push delivery, blocking (``Queue.subscribe``): ``with q.subscribe(prefetch=10) as sub: for msg in sub:
        ...; msg.ack()`` (or ``msg.nack(delay_s=)``)."""
        return SyncSubscription(self._portal, self._q.subscribe(prefetch, visibility_timeout_s=visibility_timeout_s))

    def start_redrive(self, *, to: str | None = None, messages_per_second: int | None = None) -> str:
        """See ``Queue.start_redrive``."""
        return self._portal.call(lambda: self._q.start_redrive(to=to, messages_per_second=messages_per_second))

    def cancel_redrive(self, task_handle: str | None = None) -> int:
        """See ``Queue.cancel_redrive``."""
        return self._portal.call(self._q.cancel_redrive, task_handle)

    def redrive_tasks(self, max_results: int = 10) -> list[Any]:
        """See ``Queue.redrive_tasks``."""
        return self._portal.call(self._q.redrive_tasks, max_results)

    def purge(self) -> None:
        self._portal.call(self._q.purge)

    def attributes(self) -> QueueInfo:
        return self._portal.call(self._q.attributes)

    def set_attributes(self, **attributes: Any) -> QueueInfo:
        return self._portal.call(lambda: self._q.set_attributes(**attributes))


@seconds_api
@dataclass(frozen=True, slots=True)
class SyncPushedMessage(QueueMessage):
    """A pushed message of a ``SyncSubscription``: ``ack()`` and ``nack(delay_s=0)`` block for one round trip and
    raise as ``PushedMessage``'s."""

    subscription: Any = field(default=None, repr=False, compare=False)

    def ack(self) -> None:
        self.subscription._settle_one("queue_ack", self, {})

    def nack(self, delay_s: float = 0.0) -> None:
        self.subscription._settle_one("queue_nack", self, {"delay_ms": round(delay_s * 1000)})


@seconds_api
class SyncSubscription:
    """Blocking twin of ``client.subscription.Subscription``: iterate in a ``with`` block; waiting for the next
    message is cancelled with the caller (Ctrl-C); leaving the block unsubscribes."""

    def __init__(self, portal: Any, sub: Subscription) -> None:
        self._portal = portal
        self._sub = sub
        self._cm = portal.wrap_async_context_manager(sub)  # enter and exit in one portal task

    def __enter__(self) -> SyncSubscription:
        self._cm.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._cm.__exit__(*exc)

    def __iter__(self) -> Iterator[SyncPushedMessage]:
        return self

    def __next__(self) -> SyncPushedMessage:
        try:
            m = _interruptible(self._portal, self._sub.__anext__)
        except StopAsyncIteration:
            raise StopIteration from None
        return SyncPushedMessage(**{f.name: getattr(m, f.name) for f in fields(QueueMessage)}, subscription=self)

    def ack(self, *messages: QueueMessage | str) -> list[Any]:
        return self._portal.call(lambda: self._sub.ack(*messages))

    def nack(self, *messages: QueueMessage | str, delay_s: float = 0.0) -> list[Any]:
        return self._portal.call(lambda: self._sub.nack(*messages, delay_s=delay_s))

    def _settle_one(self, api: str, message: QueueMessage, extra: dict[str, Any]) -> None:
        self._portal.call(self._sub._settle_one, api, message, extra)

    def statistics(self) -> SubscriptionStatistics:
        return self._sub.statistics()

    def close(self) -> None:
        self._portal.call(self._sub.close)


@seconds_api
class SyncProducer:
    """``send()`` appends in the caller's thread and returns a ``SyncRecordHandle``; ``flush()`` blocks until
    everything sent so far is acknowledged or failed; ``close(timeout_s=None)`` (leaving ``with``) flushes, and
    leaving ``with`` by an exception fails what is not acknowledged with it, at once. ``send()`` blocks
    while more than ``max_buffered_records`` records await acknowledgement (backpressure). ``on_throttled`` runs
    in the client's event-loop thread: it must return quickly."""

    def __init__(self, sc: SyncClient, *, linger_s: float = 0.005, batch_bytes: int = 1048576,
                 delivery_timeout_s: float = 120.0, retry_backoff_s: tuple[float, float] = (0.05, 1.0),
                 max_buffered_records: int = 1_000_000, throttle_wait_max_s: float = 60.0, idempotent: bool = True,
                 max_in_flight: int = 5, compression: str | None = None,
                 on_throttled: Callable[[str | None, float], Any] | None = None,
                 metadata_max_age_s: float = 300.0) -> None:
        portal = self._portal = sc._portal
        self._p: Producer = portal.call(lambda: Producer(
            sc._client, linger_s=linger_s, batch_bytes=batch_bytes, delivery_timeout_s=delivery_timeout_s,
            retry_backoff_s=retry_backoff_s, throttle_wait_max_s=throttle_wait_max_s, idempotent=idempotent,
            max_in_flight=max_in_flight, compression=compression, on_throttled=on_throttled,
            metadata_max_age_s=metadata_max_age_s, _threaded=True))
        # One portal task enters and exits the producer: its task group must open and close in the same task.
        self._cm = portal.wrap_async_context_manager(self._p)
        self._cm.__enter__()
        self._lock = self._p.lock
        self._space = self._p.space
        self._acc = self._p._acc
        self._append = self._acc.append
        self.max_buffered_records = max_buffered_records
        self._closed = False

    def send(self, topic: str, value: bytes, *, key: bytes | None = None, headers: dict[str, bytes] | None = None,
             partition: int | None = None, timestamp_ms: int | None = None) -> SyncRecordHandle:
        """As ``Producer.send``; returns a handle with ``.result(timeout=None)``. Raises ``RuntimeError`` once the
        producer is closed (``close()``, or leaving its ``with`` block)."""
        if self._closed:
            raise RuntimeError("the producer is closed: a record sent now would never be delivered; send with an "
                               "open producer (inside its `with` block)")
        with self._lock:
            if self._acc.records_buffered >= self.max_buffered_records:
                assert self._space is not None
                while self._acc.records_buffered >= self.max_buffered_records:
                    self._space.wait(1.0)
            return self._append(topic, value, key, headers, partition, timestamp_ms)  # type: ignore[return-value]

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued now and block until each batch is acknowledged or failed."""
        again = True
        while again:
            with self._lock:
                events, again = self._acc.flush()
            self._p._on_wake()
            for ev in events:
                if not ev.wait(timeout):
                    raise TimeoutError(f"flush did not complete within {timeout} s")

    def statistics(self) -> ProducerStatistics:
        return self._p.statistics()

    def close(self, timeout_s: float | None = None) -> None:
        """Flush and stop, blocking at most ``timeout_s`` seconds (None: until every record is settled). Records
        not acknowledged by then fail with ``TimeoutError`` (in their handles and ``statistics()``); one already
        on its way may still be stored. An exception meanwhile (Ctrl-C) fails the rest at once and propagates.
        Raises ``TypeError`` (``ValueError`` for NaN) for a ``timeout_s`` that is not a number, changing nothing."""
        check_close_timeout(timeout_s)
        if self._closed:
            return
        self._closed = True
        deadline = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)
        try:
            again = True
            while again:
                with self._lock:
                    events, again = self._acc.flush()
                self._p._on_wake()
                for ev in events:
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    if not ev.wait(left):
                        error = TimeoutError(f"producer closed: not acknowledged within {timeout_s:g} s")
                        self._portal.call(self._p.abandon, error)
                        # as leaving on an exception, which never waits: a graceful close would wait for a batch
                        # still on its way, retried until delivery_timeout_s when the broker is gone
                        self._cm.__exit__(TimeoutError, error, None)
                        return
        except BaseException as exc:
            self._cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._cm.__exit__(None, None, None)

    def abandon(self, error: BaseException) -> int:
        """Fail every record not yet acknowledged with ``error`` (see ``Producer.abandon``); returns how many."""
        return self._portal.call(self._p.abandon, error)

    def __enter__(self) -> SyncProducer:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is None:
            self.close()
        elif not self._closed:
            # leaving on an exception never waits: what is not acknowledged fails with it
            self._closed = True
            self._cm.__exit__(exc_type, exc, tb)


@seconds_api
class SyncConsumer:
    """Blocking consumer: ``for record in consumer`` (forever) or ``getmany(max_records, timeout_s)``.

    Iteration pulls up to ``iter_batch_records`` records per hop into the loop thread (``group_iter_batch_records``
    in a consumer group, and records of a partition revoked meanwhile are skipped); ``position()`` counts those
    as handed out. In a group, auto-commit stores what was handed out before the last hop, i.e. processed.
    """

    iter_batch_records = 10_000
    group_iter_batch_records = 500

    def __init__(self, sc: SyncClient, topics: str | Iterable[str] | None, **options: Any) -> None:
        check_ms("SyncClient.consumer", {o for o in _CONSUMER_OPTIONS if o.endswith("_s")}, options)
        self._portal = sc._portal
        unknown = set(options) - _CONSUMER_OPTIONS
        if unknown:
            raise TypeError(f"unknown consumer option(s): {', '.join(sorted(unknown))}")
        for name in ("on_assigned", "on_revoked"):
            if options.get(name) is not None:
                options[name] = _in_thread(options[name])
        # Client.consumer holds the defaults, so the blocking consumer's cannot drift from the async one's.
        self._c: Consumer = self._portal.call(lambda: sc._client.consumer(topics, **options))
        self._cm = self._portal.wrap_async_context_manager(self._c)  # enter and exit in one portal task
        self._cm.__enter__()
        self._buf: deque[Record] = deque()
        self._closed = False

    def assign(self, partitions: Iterable[TopicPartition | str]) -> None:
        self._buf.clear()
        self._portal.call(self._c.assign, list(partitions))

    def assignment(self) -> frozenset[TopicPartition]:
        return self._c.assignment()

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self._drop(topic, partition)
        self._portal.call(self._c.seek, topic, partition, offset)

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self._drop_all(partitions)
        self._portal.call(self._c.seek_to_beginning, *partitions)

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        self._drop_all(partitions)
        self._portal.call(self._c.seek_to_end, *partitions)

    def seek_to_timestamp(self, timestamp_ms: int, *partitions: TopicPartition) -> None:
        self._drop_all(partitions)
        self._portal.call(self._c.seek_to_timestamp, timestamp_ms, *partitions)

    def position(self, topic: str, partition: int) -> int:
        return _interruptible(self._portal, self._c.position, topic, partition)

    @property
    def skipped(self) -> list[tuple[str, int, int, int]]:
        """Damaged ranges continued past with ``skip_corrupt=True``: ``(topic, partition, first, last offset)``."""
        return self._c.skipped

    def getmany(self, max_records: int | None = None, timeout_s: float | None = None) -> list[Record]:
        """Up to ``max_records`` records as soon as any are ready, or ``[]`` after ``timeout_s`` seconds."""
        if self._buf:
            n = len(self._buf) if max_records is None else min(max_records, len(self._buf))
            return [self._buf.popleft() for _ in range(n)]
        return _interruptible(self._portal, self._c.getmany, max_records, timeout_s)

    poll = getmany

    def __iter__(self) -> Iterator[Record]:
        in_group = self._c.group is not None
        hop = self.group_iter_batch_records if in_group else self.iter_batch_records
        parts = self._c._parts
        while True:
            if not self._buf:
                self._buf.extend(_interruptible(self._portal, self._c.getmany, hop, None))
            r = self._buf.popleft()
            if in_group:
                st = parts.get((r.topic, r.partition))
                if st is None or st.paused:  # revoked while buffered here: its new owner reads it
                    continue
            yield r

    def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        """See ``Consumer.commit``: positions of owned partitions (records handed out), or ``offsets``."""
        self._portal.call(self._c.commit, offsets)

    def _drop(self, topic: str, partition: int) -> None:
        self._buf = deque(r for r in self._buf if r.topic != topic or r.partition != partition)

    def _drop_all(self, partitions: tuple[TopicPartition, ...]) -> None:
        """Forget buffered records of ``partitions`` (default: all), as a seek of them does."""
        if not partitions:
            self._buf.clear()
        for tp in partitions:
            self._drop(*tp)

    def close(self) -> None:
        """Commit (with auto-commit) and leave the group, then stop; see ``Consumer.close``."""
        self.__exit__(None, None, None)

    def __enter__(self) -> SyncConsumer:
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self._closed:
            self._closed = True
            self._cm.__exit__(*exc)  # an exception: commit only what was processed before the last pull


def _in_thread(callback: Any) -> Any:
    async def run(partitions: frozenset[TopicPartition]) -> None:
        await anyio.to_thread.run_sync(callback, partitions)

    return run


_CONSUMER_OPTIONS = frozenset(inspect.signature(Client.consumer).parameters) - {"self", "topics"}
