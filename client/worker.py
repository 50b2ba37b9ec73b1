# The worker runner: a queue triggering a handler, as Lambda's SQS event source mapping does. `Queue.worker(...)`
# long-polls with `concurrency` pollers, calls the handler per message or per batch, deletes what succeeded,
# leaves failures to come back (after their visibility timeout, or a backoff), keeps extending the visibility of
# messages whose handler still runs (a heartbeat), and on stop finishes what it holds or makes it visible again.
# Runs under Trio or asyncio (anyio). Must not know the broker's insides: speaks only through `Queue`.
"""The worker runner.

Departures from Lambda's SQS event source mapping:

* ``concurrency`` is a fixed number of pollers, each handling its own batches; errors do not lower it (Lambda
  scales its pollers and backs off by lowering concurrency).
* A heartbeat extends the visibility of messages whose handler still runs (Lambda has a function timeout
  instead); ``heartbeat=False`` turns it off.
* ``backoff_s`` (optional) hides a failed message for ``backoff_s * 2 ** (receive_count - 1)`` s (at most
  ``backoff_max_s``); Lambda leaves it hidden for the rest of its visibility timeout.
* Besides batches (``batch=True``, Lambda's shape), a handler may take one message at a time.
* FIFO: a failure fails the rest of its group in the batch (Lambda leaves that to the handler).
* A batch handler's answer of the wrong shape (unknown keys, an id not in the batch) stops the worker with a
  TypeError (Lambda counts the whole batch as failed); the batch comes back after its timeout.
* A batching window ends at ``batch_size`` messages or ``batch_window_s``, not at Lambda's 6 MB payload.
"""
from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

import anyio

from millpond.broker.wire.errors import MillpondError, UnknownQueueError

from millpond.client.queues import QueueMessage, batch_entries_max
from millpond.client._seconds import require_number, seconds_api

if TYPE_CHECKING:
    from millpond.client.queues import Queue

__all__ = ["Worker", "WorkerStatistics", "failed_ids"]

log = logging.getLogger("millpond.client.worker")

RECEIVE_MAX = 1000  # one receive request's messages
VISIBILITY_MAX_S = 43_200.0
RELEASE_TIMEOUT_S = 10.0  # how long a stopping worker tries to make what it holds visible again
# Each receive's long poll: a stop waits for the one under way (cancelling it would leave its messages hidden for
# their visibility timeout), so it is short; an idle poller asks again every 2 s, a cheap request.
WAIT_S_DEFAULT = 2.0
WAIT_S_MAX = 20.0  # as SQS WaitTimeSeconds: the broker refuses more


@dataclass(frozen=True, slots=True)
class WorkerStatistics:
    """What a worker did so far: messages ``processed`` (handled and deleted), ``failed`` (handler failures, each
    delivery counted), ``in_flight`` (received, not yet settled), ``released`` (made visible again when stopping),
    ``batches`` (handler calls in batch mode, message handler calls otherwise), ``elapsed_s`` since start."""

    processed: int
    failed: int
    in_flight: int
    released: int
    batches: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        """Messages processed per second since the start."""
        return self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        """A progress line for a person watching."""
        return (f"processed {self.processed}  failed {self.failed}  in flight {self.in_flight}  "
                f"rate {self.rate:.1f}/s")


def failed_ids(result: Any, batch: list[QueueMessage]) -> set[str]:
    """The message ids a batch handler's return value reports as failed: None (all succeeded); Lambda's
    ``{"batchItemFailures": [{"itemIdentifier": message_id}, ...]}``; or an iterable of ``QueueMessage`` or message
    ids. An id not in the batch is a TypeError (Lambda fails the whole batch for it)."""
    if result is None:
        return set()
    if isinstance(result, dict):
        if set(result) - {"batchItemFailures"}:
            raise TypeError(f"a batch handler's answer has keys {sorted(result)}; expected 'batchItemFailures'")
        items = [item["itemIdentifier"] for item in result.get("batchItemFailures") or ()]
    elif isinstance(result, (str, bytes)):
        raise TypeError("a batch handler returns None, {'batchItemFailures': [...]} or an iterable of failed "
                        "messages, not a string")
    else:
        items = [m.message_id if isinstance(m, QueueMessage) else m for m in result]
    ids = {m.message_id for m in batch}
    unknown = [i for i in items if i not in ids]
    if unknown:
        raise TypeError(f"a batch handler reported failures for messages not in its batch: {unknown[:3]}")
    return set(items)


