# The one request loop: frame -> codec -> engine -> outcome -> answer, for every request kind of every front door.
# One waiter map (requests parked on keys and deadlines), one timer (the earliest waiter or engine deadline), worker
# threads for what the cores hand out (Offload, Job, fsync plans). Spells no API name and knows no protocol: the
# codec decodes and encodes, the engine decides.
from __future__ import annotations

import itertools
import logging
import math
import os
import time
from typing import Any, Callable, Hashable

import trio
import trio.testing
from sortedcontainers import SortedList

from millpond.broker.core.engine import Engine
from millpond.broker.core.outcomes import Answer, Context, Job, Offload, Outcome, Wait
from millpond.broker.wire.errors import (
    ConnectionClosedError,
    FrameTooLargeError,
    MillpondError,
    ShuttingDownError,
    StorageError,
    UnknownError,
)

log = logging.getLogger("millpond.server")

# A sync plan covering this many partitions or more runs in up to SYNC_THREADS threads at once (SyncPlan.split);
# python -m millpond.bench.sync_plan here: 4 partitions 1.21 ms in one thread, 1.09 split; 64: 15.6 and 5.5 ms.
SYNC_SPLIT_MIN = 4
SYNC_THREADS = 8
# Under fsync="always" a plan of at most SYNC_INLINE_PARTS_MAX files runs on the loop itself while plans are quick
# (a moving average of their run times, inline or not, under SYNC_INLINE_S): a worker thread's result waits for the
# GIL a busy loop holds (up to the 5 ms switch interval) and the hand-back costs a wake-up, more than the loop loses
# blocking through one or two fast fdatasyncs. Side by side (bench queues --broker, same tree, 2 runs each): send
# batch 1 6,939/6,393 vs 10,082/8,790 messages/s, receive+delete batch 10 15,808/15,356 vs 18,751/16,150, wake-up
# p50 2.08/2.16 vs 1.72/1.63 ms; bench e2e at fsync=always p50 2.24/1.93/2.41 vs 1.51/1.79/1.97 ms. A slow disk
# pushes the average up and plans go back to a thread, so other clients are never held for long.
SYNC_INLINE_PARTS_MAX = 2
SYNC_INLINE_S = 0.001
SYNC_TIME_WEIGHT = 0.2  # of each plan's run time in the moving average


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class _Waiter:
    """A request parked by a ``Wait``: in the key map and the timer list until woken, then queued on its
    connection until the connection has room for its answer."""

    __slots__ = ("conn", "cid", "wait", "timer", "done", "size", "wake_gen")

    def __init__(self, conn: Any, cid: int, wait: Wait, timer: tuple | None, size: int, wake_gen: int) -> None:
        self.conn = conn
        self.cid = cid
        self.wait = wait
        self.timer = timer
        self.done = False
        self.size = size  # the request's frame bytes, counted on the connection while parked
        self.wake_gen = wake_gen  # the loop's wake generation when it parked: it has seen every change before


