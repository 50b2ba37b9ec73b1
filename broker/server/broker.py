# The Trio broker: listener, connections, dispatch to the engine, and the waiting the cores cannot do themselves —
# produce acks held until their fsync (group commit, one fsync in a worker thread covers every append made
# meanwhile), fetch long polls parked until data arrives, and one timer task for every deadline.
from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import trio
from sortedcontainers import SortedList

from millpond.broker.config import BrokerConfig
from millpond.broker.core.engine import Context, Durable, Engine, FetchRequest, ProduceResult, Shaped
from millpond.broker.core.log import LogManager, PartitionLog
from millpond.broker.server.connection import Connection
from millpond.broker.wire.errors import (
    HandshakeRequiredError,
    InvalidRequestError,
    MillpondError,
    ShuttingDownError,
    StorageError,
    UnknownError,
    UnknownTopicOrPartitionError,
)
from millpond.broker.wire.frames import decode_request

log = logging.getLogger("millpond.server")


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _context(conn: Connection) -> Context:
    return Context(wall_ms(), trio.current_time(), conn.client_id, conn.host)


LIMITS_SWEEP_INTERVAL_S = 10.0

# APIs that change when a member's deadline falls (besides the group_* ones).
_GROUP_TIMER_APIS = frozenset({"create_topic", "delete_topic", "add_partitions", "delete_group"})


# fdatasync flushes the data and the file size (what an append changes) and skips the mtime-only inode update.
_datasync = getattr(os, "fdatasync", os.fsync)


def _fsync_all(fds: list[int]) -> OSError | None:
    """Runs in a worker thread. fds are dups owned by this call, so a segment closing meanwhile cannot reuse them."""
    error = None
    for fd in fds:
        try:
            _datasync(fd)
        except OSError as exc:
            error = exc
        finally:
            os.close(fd)
    return error


@dataclass(frozen=True, slots=True)
class BrokerStatistics:
    connections: int
    requests: int
    topics: int
    parked_fetches: int
    pending_acks: int
    fsyncs: int


class _ParkedFetch:
    __slots__ = ("conn", "cid", "req", "keys", "done", "timer")

    def __init__(self, conn: Connection, cid: int, req: FetchRequest) -> None:
        self.conn = conn
        self.cid = cid
        self.req = req
        self.keys = {(t, p) for t, p, _ in req.specs}
        self.done = False
        self.timer: tuple[float, int, Callable[[], None]] | None = None


