# The async producer: a sender task that drives the sans-IO Accumulator — fetches partition counts (metadata),
# sends ready batches (up to max_in_flight per partition, as an idempotent producer: the broker stores each batch
# once and in sequence), retries retriable failures in order with backoff until delivery_timeout_s, waits out
# THROTTLED answers (retry_after_s, up to throttle_wait_max_s per batch) and splits batches refused as
# COST_EXCEEDS_LIMIT (the accumulator fits them). Must not know sockets: it only calls Client.request.
# Idempotent (the default): a batch resent after a lost answer is recognised by the broker and stored once. With
# idempotent=False, one batch per partition is in flight and a lost answer can store a batch twice (never reordered).
from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

import anyio
import anyio.to_thread

from millpond.broker.wire.batch import compression_id
from millpond.broker.wire.errors import (
    CostExceedsLimitError,
    RequestTimedOutError,
    MillpondError,
    OutOfOrderSequenceError,
    ThrottledError,
    UnknownError,
    UnknownTopicOrPartitionError,
    from_wire,
)
from millpond.broker.wire.frames import PIECE_BYTES_MIN

from millpond.client._accumulator import Accumulator, Batch, RecordHandle
from millpond.client._native import native
from millpond.client.types import ProducerStatistics
from millpond.client._seconds import require_number, seconds_api

if TYPE_CHECKING:
    from millpond.client._client import Client


_CLOSED = ("the producer is closed: a record sent now would never be delivered; send with an open producer "
           "(inside its `async with` block)")
_CLOSED_UNACKNOWLEDGED = ("producer closed before the record was acknowledged; a batch already on its way may still "
                         "have been stored")
_NOT_STARTED = ("the producer is not started: send inside `async with client.producer() as p:` (nothing would send "
                "a record sent now)")


def check_close_timeout(timeout_s: Any) -> None:
    """``close``'s ``timeout_s``: None or a number of seconds (a negative one is 0). Raises ``TypeError``, and
    ``ValueError`` for NaN."""
    if timeout_s is not None:
        require_number(timeout_s, "close: timeout_s must be a number of seconds or None")
        if math.isnan(timeout_s):
            raise ValueError("close: timeout_s must be a number of seconds or None, got nan")


