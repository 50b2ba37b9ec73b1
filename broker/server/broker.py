# The Trio broker: opens the engine over a data directory, runs the request loop (broker/server/loop.py) and the
# listener, and shuts down gracefully. Thin: no API name, no waiting rule and no storage detail lives here; a new
# concept is a core plus a codec entry and never edits this file.
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from millpond.broker.config import BrokerConfig
from millpond.broker.core.engine import Engine
from millpond.broker.core.outcomes import Context
from millpond.broker.server.connection import Connection, ConnectionLimits
from millpond.broker.server.frontends.native import NativeCodec
from millpond.broker.server.listener import Listener
from millpond.broker.server.loop import RequestLoop, run_blocking, wall_ms

log = logging.getLogger("millpond.server")

OUTBOX_SHARE_MIN_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class BrokerStatistics:
    connections: int
    requests: int
    topics: int
    waiting: int  # requests parked (long polls, answers held until durable, shaped produces)
    fsyncs: int


class Broker:
    """One broker over one data directory. Use ``serve()`` (directly or through ``open_broker``)."""

    def __init__(self, config: BrokerConfig, data_dir: Path) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.engine = Engine.for_directory(config, self.data_dir)
        self.log = self.engine.log  # for tests and statistics: the topics and their partitions
        self.loop = RequestLoop(self.engine, NativeCodec(config), fsync=config.fsync,
                                fsync_interval_s=config.fsync_interval_s, busy_poll_s=config.busy_poll_s or 0.0)
        # where it listens once serving: "HOST:PORT" as connect() and the CLI take it, and its two parts
        self.address: str | None = None
        self.host: str | None = None
        self.port: int | None = None
        self.connections: set[Connection] = set()
        self._stopped = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._listener: Listener | None = None
        self._connection_limits = ConnectionLimits.from_config(config)

    @property
    def stopping(self) -> bool:
        return self.loop.stopping

    # -- lifecycle ----------------------------------------------------------------------------------------------
    async def serve(
        self, *, listen: bool = True, task_status: trio.TaskStatus[Broker] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the log, listen, serve until ``shutdown()``; reports itself through ``task_status`` once listening.

        ``listen=False`` opens no socket: connections are handed in with ``serve_stream`` (tests use in-memory
        streams so virtual time works). Raises ``OSError`` if the address is taken, ``StorageError`` if the data
        directory cannot be used.
        """
        if listen:  # before the data directory is touched: a taken port leaves nothing behind
            self._listener = await Listener.open(self.config.host, self.config.port,
                                                 connections_max=self.config.connections_max,
                                                 fds_reserved=self.config.fds_reserved)
            self.host, self.port = self._listener.address
            self.address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        try:
            ctx = Context(wall_ms(), trio.current_time())
            await run_blocking(lambda: self._open(ctx))
        except BaseException:
            if self._listener is not None:
                await self._listener.aclose()
            raise
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.loop.run)
                if self._listener is not None:
                    nursery.start_soon(self._listener.serve, self._connection_task, nursery)
                    log.info("millpond listening on %s (data dir %s, fsync=%s, sync: %s)", self.address,
                             self.data_dir, self.config.fsync, self.engine.log.sync_in_effect)
                task_status.started(self)
        finally:
            with trio.CancelScope(shield=True):
                await run_blocking(self._close)
            self._stopped.set()

    def _open(self, ctx: Context) -> None:
        try:
            self.engine.open(ctx)
        except BaseException:
            self.engine.abandon()  # releases the data directory's lock for whoever tries next
            raise

    def _close(self) -> None:
        try:
            self.engine.close()
        except Exception as exc:
            log.error("closing the log: %s", exc)

    async def shutdown(self) -> None:
        """Stop accepting, answer what is in flight (long polls now, produces after their fsync), close."""
        if self.loop.stopping:
            await self._stopped.wait()
            return
        self.loop.stop()
        if self._listener is not None:
            self._listener.stop()
        with trio.move_on_after(self.config.shutdown_grace_s):
            for conn in list(self.connections):
                await conn.drained()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        await self._stopped.wait()

    def statistics(self) -> BrokerStatistics:
        loop = self.loop.statistics()
        return BrokerStatistics(connections=len(self.connections), requests=loop["requests"],
                                topics=len(self.log.topics), waiting=loop["waiting"], fsyncs=loop["fsyncs"])

    # -- connections --------------------------------------------------------------------------------------------
    async def serve_stream(self, stream: trio.abc.Stream, peer: str = "memory") -> None:
        """Serve one connection over any Trio stream until it closes (the broker must be serving)."""
        await self._connection_task(stream, peer)

    def _outbox_share(self) -> int:
        """Each connection's part of ``outbox_bytes_total_max``: an equal share, never below 1 MiB."""
        return max(OUTBOX_SHARE_MIN_BYTES, self.config.outbox_bytes_total_max // max(1, len(self.connections)))

    async def _connection_task(self, stream: trio.abc.Stream, peer: str | None) -> None:
        if peer is None:
            try:
                peer = "%s:%s" % stream.socket.getpeername()[:2]  # type: ignore[attr-defined]
            except OSError:
                peer = "?"
        conn = Connection(stream, peer, self.loop, limits=self._connection_limits)
        conn.share = self._outbox_share
        self.connections.add(conn)
        try:
            await conn.run()  # calls the loop's on_closed as it ends
        finally:
            self.connections.discard(conn)


__all__ = ["Broker", "BrokerStatistics"]