class RequestLoop:
    """Serves ``engine`` to connections through ``codec``. The connection calls ``on_frame`` for each frame and
    ``on_closed`` once; ``run`` (started in the broker's nursery) owns the timer, the flusher and worker tasks."""

    def __init__(self, engine: Engine, codec: Any, *, fsync: str, fsync_interval_s: float,
                 busy_poll_s: float = 0.0, poll_clock: Callable[[], float] = time.perf_counter) -> None:
        self.engine = engine
        self.codec = codec
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self.stopping = False
        self.requests = 0
        self.fsyncs = 0
        self.sync_time_s = 0.0  # moving average of sync plans' run times (SYNC_TIME_WEIGHT)
        self._by_key: dict[Hashable, dict[_Waiter, None]] = {}
        self._by_conn: dict[Any, dict[_Waiter, None]] = {}
        self._timers: SortedList = SortedList()
        self._seq = itertools.count()
        self._scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._pending: dict[Hashable, int] = {}  # key -> the wake generation that woke it
        self._wake_gen = 0
        self._draining = False
        self._flush_wakeup = trio.Event()
        self._flush_done = trio.Event()
        self._flushing = False
        self.busy_poll_s = busy_poll_s
        self._poll_clock = poll_clock  # wall time in seconds: bounds the poll and times sync plans, as Trio's cannot
        self._poll_until = 0.0  # _poll_clock time the busy poll runs to
        self._poll_wakeup: trio.Event | None = None  # set: the poller is (or is about to be) polling
        self.polling = False  # the busy poll is keeping the event loop from sleeping now

    # -- the connection's side ----------------------------------------------------------------------------------
    def new_decoder(self, limits: Any = None) -> Any:
        return self.codec.new_decoder()

    def frame_too_large(self, conn: Any, exc: FrameTooLargeError) -> list:
        return self.codec.frame_too_large(exc)

    def _session(self, conn: Any) -> Any:
        if conn.session is None:
            conn.session = self.codec.new_session()
            conn.answer_bytes_max = conn.session.answer_bytes_max
        return conn.session

    def context(self, conn: Any) -> Context:
        session = conn.session
        return Context(wall_ms(), trio.current_time(), session.client_id if session is not None else "", conn.host)

    def on_frame(self, conn: Any, body: bytes | memoryview) -> None:
        """One request: decode, handle, answer or park. Never raises: a bad request gets an error answer."""
        self.requests += 1
        poll = self._poll_wakeup
        if poll is not None:
            self._poll_until = self._poll_clock() + self.busy_poll_s
            if not poll.is_set():
                poll.set()
        session = self._session(conn)
        try:
            cid, request = self.codec.decode(session, body)
        except MillpondError as exc:
            conn.send(self.codec.encode_error(exc.details.get("correlation_id", 0), exc))
            return
        if session.handshaken and not conn.handshaken:
            conn.handshaken = True
            conn.answer_bytes_max = session.answer_bytes_max
        if self.stopping:
            conn.send(self.codec.encode_error(cid, ShuttingDownError("the broker is shutting down")))
            return
        self._step(conn, cid, lambda ctx: self.engine.handle(request, ctx), type(request).__name__, len(body))

    def on_frames_done(self, conn: Any) -> None:
        """Every frame of one read was handled: what the engine held for the group commit is written now, in one
        write that runs while the fsync in flight does."""
        if not self.engine.write_held():
            self._after_engine()  # the failed write's waiters are answered

    def on_closed(self, conn: Any) -> None:
        """The connection is gone: its parked requests are abandoned (their answers would go nowhere)."""
        waiters = self._by_conn.pop(conn, ())
        for w in waiters:
            self._unpark(w)
            w.done = True
            abandon = w.wait.abandon
            if abandon is not None:
                self._guard(lambda: abandon(self.context(conn)), "abandoning a parked request")
        if waiters:
            self._after_engine()  # what the abandons woke, handed out or rescheduled

    def on_eof(self, conn: Any) -> None:
        """The peer will send nothing more: its session waits (``Wait.session``: a push subscription) can never be
        ended by it, so they are abandoned now and answered ``CONNECTION_CLOSED`` (a half-closed peer still reads
        it), not held through the connection's end-of-stream linger."""
        mine = self._by_conn.get(conn, {})
        ended = [w for w in mine if w.wait.session and not w.done]
        for w in ended:
            self._unpark(w)
            w.done = True
            del mine[w]
            abandon = w.wait.abandon
            if abandon is not None:
                self._guard(lambda: abandon(self.context(conn)), "abandoning a session request")
            conn.release(w.size)
            conn.send(self.codec.encode_error(w.cid, ConnectionClosedError(
                "the connection's sending side closed: what this request held is given back")))
        if ended:
            if not mine:
                del self._by_conn[conn]
            self._after_engine()

    # -- running outcomes ---------------------------------------------------------------------------------------
    def _step(self, conn: Any, cid: int, call: Callable[[Context], Outcome], what: str, size: int = 0) -> None:
        """Run one engine call for request ``cid`` (``size`` bytes) of ``conn`` and carry out its outcome; errors
        become answers."""
        try:
            outcome = call(self.context(conn))
            kind = type(outcome)
            if kind is Answer:
                if not conn.closed:
                    conn.send(self.codec.encode(cid, outcome.value))
            elif kind is Wait:
                self._park(conn, cid, outcome, size)
            elif kind is Offload:
                self._start(self._offload, conn, cid, outcome, what)
            else:
                raise TypeError(f"engine answered {what} with {outcome!r}")
        except MillpondError as exc:
            self._error(conn, cid, exc)
        except OSError as exc:
            log.error("storage error answering %s: %s", what, exc)
            self._error(conn, cid, StorageError(f"{what}: {exc.strerror or exc}"))
        except Exception:  # a bug must not take the broker down for everyone else
            log.exception("unexpected error answering %s from %s", what, conn.peer)
            self._error(conn, cid, UnknownError(f"internal error answering {what}; see the broker log"))
        self._after_engine()

    def _error(self, conn: Any, cid: int, exc: MillpondError) -> None:
        if not conn.closed:
            conn.send(self.codec.encode_error(cid, exc))

    async def _offload(self, conn: Any, cid: int, offload: Offload, what: str) -> None:
        result = await _in_thread(offload.work)
        self._step(conn, cid, lambda ctx: offload.resume(ctx, result), what)

    def _start(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._nursery is not None, "RequestLoop.run is not running"
        self._nursery.start_soon(fn, *args)

    def _guard(self, fn: Callable[[], Any], what: str) -> None:
        try:
            fn()
        except Exception:
            log.exception("%s failed", what)

    # -- the waiter map -----------------------------------------------------------------------------------------
    def _park(self, conn: Any, cid: int, wait: Wait, size: int) -> None:
        timer = (wait.until, next(self._seq), None) if wait.until < math.inf else None
        w = _Waiter(conn, cid, wait, timer, size, self._wake_gen)
        conn.hold(size)
        if timer is not None:
            timer = w.timer = (wait.until, timer[1], w)
            self._timers.add(timer)
            if self._scope is not None and wait.until < self._scope.deadline:
                self._scope.deadline = wait.until
        for key in wait.keys:
            self._by_key.setdefault(key, {})[w] = None
        self._by_conn.setdefault(conn, {})[w] = None

    def _unpark(self, w: _Waiter) -> None:
        if w.timer is not None:
            self._timers.discard(w.timer)
            w.timer = None
        for key in w.wait.keys:
            waiting = self._by_key.get(key)
            if waiting is not None:
                waiting.pop(w, None)
                if not waiting:
                    del self._by_key[key]

    def _resume(self, w: _Waiter, timed_out: bool) -> None:
        """Take ``w`` off the keys and timers; resume it once its connection has room for an answer."""
        self._unpark(w)

        def go() -> None:
            if w.done:
                return
            w.done = True
            mine = self._by_conn.get(w.conn)
            if mine is not None:
                mine.pop(w, None)
                if not mine:
                    del self._by_conn[w.conn]
            w.conn.release(w.size)
            self._step(w.conn, w.cid, lambda ctx: w.wait.resume(ctx, timed_out), "a parked request", w.size)

        w.conn.when_room(go)

    def wake(self, keys: set[Hashable]) -> None:
        """Resume every waiter on any of ``keys`` (those they wake in turn are handled in the same pass). A waiter
        that parked after the change a key stands for (its wake generation is not older) has seen it and is not
        resumed for it: a produce of 64 batches re-parks on 64 keys, and resuming it again for each of the other
        keys of one fsync's wake would decide 64 times what it has just decided."""
        if not keys:
            return
        self._wake_gen += 1
        gen = self._wake_gen
        pending = self._pending
        for key in keys:
            pending[key] = gen
        if self._draining:
            return
        self._draining = True
        try:
            while pending:
                key, gen = pending.popitem()
                for w in list(self._by_key.get(key, ())):
                    if not w.done and w.wake_gen < gen:
                        self._resume(w, False)
        finally:
            self._draining = False

    def _after_engine(self) -> None:
        """After any engine call: wake what it woke, start the background work it handed out, move the timer."""
        engine = self.engine
        self.wake(engine.take_woken())
        for job in engine.take_jobs():
            self._start(self._job, job)
        if self.fsync == "always":
            self._flush_wakeup.set()
        scope = self._scope
        if scope is not None:
            deadline = engine.next_deadline()
            if deadline < scope.deadline:
                scope.deadline = deadline

    async def _job(self, job: Job) -> None:
        result = await _in_thread(job.work)
        if isinstance(result, BaseException):
            log.error("background work failed: %s", result)
        if job.done is not None:
            self._guard(lambda: job.done(result), "completing background work")
        self._after_engine()

    # -- tasks --------------------------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The timer and the flusher, and a nursery for worker tasks; runs until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._timer_task)
            nursery.start_soon(self._flusher)
            if self.busy_poll_s > 0 and not _virtual_time():
                self._poll_wakeup = trio.Event()
                nursery.start_soon(self._busy_poll)
            task_status.started()

    async def _timer_task(self) -> None:
        timers = self._timers
        engine = self.engine
        while True:
            deadline = min(timers[0][0] if timers else math.inf, engine.next_deadline())
            with trio.CancelScope(deadline=deadline) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            now = trio.current_time()
            while timers and timers[0][0] <= now:
                self._resume(timers[0][2], True)
            if engine.next_deadline() <= now:
                try:
                    self.wake(engine.tick(Context(wall_ms(), now)))
                except Exception:
                    log.exception("timer work failed")
            self._after_engine()

    async def _busy_poll(self) -> None:
        """Keep the event loop polling (epoll with no timeout: this task is always runnable) until ``busy_poll_s``
        after the latest request, then sleep until the next one. A process woken from sleep runs its first
        microseconds of work much slower (caches, CPU idle states), and an awaited request pays that twice per
        round trip; polling is what brokers built for latency do between requests (Seastar's reactor). Wall
        time, not Trio's clock, bounds it."""
        clock = self._poll_clock
        checkpoint = trio.lowlevel.checkpoint
        yield_cpu = os.sched_yield
        while True:
            # Not while a worker thread runs (an fsync plan, offloaded work): polling would hold the GIL the thread
            # needs to hand its result back, for up to the interpreter's switch interval (5 ms) each time.
            self.polling = True
            while clock() < self._poll_until and not self.stopping and not _threads_running[0]:
                # A process with work to do on this core goes first (clients on a busy machine). Also when this
                # loop has tasks to run: yielding only when idle measured worse end to end (e2e p99 at 5,000
                # records/s 2.35 against 1.85 ms side by side, 3 processes on 2 cores).
                yield_cpu()
                await checkpoint()
            self.polling = False
            wakeup = self._poll_wakeup = trio.Event()
            await wakeup.wait()

    async def _flusher(self) -> None:
        """Group commit: one fsync plan in a worker thread covers every append made meanwhile. ``always`` flushes
        whenever something waits; ``interval`` every ``fsync_interval_s``; ``never`` once a second (rolled
        segments' indexes)."""
        period = {"always": 0.0, "interval": self.fsync_interval_s}.get(self.fsync, 1.0)
        while True:
            if period and not self.stopping:
                with trio.move_on_after(period):
                    await self._flush_wakeup.wait()
                if not self.stopping:
                    self._flush_wakeup = trio.Event()
            else:
                await self._flush_wakeup.wait()
                self._flush_wakeup = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Run one fsync plan now (if anything is to be made durable) and apply it."""
        plan = self.engine.sync_plan()
        if plan is None:
            self.wake(self.engine.take_woken())  # a failed write of what the plan would have covered
            return
        try:
            took = [0.0]  # the plan's run time, seconds: the longest piece's in its thread, not the hand-back
            if (self.fsync == "always" and self.sync_time_s < SYNC_INLINE_S
                    and len(plan.parts) <= SYNC_INLINE_PARTS_MAX and not plan.whole_filesystem):
                result = _call(_timed(plan, self._poll_clock, took))
            else:
                result = await _run_pieces(plan.split(SYNC_THREADS if len(plan.parts) >= SYNC_SPLIT_MIN else 1),
                                           took, self._poll_clock)
            self.sync_time_s += SYNC_TIME_WEIGHT * (took[0] - self.sync_time_s)
        except BaseException:
            plan.close()  # cancelled before it ran: give back its file descriptors
            raise
        error = result if isinstance(result, OSError) else None
        if isinstance(result, BaseException) and error is None:
            log.error("fsync plan failed: %r", result)
            error = OSError(str(result))
        if error is not None:
            log.error("fsync failed: %s", error)  # never acknowledge what may not be on disk; the producer retries
        self.fsyncs += 1
        self.wake(self.engine.synced(plan, error))
        self._after_engine()

    # -- shutdown -----------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop taking requests; answer parked requests that have a deadline now (long polls, delays); what waits
        for durability is answered by the final flushes."""
        self.stopping = True
        for _, _, w in list(self._timers):
            self._resume(w, True)
        self._flush_wakeup.set()

    def statistics(self) -> dict[str, int]:
        return {"requests": self.requests, "fsyncs": self.fsyncs,
                "waiting": sum(len(v) for v in self._by_conn.values()), "polling": self.polling}


async def _run_pieces(pieces: list[Any], took: list[float] | None = None,
                      clock: Callable[[], float] = time.perf_counter) -> Any:
    """Run the pieces of a split sync plan in as many worker threads at once; the first error, else None.
    ``took[0]``: raised to the longest piece's run time in its thread, ``clock`` seconds (not the hand-back)."""
    took = [0.0] if took is None else took
    if len(pieces) == 1:
        return await _in_thread(_timed(pieces[0], clock, took))
    results: list[Any] = [None] * len(pieces)

    async def run(i: int) -> None:
        results[i] = await _in_thread(_timed(pieces[i], clock, took))

    async with trio.open_nursery() as nursery:
        for i in range(len(pieces)):
            nursery.start_soon(run, i)
    return next((r for r in results if r is not None), None)


def _timed(plan: Any, clock: Callable[[], float], took: list[float]) -> Callable[[], Any]:
    """``plan.run``, raising ``took[0]`` to its run time if longer."""
    def run() -> Any:
        started = clock()
        try:
            return plan.run()
        finally:
            took[0] = max(took[0], clock() - started)
    return run


def _call(work: Callable[[], Any]) -> Any:
    """``work()``: its result, or the exception it raised (as a value)."""
    try:
        return work()
    except BaseException as exc:  # noqa: BLE001 - handed back to the loop as a value
        return exc


async def _in_thread(work: Callable[[], Any]) -> Any:
    """``work()`` in a worker thread: its result, or the exception it raised (as a value)."""
    if _virtual_time():
        # Under a virtual clock with autojump (tests), time would leap ahead while a thread works, firing every
        # timeout at once; virtual time does not pass during inline work, so the work runs inline there.
        await trio.lowlevel.checkpoint()
        return _call(work)
    _threads_running[0] += 1
    try:
        return await trio.to_thread.run_sync(_call, work)
    finally:
        _threads_running[0] -= 1


_threads_running = [0]  # worker threads running _in_thread work now, process-wide as the GIL they need (the busy poll stands aside meanwhile)


def _virtual_time() -> bool:
    return isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)


async def run_blocking(work: Callable[[], Any]) -> Any:
    """``work()`` off the event loop (inline under a virtual clock); raises what it raised."""
    result = await _in_thread(work)
    if isinstance(result, BaseException):
        raise result
    return result


__all__ = ["RequestLoop", "run_blocking", "wall_ms"]