@seconds_api
class Producer:
    """Batching producer; ``async with client.producer(linger_s=0.005, batch_bytes=1048576) as p:``.

    ``send()`` is a plain call that appends to a per-partition batch and returns a handle; ``await handle`` gives
    ``RecordMetadata`` or raises the delivery error. A batch goes out when it reaches ``batch_bytes`` (bytes,
    capped by the broker's ``batch_bytes_max``), at ``flush()``, or ``linger_s`` seconds after its first record at
    the latest. It goes sooner when nothing is gained by waiting: a record sent while the producer has nothing
    pending goes at once (with whatever else is sent before the event loop next runs the sender), so a lone
    ``await p.send(...)`` costs one round trip, not the linger; and a batch a caller awaits (``await handle``)
    goes as soon as its partition has nothing in flight. Records sent while batches are in flight, and awaited by
    nobody, gather for up to ``linger_s``, so a busy producer's batches fill. With ``idempotent=False`` (one batch
    per partition in flight) a batch past ``linger_s`` also waits for the answer in flight. ``linger_s=0`` waits on
    no clock: a partial batch goes once its partition has nothing in flight (the answer in flight is the batching
    window), which gives the lowest end-to-end latency under ``fsync="always"``; and a record sent while nothing is
    pending is written by the ``send()`` call itself (non-blocking), not at the sender's next turn.
    Leaving the block flushes (``close()``; ``close(timeout_s=...)`` bounds the wait); leaving it by an exception
    waits for nothing: records not yet acknowledged fail with that exception.
    ``send()`` never waits, so a loop that never awaits buffers everything in memory; await a handle or
    ``flush()`` now and then to bound it.

    Limit policies (docs/protocol.md "Limits"; issue 4): a batch answered ``THROTTLED`` waits
    ``details.retry_after_s`` and is sent again, first in its partition so order holds (``on_throttled(policy,
    retry_after_s)``, if given, is called then, on the event loop: it must not block; ``statistics()`` counts the
    time throttled); once a batch would wait more
    than ``throttle_wait_max_s`` seconds in total, its records fail with ``ThrottledError``. A batch answered
    ``COST_EXCEEDS_LIMIT`` (more ``details.unit`` than ``details.max_cost``) is split into pieces that fit, sent in
    order, and later batches of that topic are built to fit; only a single record that alone costs too much fails,
    with ``CostExceedsLimitError``. A policy in ``shape`` mode just answers later (within ``request_timeout_s``).
    """

    def __init__(self, client: Client, *, linger_s: float, batch_bytes: int, delivery_timeout_s: float,
                 retry_backoff_s: tuple[float, float], throttle_wait_max_s: float = 60.0,
                 idempotent: bool = True, max_in_flight: int = 5, compression: str | None = None,
                 on_throttled: Callable[[str | None, float], Any] | None = None,
                 metadata_max_age_s: float = 300.0, _threaded: bool = False) -> None:
        if linger_s < 0 or batch_bytes < 1:
            raise ValueError("linger_s must be >= 0 and batch_bytes >= 1")
        if not metadata_max_age_s > 0:
            raise ValueError(f"metadata_max_age_s must be > 0 seconds, got {metadata_max_age_s!r}")
        if not 1 <= max_in_flight <= 5:
            raise ValueError(f"max_in_flight must be 1-5 batches per partition, got {max_in_flight!r}")
        if not throttle_wait_max_s >= 0:
            raise ValueError(f"throttle_wait_max_s must be >= 0 seconds, got {throttle_wait_max_s!r}")
        codec = compression_id(compression)  # before anything starts: a missing codec names the extra to install
        self._client = client
        self.throttle_wait_max_s = float(throttle_wait_max_s)
        self.on_throttled = on_throttled
        self.delivery_timeout_s = delivery_timeout_s
        self.retry_backoff_s = retry_backoff_s
        self._threaded = _threaded
        # Made in the loop's thread (client.sync too, through its portal): the sender's wake-up is the loop's own
        # event; batches' events are too, but threading's when client.sync's threads wait on them.
        loop = native()
        self._wake_event = loop.event
        self._wake = self._wake_event()
        # client.sync appends from its own thread: there the sender sleeps on a threading.Event (waited in a worker
        # thread) that any thread can set without blocking; in plain async use it sleeps on the loop's own event.
        self._twake = threading.Event() if _threaded else None
        self.lock: Any = threading.Lock() if _threaded else _NoLock()
        self._acc = Accumulator(
            batch_bytes=batch_bytes, batch_bytes_max=client.limits.batch_bytes_max, linger_s=linger_s,
            now=time.monotonic if _threaded else loop.clock,
            event_factory=threading.Event if _threaded else loop.event,
            on_wake=self._on_wake, handle_cls=_handle_cls(_threaded),
            max_in_flight=max_in_flight if idempotent else 1, compression=codec)
        self.idempotent = idempotent
        self._now = self._acc._now
        self._metadata_busy = False
        # Partition counts are asked again this often (Kafka's metadata.max.age.ms): a topic that grew is seen, and
        # keyed records then map by the new count.
        self.metadata_max_age_s = float(metadata_max_age_s)
        self._metadata_at = self._now()
        # [deadline, batch (None once answered), connection, correlation id] per produce request, in send order:
        # the timeout is the same for all, so the first unanswered one is the next to expire
        self._requests: deque[list[Any]] = deque()
        self._tg: Any = None  # the sender's task group (started in the client's by __aenter__)
        self._ended: Any = None  # set when it has ended
        self._crash: BaseException | None = None
        self._sent = self._failed = self._batches = self._retries = self._throttled = 0
        self._throttle_wait_s = 0.0
        self._throttle_time_s = 0.0
        self._throttled_until = 0.0  # when the latest THROTTLED wait ends (clock of self._now)
        self._throttle_policy: str | None = None
        self._last_error: BaseException | None = None
        self.space = threading.Condition(self.lock) if _threaded else None
        self._beginning = False  # a task is between taking batches from ``ready`` and queueing their requests
        if not _threaded:  # tasks that await records take the sender's turn (the event loop's thread only)
            self._acc.send_inline = self._send_inline
        self._send_now = not _threaded and self._acc.linger_s == 0
        self._closed = False  # close() began, or the block was left: send() refuses

    def _on_wake(self) -> None:
        if self._twake is not None:
            self._twake.set()
        else:
            self._wake.set()

    def send(self, topic: str, value: bytes, *, key: bytes | None = None, headers: dict[str, bytes] | None = None,
             partition: int | None = None, timestamp_ms: int | None = None) -> RecordHandle:
        """Queue one record; returns a handle (``await`` it for ``RecordMetadata``).

        ``value``/``key`` must be bytes (``TypeError`` otherwise; encode str yourself). ``headers``: str -> bytes.
        ``partition`` wins; else a key picks ``partition_for_key(key, n)``; else a sticky partition that changes
        per batch. ``timestamp_ms`` defaults to now (epoch ms). Raises ``RecordTooLargeError`` at once if the
        record alone exceeds the broker's ``batch_bytes_max``; ``UnknownTopicOrPartitionError`` for a partition
        the topic is known not to have. A topic that does not exist fails the handle, not the call. Raises
        ``RuntimeError`` once the producer is closing or closed (``close()``, or leaving its ``async with``): the
        record could never be sent (as Kafka's send after close).
        """
        if self._closed or self._tg is None:
            raise RuntimeError(_CLOSED if self._closed else _NOT_STARTED)
        handle = self._acc.append(topic, value, key, headers, partition, timestamp_ms)
        if self._send_now and handle._batch.eager:
            # linger_s=0 and nothing pending: the record goes from this call, its request written without waiting
            # for a task switch (non-blocking; what the socket does not take goes from the writer task). With a
            # linger the sender's next turn takes it, with whatever else is sent before this task yields.
            conn = self._take_turn()
            if conn is not None:
                conn.send_queued_nowait()
        return handle

    async def flush(self) -> None:
        """Send everything queued so far, now, and wait until each batch is acknowledged or has failed.

        Does not raise delivery errors: those go to the handles and to ``statistics()``.
        """
        again = True
        while again:
            with self.lock:
                events, again = self._acc.flush()
                self._on_wake()
            for ev in events:
                if self._threaded:
                    while not ev.is_set():  # a threading.Event (client.sync flushes in its own thread first)
                        await anyio.sleep(0.001)
                else:
                    await ev.wait()

    def statistics(self) -> ProducerStatistics:
        return ProducerStatistics(records_sent=self._sent, records_failed=self._failed, batches_sent=self._batches,
                                  retries=self._retries, records_buffered=self._acc.records_buffered,
                                  last_error=self._last_error, throttled=self._throttled,
                                  throttle_wait_s=self._throttle_wait_s, throttle_time_s=self._throttle_time_s,
                                  batches_split=self._acc.splits,
                                  throttle_policy=self._throttle_policy)

    async def close(self, timeout_s: float | None = None) -> None:
        """Flush and stop, waiting at most ``timeout_s`` seconds (None: until every record is settled). Records
        not acknowledged by then fail with ``TimeoutError`` (in their handles and ``statistics()``); one already
        on its way may still be stored. Leaving ``async with`` is ``close()``; closing twice does nothing, and a
        close while another task closes it returns when that one is done. A close cut short by the caller's own
        cancellation (a cancel scope around it) stops the producer at once, for every task closing it: what is not
        acknowledged fails with
        ``MillpondError`` ("... may still have been stored"). From the call on, ``send()`` raises
        ``RuntimeError``. Raises ``TypeError`` (``ValueError`` for NaN) for a ``timeout_s`` that is not a number.
        """
        check_close_timeout(timeout_s)
        self._closed = True
        if self._tg is None:
            if self._ended is not None:  # another task is closing it: done when that close is
                await self._until_ended()
            return
        timed_out = None
        try:
            if timeout_s is None:
                await self.flush()
            else:
                with anyio.move_on_after(max(0.0, timeout_s)):
                    await self.flush()
                timed_out = TimeoutError(f"producer closed: not acknowledged within {timeout_s:g} s")
                self.abandon(timed_out)
        finally:
            # cut short by the caller's own cancellation: what is left fails with _stop's words, not a timeout's
            await self._stop(timed_out)

    def abandon(self, error: BaseException) -> int:
        """Fail every record not yet acknowledged with ``error``, those in flight too (their late answers are
        dropped; such a batch may still be stored). Returns how many records failed."""
        with self.lock:
            before = self._acc.records_buffered
            self._acc.abort(error)
            requests, self._requests = self._requests, deque()
            for request in requests:
                b = request[1]
                if b is not None:  # unanswered (several batches may share one request: each is failed)
                    request[2].cancel(request[3])
                    request[1] = None
                    self._acc.fail(b, error)
            failed = before - self._acc.records_buffered
            self._count_failure(failed, error)
            self._notify_space()
        return failed

    async def _stop(self, error: BaseException | None = None) -> None:
        tg, self._tg = self._tg, None
        if tg is None:  # another close got here first
            await self._until_ended()
            return
        tg.cancel_scope.cancel()
        if self._twake is not None:
            self._twake.set()  # release the worker thread the sender was sleeping in
        await self._until_ended()
        # What is not acknowledged now never will be: it fails rather than leave its handles unsettled. A batch
        # already written may still have been stored (its answer would have come later): the error says so.
        with self.lock:
            before = self._acc.records_buffered
            error = error or MillpondError(_CLOSED_UNACKNOWLEDGED)
            self._acc.abort(error, in_flight=True)
            self._count_failure(before - self._acc.records_buffered, error)
            self._notify_space()
        if self._crash is not None:
            crash, self._crash = self._crash, None
            raise crash

    async def _until_ended(self) -> None:
        with anyio.CancelScope(shield=True):  # its tasks end at once once cancelled, whatever cancels the caller
            await self._ended.wait()

    async def __aenter__(self) -> Producer:
        if self.idempotent:
            answer = await self._client.request("init_producer", {})
            self._acc.producer_id = int(answer["producer_id"])
        # The sender's task group lives in the client's, not on the caller's stack of cancel scopes: close() can
        # then be called from anywhere (inside a move_on_after in the producer's own block, another task), and
        # ends the sender without exiting a scope the caller's task holds.
        self._ended = self._wake_event()
        await self._client._tg.start(self._run)
        return self

    async def _run(self, *, task_status: Any) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._sender)
                task_status.started()
        except BaseException as exc:  # a fault of the sender's: raised by close(), never into the client's tasks
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                    exc = exc.exceptions[0]  # the one task's own error, as the caller would catch it
                self._crash = exc
        finally:
            self._ended.set()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool | None:
        if exc is None:
            await self.close()
            return None
        self._closed = True
        if self._tg is not None:
            # leaving on an exception never waits: what is not acknowledged fails with it
            error = exc if isinstance(exc, Exception) else MillpondError("producer closed")
            try:
                self.abandon(error)
            finally:
                await self._stop(error)
        return None

    # ---- the sender task ----
    async def _sender(self) -> None:
        while True:
            if self._twake is not None:
                self._twake.clear()  # before planning, so a wake that arrives while we plan is not lost
            now = self._now()
            with self.lock:
                batches, deadline = self._acc.ready(now)
                topics = self._acc.topics_awaiting_metadata() if not self._metadata_busy else []
                if not self._metadata_busy and self._acc.counts:
                    refresh = self._metadata_at + self.metadata_max_age_s
                    if now >= refresh:  # the known topics' counts are asked again with the awaited ones
                        topics = list(dict.fromkeys(topics + list(self._acc.counts)))
                        self._metadata_at, refresh = now, now + self.metadata_max_age_s
                    deadline = refresh if deadline is None else min(deadline, refresh)
            if batches:
                await self._begin_batches(batches)
            if topics:
                self._metadata_busy = True
                self._tg.start_soon(self._fetch_metadata, topics)
            if self._requests:  # after sending: a request just written has a deadline too
                expiry = self._expire(now)  # a request timed out is retried: that wakes the next turn
                if expiry is not None and (deadline is None or expiry < deadline):
                    deadline = expiry
            timeout = None if deadline is None else max(0.0, deadline - now)
            if self._twake is not None:
                await anyio.to_thread.run_sync(self._twake.wait, timeout, abandon_on_cancel=True)
                continue
            if timeout is None:
                await self._wake.wait()
            else:
                with anyio.move_on_after(timeout):
                    await self._wake.wait()
            self._wake = self._wake_event()

    def _take_turn(self) -> Any:
        """A sender turn taken by the calling task, synchronously: ready batches' requests are queued on the live
        connection, which is returned (None: no live connection, or the sender is between ``ready`` and queueing
        its requests, whose order must hold: a partition's batches are written in sequence)."""
        if self._beginning or self._tg is None:
            return None
        conn = self._client._conn
        if conn is None or conn.closed:
            return None
        with self.lock:
            batches, _ = self._acc.ready(self._now())
        self._on_wake()  # the sender plans its next turn again (``ready`` moved it)
        if batches:
            self._queue_batches(conn, batches)
        return conn

    async def _send_inline(self) -> None:
        """The turn of a task that awaits a record (``await producer.send(...)``): ready batches are written from
        it at once, so an awaited send pays no task switch before its request leaves, and the event loop polls
        for the answer (``connect(busy_poll_s=...)``)."""
        conn = self._take_turn()
        if conn is not None:
            await conn.send_queued()
            conn.awaiting_answer()

    async def _fetch_metadata(self, topics: list[str]) -> None:
        try:
            try:
                counts = await self._client.metadata(topics)
            except MillpondError as exc:
                if exc.retriable:
                    await anyio.sleep(self.retry_backoff_s[0])
                    return  # still parked: the sender asks again
                counts, error = {}, exc
            else:
                error = None
            with self.lock:
                for t in topics:
                    if t in counts:
                        self._acc.set_partition_count(t, int(counts[t]))
                    else:
                        err = error or UnknownTopicOrPartitionError(f"topic {t!r} does not exist", topic=t)
                        self._count_failure(self._acc.fail_topic(t, err), err)
                self._notify_space()
        finally:
            self._metadata_busy = False
            self._on_wake()

    async def _begin_batches(self, batches: list[Batch]) -> None:
        """Write the produce requests of ``batches`` in order, now: several batches of one partition in flight must
        reach the broker in sequence order. Each answer settles its batch in the connection's reader, with no task
        of its own (an awaited send pays no task switch and no task start for its answer)."""
        self._beginning = True
        try:
            conn = await self._client._connection()
        except MillpondError as exc:
            for b in batches:
                self._settle(b, None, exc)
            return
        finally:
            self._beginning = False
        self._queue_batches(conn, batches)
        await conn.send_queued()  # written from this task: no hop to the connection's writer task

    def _queue_batches(self, conn: Any, batches: list[Batch]) -> None:
        """Queue the produce requests of ``batches`` on ``conn``, in order, without writing them."""
        deadline = self._now() + self._client.request_timeout_s
        group: list[tuple[Batch, bytearray]] = []  # small batches in a row go as one produce_batches request
        for b in batches:
            blob = b.encode(self._acc.producer_id, self._acc.compression)
            if len(blob) < PIECE_BYTES_MIN:
                group.append((b, blob))
                continue
            self._begin_group(conn, group, deadline)  # in order: a partition's batches reach the broker in sequence
            group = []
            self._begin_group(conn, [(b, blob)], deadline)  # a large batch alone: sent as it is, never copied
        self._begin_group(conn, group, deadline)

    def _begin_group(self, conn: Any, group: list[tuple[Batch, bytearray]], deadline: float) -> None:
        """One request for ``group``: ``produce`` for one batch, ``produce_batches`` for several (one frame, one
        answer, as Kafka's ProduceRequest carries many partitions). Each batch keeps its own entry in
        ``_requests`` (they share the request's correlation id and deadline)."""
        if not group:
            return
        requests = [[deadline, b, conn, 0] for b, _ in group]  # a batch is let go of once answered: see _expire
        try:
            if len(group) == 1:
                (b, blob), = group
                cid = conn.begin_callback(
                    "produce", {"topic": b.topic, "partition": b.partition, "batch": blob},
                    lambda response, error, request=requests[0]: self._answered(request, response, error))
            else:
                cid = conn.begin_callback(
                    "produce_batches", {"batches": [[b.topic, b.partition, blob] for b, blob in group]},
                    lambda response, error: self._answered_batches(requests, response, error))
        except MillpondError as exc:
            for b, _ in group:
                self._settle(b, None, exc)
            return
        for request in requests:
            request[3] = cid
            self._requests.append(request)

    def _answered_batches(self, requests: list[list[Any]], response: Any, error: BaseException | None) -> None:
        """Settle each batch of a ``produce_batches`` answer with its own result (a row: topic, partition, code,
        base_offset, timestamp_ms, error body), or all of them with the error that ended the request."""
        if error is None:
            try:
                rows = response.result()["results"]
                if len(rows) != len(requests):
                    raise UnknownError(f"produce_batches answered {len(rows)} results for {len(requests)} batches")
                if not all(len(row) == 6 for row in rows):
                    raise UnknownError("produce_batches answered a result row that is not 6 fields")
            except Exception as exc:  # an error answer for the whole request, or an answer of the wrong shape
                error = exc
        if error is not None:
            for request in requests:
                self._answered(request, None, error)
            return
        # Acknowledged batches settle together (_acknowledged), not one by one: a drain of 64 partitions is answered
        # 64 batches at once.
        acked: list[tuple[Batch, int]] = []
        for request, (_, _, code, base_offset, _, body) in zip(requests, rows):
            if code:
                self._answered(request, None, from_wire(code, body))
                continue
            if base_offset.__class__ is not int:  # an answer of the wrong shape: the general path fails the batch
                self._answered(request, _Answered({"base_offset": base_offset}), None)
                continue
            b = request[1]
            if b is not None:  # None: abandoned
                request[1] = None
                acked.append((b, base_offset))
        if acked:
            self._acknowledged(acked)

    def _answered(self, request: list[Any], response: Any, error: BaseException | None) -> None:
        b = request[1]
        if b is None:
            return  # abandoned
        request[1] = None
        self._settle(b, response, error)

    def _expire(self, now: float) -> float | None:
        """Drop answered requests from the front of ``_requests`` and fail those that have waited
        ``request_timeout_s`` for an answer (``RequestTimedOutError``, retriable: the batch goes again); returns the
        next such deadline, or None. Not under the lock (settling takes it)."""
        requests = self._requests
        while requests:
            deadline, b, conn, cid = requests[0]
            if b is not None and deadline > now:
                return deadline
            requests.popleft()
            if b is not None:  # unanswered: an answer lets go of its batch (several may share one request)
                conn.cancel(cid)
                self._settle(b, None, RequestTimedOutError(
                    f"no answer from {conn.description} within {self._client.request_timeout_s:g} s"))
        return None

    def _settle(self, b: Batch, response: Any, error: BaseException | None) -> None:
        """Settle ``b`` from the answer to its produce request (or ``error``: it could not be written, or the
        connection ended first): acknowledged, retried in order, split, or failed. Never raises."""
        try:
            if error is not None:
                raise error
            base_offset = int(response.result()["base_offset"])  # an answer of the wrong shape fails the batch
        except ThrottledError as exc:
            wait = max(0.0, float(exc.details.get("retry_after_s", self.retry_backoff_s[0])))
            with self.lock:
                self._throttled += 1
                self._throttle_policy = exc.details.get("policy") or self._throttle_policy
                if b.throttled_s + wait > self.throttle_wait_max_s:
                    self._count_failure(len(b.rows), exc)
                    self._acc.fail(b, exc)
                else:
                    b.throttled_s += wait
                    self._throttle_wait_s += wait
                    now = self._now()  # waits begin in time order: their union grows by what sticks out
                    self._throttle_time_s += max(0.0, now + wait - max(now, self._throttled_until))
                    self._throttled_until = max(self._throttled_until, now + wait)
                    self._acc.retry_later(b, self._now() + wait)
            if self.on_throttled is not None:
                try:
                    self.on_throttled(exc.details.get("policy"), wait)
                except Exception:
                    pass  # the caller's callback failing must not leave the batch unsettled
        except OutOfOrderSequenceError as exc:
            now = self._now()
            with self.lock:
                if now - b.created < self.delivery_timeout_s:
                    # a batch ahead of it failed: it goes again once that one is through (at once the first time;
                    # refused again, with the retry backoff, so a broker that keeps refusing is not hammered)
                    self._acc.retry_later(b, now + (self._backoff(b) if b.attempts > 1 else 0.0))
                else:  # the broker keeps refusing it (its producer state lost?): never retried forever
                    self._count_failure(len(b.rows), exc)
                    self._acc.fail(b, exc)
        except CostExceedsLimitError as exc:
            with self.lock:
                n_failed = self._acc.split(b, str(exc.details.get("unit", "")), int(exc.details.get("max_cost", 0)),
                                           exc)
                self._count_failure(n_failed, exc)
        except MillpondError as exc:
            now = self._now()
            with self.lock:
                if exc.retriable and now - b.created < self.delivery_timeout_s:
                    self._retries += 1
                    self._acc.retry_later(b, now + self._backoff(b))
                else:
                    if isinstance(exc, UnknownTopicOrPartitionError):
                        self._acc.forget_topic(b.topic)
                    self._count_failure(len(b.rows), exc)
                    self._acc.fail(b, exc)
        except Exception as exc:  # a bug or an unexpected answer shape: fail the batch, keep the producer alive
            with self.lock:
                self._count_failure(len(b.rows), exc)
                self._acc.fail(b, exc)
        else:
            self._acknowledged([(b, base_offset)])
            return
        with self.lock:
            self._notify_space()
        self._on_wake()

    def _acknowledged(self, acked: list[tuple[Batch, int]]) -> None:
        """Settle batches stored from their base offsets: one lock, one notice of space, and one wake of the sender
        if an answer may let a partition's next batch go (nothing else changed for the sender)."""
        more = False
        with self.lock:
            complete = self._acc.complete
            for b, base_offset in acked:
                self._sent += len(b.rows)
                self._batches += 1
                if complete(b, base_offset):
                    more = True
            self._notify_space()
        if more:
            self._on_wake()

    def _backoff(self, b: Batch) -> float:
        """Seconds before ``b`` goes again: ``retry_backoff_s`` doubling per attempt up to its cap, with jitter."""
        lo, hi = self.retry_backoff_s
        return min(hi, lo * 2 ** min(b.attempts - 1, 32)) * (0.5 + random.random() / 2)

    def _count_failure(self, n: int, exc: BaseException) -> None:
        self._failed += n
        if n:
            self._last_error = exc

    def _notify_space(self) -> None:
        if self.space is not None:
            self.space.notify_all()


class _Answered:
    """One batch's part of a produce_batches answer, shaped as a whole answer (``result()``) for ``_settle``."""

    __slots__ = ("body",)

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def result(self) -> dict[str, Any]:
        return self.body


class _NoLock:
    """Stands in for threading.Lock when only the event loop thread touches the accumulator."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _handle_cls(threaded: bool) -> type[RecordHandle]:
    if threaded:
        from millpond.client.sync import SyncRecordHandle

        return SyncRecordHandle
    return RecordHandle