@seconds_api
class Worker:
    """A queue triggering a handler (see ``Queue.worker``). ``async with`` starts it; leaving the block (or
    ``stop()``) stops receiving, lets running handlers finish for up to ``shutdown_grace_s`` (then cancels them),
    and makes every message it still holds visible again; a long poll under way ends first (up to ``wait_s``,
    2 s by default: each receive long-polls at most that long, so a stop takes effect within it).
    Cancelling the block cancels the handlers at once and makes their messages visible again."""

    def __init__(self, queue: Queue, handler: Callable[[Any], Any], *, batch: bool = False, batch_size: int = 10,
                 batch_window_s: float = 0.0, concurrency: int = 1, visibility_timeout_s: float | None = None,
                 wait_s: float = WAIT_S_DEFAULT, heartbeat: bool = True, backoff_s: float | None = None,
                 backoff_max_s: float = 900.0, shutdown_grace_s: float = 30.0) -> None:
        fifo = queue.name.endswith(".fifo")
        if not 1 <= batch_size <= (10 if fifo else 10_000):
            raise ValueError(f"batch_size must be 1-{10 if fifo else 10_000} (as Lambda), not {batch_size}")
        if not 0 <= batch_window_s <= 300 or (fifo and batch_window_s):
            raise ValueError("batch_window_s must be 0-300 s, and 0 on a FIFO queue (as Lambda)")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        if visibility_timeout_s is not None and not 0 < visibility_timeout_s <= VISIBILITY_MAX_S:
            raise ValueError("visibility_timeout_s must be more than 0 and at most 43,200")
        if backoff_s is not None and not 0 <= backoff_s <= backoff_max_s <= VISIBILITY_MAX_S:
            raise ValueError("backoff_s must be 0 to backoff_max_s, and backoff_max_s at most 43,200")
        for name, value in (("wait_s", wait_s), ("shutdown_grace_s", shutdown_grace_s)):
            require_number(value, f"{name} must be a number of seconds")
        if not 0 <= wait_s <= WAIT_S_MAX:  # the broker refuses a longer receive: every poll would fail
            raise ValueError(f"wait_s must be 0-{WAIT_S_MAX:g} s (as SQS WaitTimeSeconds), not {wait_s!r}")
        if not 0 <= shutdown_grace_s < math.inf:
            raise ValueError(f"shutdown_grace_s must be 0 or more seconds, not {shutdown_grace_s!r}")
        self.queue = queue
        self.handler = handler
        self.batch = batch
        self.batch_size = batch_size
        self.batch_window_s = batch_window_s
        self.concurrency = concurrency
        self.visibility_timeout_s = visibility_timeout_s
        self.wait_s = wait_s
        self.heartbeat = heartbeat
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.shutdown_grace_s = shutdown_grace_s
        self.fifo = fifo
        self._processed = self._failed = self._released = self._batches = 0
        self._held: dict[str, QueueMessage] = {}  # receipt handle -> message, received and not yet settled
        self._started = 0.0
        self._stopping = anyio.Event()
        self._handling: set[anyio.CancelScope] = set()
        self._error: BaseException | None = None
        self._tg: Any = None

    def __repr__(self) -> str:
        return f"Worker({self.queue.name!r}, {self.statistics().line()})"

    def statistics(self) -> WorkerStatistics:
        elapsed = anyio.current_time() - self._started if self._started else 0.0
        return WorkerStatistics(self._processed, self._failed, len(self._held), self._released, self._batches,
                                elapsed)

    # -- life ------------------------------------------------------------------------------------------------------
    async def __aenter__(self) -> Worker:
        if self.visibility_timeout_s is None:
            self.visibility_timeout_s = (await self.queue.attributes()).visibility_timeout_s or 30.0
        self._started = anyio.current_time()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._main)
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        self.stop()
        return await self._tg.__aexit__(*exc)

    def stop(self) -> None:
        """Stop receiving; running handlers finish (up to ``shutdown_grace_s``), then the worker releases what it
        still holds. Returns at once; ``wait()`` for the end."""
        self._stopping.set()

    async def wait(self) -> None:
        """Until ``stop()`` was called or an error stopped the worker (raised here: an unknown queue, a batch
        handler's answer of the wrong shape). Leaving ``async with`` then finishes the stop."""
        await self._stopping.wait()
        if self._error is not None:
            raise self._error

    async def _main(self) -> None:
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._grace)
                async with anyio.create_task_group() as pollers:
                    for _ in range(self.concurrency):
                        pollers.start_soon(self._poller)
                outer.cancel_scope.cancel()
        finally:
            if self._held:  # cancelled, or past the grace: what is still held becomes visible at once
                with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_TIMEOUT_S):
                    await self._release(list(self._held.values()))

    async def _grace(self) -> None:
        await self._stopping.wait()
        await anyio.sleep(self.shutdown_grace_s)
        for scope in list(self._handling):
            scope.cancel()

    async def _poller(self) -> None:
        while not self._stopping.is_set():
            try:
                got = await self._receive()
            except UnknownQueueError as exc:
                self._error = exc
                self.stop()
                return
            except MillpondError as exc:  # connection lost, throttled past retries...: try again shortly
                log.warning("worker on %s: receive failed (%s); retrying in 1 s", self.queue.name, exc)
                await anyio.sleep(1.0)
                continue
            if got:
                with anyio.CancelScope() as scope:  # stop() lets it finish; the grace's end cancels it
                    self._handling.add(scope)
                    try:
                        await self._handle(got)
                    finally:
                        self._handling.discard(scope)

    async def _receive(self) -> list[QueueMessage]:
        """Long-poll until a message comes, then gather up to ``batch_size`` for ``batch_window_s``. A long poll
        under way is not cancelled by ``stop()`` (its messages would stay hidden for their timeout): what it
        brings after the stop is made visible again at once."""
        got: list[QueueMessage] = []
        deadline = None
        while len(got) < self.batch_size and not self._stopping.is_set():
            wait = self.wait_s if deadline is None else min(self.wait_s, deadline - anyio.current_time())
            if wait < 0.001:  # the wire counts milliseconds: less would be a poll of 0 ms, again and again
                break
            more = await self.queue.receive(min(self.batch_size - len(got), RECEIVE_MAX), wait_s=wait,
                                            visibility_timeout_s=self.visibility_timeout_s)
            for m in more:
                self._held[m.receipt_handle] = m
            got += more
            if got and deadline is None:
                deadline = anyio.current_time() + self.batch_window_s
        if self._stopping.is_set() and got:
            with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_TIMEOUT_S):
                await self._release(got)
            return []
        return got

    # -- one batch ---------------------------------------------------------------------------------------------
    async def _handle(self, got: list[QueueMessage]) -> None:
        async with anyio.create_task_group() as tg:
            if self.heartbeat:
                tg.start_soon(self._beat, got)
            try:
                ok, failed = await (self._call_batch(got) if self.batch else self._call_each(got))
            finally:
                tg.cancel_scope.cancel()
        await self._settle(ok, failed)

    async def _call_batch(self, got: list[QueueMessage]) -> tuple[list[QueueMessage], list[QueueMessage]]:
        self._batches += 1
        try:
            bad = failed_ids(await _call(self.handler, got), got)
        except anyio.get_cancelled_exc_class():
            raise
        except TypeError as exc:
            if self._error is None and "batch handler" in str(exc):
                self._error = exc
                self.stop()
            log.error("worker on %s: %s", self.queue.name, exc)
            return [], got
        except Exception:
            log.exception("worker on %s: the handler failed on a batch of %d", self.queue.name, len(got))
            return [], got
        if self.fifo and bad:  # keep group order: a failed message's group comes back whole from it on
            groups: set[str | None] = set()
            for m in got:
                if m.message_id in bad or m.group_id in groups:
                    groups.add(m.group_id)
                    bad.add(m.message_id)
        return [m for m in got if m.message_id not in bad], [m for m in got if m.message_id in bad]

    async def _call_each(self, got: list[QueueMessage]) -> tuple[list[QueueMessage], list[QueueMessage]]:
        ok, failed = [], []
        blocked: set[str | None] = set()  # FIFO: groups after a failure, skipped to keep order
        for m in got:
            if self.fifo and m.group_id in blocked:
                failed.append(m)
                continue
            self._batches += 1
            try:
                await _call(self.handler, m)
            except anyio.get_cancelled_exc_class():
                raise
            except Exception:
                log.exception("worker on %s: the handler failed on message %s", self.queue.name, m.message_id)
                failed.append(m)
                blocked.add(m.group_id)
            else:
                ok.append(m)
        return ok, failed

    async def _beat(self, got: list[QueueMessage]) -> None:
        """Extend the visibility of a batch whose handler still runs, at half the timeout."""
        vt = self.visibility_timeout_s or 30.0
        while True:
            await anyio.sleep(vt / 2)
            for chunk in self._chunks([m for m in got if m.receipt_handle in self._held]):
                try:
                    await self.queue.change_visibility_batch(chunk, vt)
                except MillpondError as exc:
                    log.warning("worker on %s: heartbeat failed (%s)", self.queue.name, exc)

    async def _settle(self, ok: list[QueueMessage], failed: list[QueueMessage]) -> None:
        for chunk in self._chunks(ok):
            try:
                errors = await self.queue.delete_batch(chunk)
            except MillpondError as exc:  # they come back after their timeout and are handled again
                log.warning("worker on %s: delete failed (%s)", self.queue.name, exc)
                errors = [exc] * len(chunk)
            self._processed += sum(e is None for e in errors)
            for m in chunk:
                self._held.pop(m.receipt_handle, None)
        self._failed += len(failed)
        if self.backoff_s is not None:
            for m in failed:  # by receive count: backoff_s, twice that, ... up to backoff_max_s
                delay = min(self.backoff_max_s, self.backoff_s * 2.0 ** min(m.receive_count - 1, 64))
                try:
                    await self.queue.change_visibility(m, delay)
                except MillpondError as exc:
                    log.warning("worker on %s: backoff failed (%s)", self.queue.name, exc)
        for m in failed:
            self._held.pop(m.receipt_handle, None)

    async def _release(self, msgs: list[QueueMessage]) -> None:
        for chunk in self._chunks(msgs):
            try:
                errors = await self.queue.change_visibility_batch(chunk, 0.0)
                self._released += sum(e is None for e in errors)
            except MillpondError as exc:
                log.warning("worker on %s: releasing failed (%s)", self.queue.name, exc)
            for m in chunk:
                self._held.pop(m.receipt_handle, None)

    def _chunks(self, msgs: Iterable[QueueMessage]) -> list[list[QueueMessage]]:
        """``msgs`` cut into batch requests of the broker's bound."""
        msgs, most = list(msgs), batch_entries_max(self.queue.client._conn)
        return [msgs[i:i + most] for i in range(0, len(msgs), most)]