class Broker:
    """One broker over one data directory. Use ``serve()`` (directly or through ``open_broker``)."""

    def __init__(self, config: BrokerConfig, data_dir: Path) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.log = LogManager(
            self.data_dir,
            defaults=config.topic_defaults,
            batch_bytes_max=config.batch_bytes_max,
            partitions_max=config.partitions_max,
            fsync_mode=config.fsync,
            logger=logging.getLogger("millpond.log"),
        )
        self.engine = Engine(config, self.log)
        self.address: tuple[str, int] | None = None
        self.stopping = False
        self.connections: set[Connection] = set()
        self._requests = 0
        self._fsyncs = 0
        self._acks: dict[PartitionLog, deque[tuple[int, Connection, int, dict[str, Any]]]] = {}
        self._fetches: dict[tuple[str, int], set[_ParkedFetch]] = {}
        self._timers: SortedList = SortedList()
        self._timer_seq = itertools.count()
        self._timer_scope: trio.CancelScope | None = None
        self._group_timer: tuple[float, int, Callable[[], None]] | None = None
        self._flush_wakeup = trio.Event()
        self._flush_idle = trio.Event()
        self._stopped = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._listen_scope: trio.CancelScope | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    async def serve(
        self, *, listen: bool = True, task_status: trio.TaskStatus[Broker] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the log, listen, serve until ``shutdown()``; reports itself through ``task_status`` once listening.

        ``listen=False`` opens no socket: connections are handed in with ``serve_stream`` (tests use in-memory
        streams so virtual time works). Raises ``OSError`` if the address is taken.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.engine.open(wall_ms())
        except BaseException:
            self.log.abandon()  # releases the data directory's lock for whoever tries next
            raise
        listeners: list[trio.SocketListener] = []
        if listen:
            try:
                listeners = await trio.open_tcp_listeners(self.config.port, host=self.config.host)
            except OSError as exc:
                self.log.close()
                raise OSError(exc.errno, f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror}") from None
            sockname = listeners[0].socket.getsockname()
            self.address = (sockname[0], sockname[1])
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._timer_task)
                if self.config.fsync != "never":
                    nursery.start_soon(self._flusher)
                self._schedule(trio.current_time() + self.config.retention_check_interval_ms / 1000, self._retention)
                self._schedule(trio.current_time() + LIMITS_SWEEP_INTERVAL_S, self._sweep_limits)
                self._listen_scope = trio.CancelScope()
                if listeners:
                    nursery.start_soon(self._listen, listeners)
                    log.info("millpond listening on %s:%d (data dir %s, fsync=%s)", self.address[0], self.address[1],
                             self.data_dir, self.config.fsync)
                task_status.started(self)
        finally:
            with trio.CancelScope(shield=True):
                self.log.close()
            self._stopped.set()

    async def shutdown(self) -> None:
        """Stop accepting, answer what is in flight (parked fetches now, produces after their fsync), close."""
        if self.stopping:
            await self._stopped.wait()
            return
        self.stopping = True
        if self._listen_scope is not None:
            self._listen_scope.cancel()
        for parked in list({p for s in self._fetches.values() for p in s}):
            self._answer_fetch(parked)
        self._flush_wakeup.set()
        with trio.move_on_after(self.config.shutdown_grace_s):
            while any(self._acks.values()) or any(c.in_flight > 0 or c.has_output for c in self.connections):
                self._flush_idle = trio.Event()
                self._flush_wakeup.set()
                with trio.move_on_after(0.05):
                    await self._flush_idle.wait()
        for conn in self.connections:
            conn.closed = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        await self._stopped.wait()

    def statistics(self) -> BrokerStatistics:
        return BrokerStatistics(
            connections=len(self.connections),
            requests=self._requests,
            topics=len(self.log.topics),
            parked_fetches=len({p for s in self._fetches.values() for p in s}),
            pending_acks=sum(len(d) for d in self._acks.values()),
            fsyncs=self._fsyncs,
        )

    async def _listen(self, listeners: list[trio.SocketListener]) -> None:
        assert self._listen_scope is not None and self._nursery is not None
        with self._listen_scope:
            async with trio.open_nursery() as accept:
                for listener in listeners:
                    accept.start_soon(self._accept_loop, listener)
        for listener in listeners:
            await listener.aclose()

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        nursery = self._nursery
        assert nursery is not None
        async with listener:
            while True:
                stream = await listener.accept()
                if len(self.connections) >= self.config.connections_max:
                    log.warning("refusing a connection: connections_max=%d reached", self.config.connections_max)
                    await stream.aclose()
                    continue
                nursery.start_soon(self._connection_task, stream)

    async def serve_stream(self, stream: trio.abc.Stream, peer: str = "memory") -> None:
        """Serve one connection over any Trio stream until it closes (the broker must be serving)."""
        await self._connection_task(stream, peer)

    async def _connection_task(self, stream: trio.abc.Stream, peer: str | None = None) -> None:
        if peer is None:
            try:
                peer = "%s:%s" % stream.socket.getpeername()[:2]  # type: ignore[attr-defined]
            except OSError:
                peer = "?"
        conn = Connection(self, stream, peer)
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)

    # -- dispatch (synchronous: a core call completes before the next task runs) ------------------------------
    def dispatch(self, conn: Connection, body: bytes) -> None:
        self._requests += 1
        try:
            cid, api, args = decode_request(body)
        except InvalidRequestError as exc:
            conn.respond_error(exc.details.get("correlation_id", 0), exc)
            return
        try:
            if not conn.handshaken:
                if api != "hello":
                    raise HandshakeRequiredError(f"the first request must be 'hello', got {api!r}")
                answer = self.engine.hello(args)
                conn.client_id = args.get("client_id", "")
                conn.handshaken = True
                conn.respond(cid, 0, answer)
            elif self.stopping:
                raise ShuttingDownError("the broker is shutting down")
            elif api == "produce":
                self._produce(conn, cid, args)
            elif api == "fetch":
                self._fetch(conn, cid, args)
            else:
                answer = self.engine.handle(api, args, _context(conn))
                if isinstance(answer, Durable):
                    self._answer_when_durable(conn, cid, answer)
                else:
                    conn.respond(cid, 0, answer)
                if api == "delete_topic":
                    self._topic_deleted(args["name"])
                if api.startswith("group_") or api in _GROUP_TIMER_APIS:
                    self._sync_group_timer()
        except MillpondError as exc:
            conn.respond_error(cid, exc)
        except OSError as exc:
            log.error("storage error answering %s: %s", api, exc)
            conn.respond_error(cid, StorageError(f"{api}: {exc.strerror or exc}"))
        except Exception:  # a bug must not take the broker down for everyone else
            log.exception("unexpected error answering %s from %s", api, conn.peer)
            conn.respond_error(cid, UnknownError(f"internal error answering {api}; see the broker log"))

    def _produce(self, conn: Connection, cid: int, args: dict[str, Any]) -> None:
        result = self.engine.produce(args, _context(conn))
        if isinstance(result, Shaped):
            self._schedule(trio.current_time() + result.delay_s, lambda: self._produce_shaped(conn, cid, result))
            return
        self._acknowledge(conn, cid, result)

    def _produce_shaped(self, conn: Connection, cid: int, shaped: Shaped) -> None:
        try:
            result = self.engine.complete(shaped, wall_ms())
        except MillpondError as exc:
            conn.respond_error(cid, exc)
            return
        except OSError as exc:
            conn.respond_error(cid, StorageError(f"produce: {exc.strerror or exc}"))
            return
        self._acknowledge(conn, cid, result)

    def _acknowledge(self, conn: Connection, cid: int, result: ProduceResult) -> None:
        if self._respond_when_durable(conn, cid, result.partition_log, result.durable_offset, result.answer):
            self._wake_fetches(result.partition_log)

    def _answer_when_durable(self, conn: Connection, cid: int, durable: Durable) -> None:
        self._respond_when_durable(conn, cid, durable.partition_log, durable.offset, durable.answer)

    def _respond_when_durable(
        self, conn: Connection, cid: int, plog: PartitionLog, offset: int, answer: dict[str, Any]
    ) -> bool:
        """Answer now if ``plog``'s high watermark has reached ``offset`` (returns True), else park the answer
        until the flusher's fsync moves it there."""
        if offset <= plog.high_watermark:
            conn.respond(cid, 0, answer)
            return True
        waiters = self._acks.get(plog)
        if waiters is None:
            waiters = self._acks[plog] = deque()
        waiters.append((offset, conn, cid, answer))
        self._flush_wakeup.set()
        return False

    # -- consumer-group liveness: one timer entry, at the coordinator's earliest deadline ----------------------
    def _sync_group_timer(self) -> None:
        deadline = self.engine.groups.next_deadline()
        current = self._group_timer
        if current is not None and deadline is not None and current[0] == deadline:
            return
        if current is not None:
            self._timers.discard(current)
            self._group_timer = None
        if deadline is not None:
            self._group_timer = self._schedule(deadline, self._expire_members)

    def _expire_members(self) -> None:
        self._group_timer = None
        for group, member in self.engine.groups.expire(trio.current_time()):
            log.info("consumer group %s: member %s expired", group, member)
        self._sync_group_timer()

    def _fetch(self, conn: Connection, cid: int, args: dict[str, Any]) -> None:
        req = self.engine.parse_fetch(args)
        rows, ready = self.engine.fetch(req)
        if ready or req.max_wait_ms == 0:
            conn.respond_fetch(cid, rows)
            return
        parked = _ParkedFetch(conn, cid, req)
        for key in parked.keys:
            self._fetches.setdefault(key, set()).add(parked)
        parked.timer = self._schedule(trio.current_time() + req.max_wait_ms / 1000, lambda: self._answer_fetch(parked))

    def _answer_fetch(self, parked: _ParkedFetch) -> None:
        if parked.done:
            return
        parked.done = True
        if parked.timer is not None:
            self._timers.discard(parked.timer)
        for key in parked.keys:
            waiting = self._fetches.get(key)
            if waiting is not None:
                waiting.discard(parked)
                if not waiting:
                    del self._fetches[key]
        rows, _ = self.engine.fetch(parked.req)
        parked.conn.respond_fetch(parked.cid, rows)

    def _wake_fetches(self, plog: PartitionLog) -> None:
        waiting = self._fetches.get((plog.topic, plog.partition))
        if not waiting:
            return
        for parked in list(waiting):
            if parked.conn.closed:
                self._answer_fetch(parked)
                continue
            for topic, partition, offset in parked.req.specs:
                if topic == plog.topic and partition == plog.partition and offset < plog.high_watermark:
                    self._answer_fetch(parked)
                    break

    def _topic_deleted(self, name: str) -> None:
        for plog, waiters in list(self._acks.items()):
            if plog.topic == name:
                del self._acks[plog]
                for _, conn, cid, _ in waiters:
                    conn.respond_error(cid, UnknownTopicOrPartitionError(f"topic {name!r} was deleted before the write was durable"))
        for key in [k for k in self._fetches if k[0] == name]:
            for parked in list(self._fetches.get(key, ())):
                self._answer_fetch(parked)

    # -- group commit --------------------------------------------------------------------------------------------
    async def _flusher(self) -> None:
        interval = self.config.fsync_interval_ms / 1000 if self.config.fsync == "interval" else 0.0
        while True:
            if interval and not self.stopping:
                await trio.sleep(interval)
            else:
                await self._flush_wakeup.wait()
            self._flush_wakeup = trio.Event()
            dirty = self.log.dirty()
            if dirty:
                targets = []
                for plog in dirty:
                    fd, end = plog.sync_fd()
                    targets.append((plog, os.dup(fd), end))
                error = await trio.to_thread.run_sync(_fsync_all, [t[1] for t in targets])
                self._fsyncs += 1
                if error is not None:
                    # Never acknowledge what may not be on disk; the producer retries.
                    log.error("fsync failed: %s", error)
                    self._fail_acks([t[0] for t in targets], StorageError(f"fsync failed: {error.strerror}"))
                    continue
                for plog, _, end in targets:
                    plog.mark_durable(end)
                    self._release_acks(plog)
                    self._wake_fetches(plog)
            self._flush_idle.set()

    def _release_acks(self, plog: PartitionLog) -> None:
        waiters = self._acks.get(plog)
        if not waiters:
            return
        hw = plog.high_watermark
        while waiters and waiters[0][0] <= hw:
            _, conn, cid, answer = waiters.popleft()
            conn.respond(cid, 0, answer)

    def _fail_acks(self, plogs: list[PartitionLog], exc: MillpondError) -> None:
        for plog in plogs:
            waiters = self._acks.pop(plog, None) or ()
            for _, conn, cid, _ in waiters:
                conn.respond_error(cid, exc)

    # -- the one timer task ------------------------------------------------------------------------------------
    def _schedule(self, deadline: float, callback: Callable[[], None]) -> tuple[float, int, Callable[[], None]]:
        """Run ``callback`` at ``deadline`` (trio clock, seconds); the returned entry can be discarded."""
        entry = (deadline, next(self._timer_seq), callback)
        self._timers.add(entry)
        scope = self._timer_scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline
        return entry

    async def _timer_task(self) -> None:
        timers = self._timers
        while True:
            now = trio.current_time()
            while timers and timers[0][0] <= now:
                _, _, callback = timers.pop(0)
                try:
                    callback()
                except Exception:
                    log.exception("timer callback failed")
            with trio.CancelScope(deadline=timers[0][0] if timers else math.inf) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None

    def _sweep_limits(self) -> None:
        # Gives back the memory of limiter keys that are back to a fresh key's state; bounded work per call.
        self.engine.limits.policies.sweep(int(trio.current_time() * 1e9), max_checks=1000)
        self._schedule(trio.current_time() + LIMITS_SWEEP_INTERVAL_S, self._sweep_limits)

    def _retention(self) -> None:
        try:
            deleted = self.log.enforce_retention(wall_ms())
            if deleted:
                log.info("retention deleted %d segment(s)", deleted)
        except OSError as exc:
            log.error("retention failed: %s", exc)
        self._schedule(trio.current_time() + self.config.retention_check_interval_ms / 1000, self._retention)