async def _call(handler: Callable[[Any], Any], arg: Any) -> Any:
    result = handler(arg)
    if inspect.isawaitable(result):
        result = await result
    return result


@seconds_api
class SyncWorker:
    """Blocking twin of ``Worker`` (``SyncQueue.worker``): the handler is a plain function, run in worker threads.
    ``with q.worker(handler) as w:`` runs it in the background until the block ends (then stops it as ``Worker``
    does); ``run()`` blocks until ``stop()`` from another thread or Ctrl-C."""

    def __init__(self, portal: Any, queue: Queue, handler: Callable[[Any], Any], **options: Any) -> None:
        async def in_thread(arg: Any) -> Any:
            return await anyio.to_thread.run_sync(handler, arg)

        self._portal = portal
        self._worker: Worker = portal.call(lambda: Worker(queue, in_thread, **options))
        self._future: Any = None

    def start(self) -> SyncWorker:
        if self._future is None:
            started = self._portal.call(anyio.Event)

            async def main() -> None:
                async with self._worker:
                    started.set()
                    await self._worker.wait()

            self._future = self._portal.start_task_soon(main)
            self._portal.call(started.wait)
        return self

    def stop(self) -> None:
        """Stop (as ``Worker.stop``) and block until stopped; raises what stopped the worker, if anything did."""
        if self._future is None:
            return
        self._portal.call(self._worker.stop)
        self._future.result()

    def run(self) -> None:
        """Start if not started, and block until stopped (``stop()`` from another thread, Ctrl-C)."""
        self.start()
        try:
            self._future.result()
        except KeyboardInterrupt:
            self.stop()
            raise

    def statistics(self) -> WorkerStatistics:
        return self._portal.call(self._worker.statistics)

    def __enter__(self) -> SyncWorker:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
