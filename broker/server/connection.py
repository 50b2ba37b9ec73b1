# One client connection: a reader task that decodes frames and hands each request to the broker, and a writer task
# that coalesces every answer ready at that moment into one send. Owns backpressure (requests in flight, buffered
# answer bytes); knows nothing of what the requests mean.
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from millpond.broker.wire.errors import FrameTooLargeError, MillpondError
from millpond.broker.wire.frames import FrameDecoder, encode_fetch_answer_parts, encode_response_parts

if TYPE_CHECKING:
    from millpond.broker.server.broker import Broker

log = logging.getLogger("millpond.server")

RECEIVE_BYTES = 256 * 1024
# Stop reading new requests while this many answer bytes wait to be sent: a slow reader cannot make us buffer more.
OUTBOX_BYTES_MAX = 32 * 1024 * 1024
COALESCE_BYTES_MAX = 256 * 1024


class Connection:
    __slots__ = (
        "broker", "stream", "peer", "host", "client_id", "handshaken", "closed", "in_flight",
        "_out", "_out_bytes", "_writer_wakeup", "_capacity", "_drained",
    )

    def __init__(self, broker: "Broker", stream: trio.abc.Stream, peer: str) -> None:
        self.broker = broker
        self.stream = stream
        self.peer = peer
        self.host = peer.rsplit(":", 1)[0]
        self.client_id = ""
        self.handshaken = False
        self.closed = False
        self.in_flight = 0
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._writer_wakeup = trio.Event()
        self._capacity = trio.Event()
        self._drained = trio.Event()

    # -- answers, callable from any broker code (sync) ---------------------------------------------------------
    def respond(self, correlation_id: int, code: int, body: Any) -> None:
        """Queue one answer; every request read gets exactly one."""
        self.in_flight -= 1
        if self.closed:
            return
        prefix, packed = encode_response_parts(correlation_id, code, body)
        self._out.append(prefix)
        self._out.append(packed)
        self._queued(4 + len(packed))

    def respond_fetch(self, correlation_id: int, rows: list[list[Any]]) -> None:
        """Queue a fetch answer; the stored batches are sent as they were read, not copied into the frame."""
        self.in_flight -= 1
        if self.closed:
            return
        pieces = encode_fetch_answer_parts(correlation_id, rows)
        self._out.extend(pieces)
        self._queued(sum(len(p) for p in pieces))

    def _queued(self, nbytes: int) -> None:
        """``nbytes`` more wait in the outbox: wake the writer, and the reader if there is room for more."""
        self._out_bytes += nbytes
        self._writer_wakeup.set()
        if self.in_flight < self.broker.config.requests_in_flight_max and self._out_bytes < OUTBOX_BYTES_MAX:
            self._capacity.set()

    def respond_error(self, correlation_id: int, exc: MillpondError) -> None:
        self.respond(correlation_id, exc.code, exc.to_wire())

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    # -- tasks -------------------------------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer)
                await self._reader()
                # Reader ended (peer closed or broker stopping): let the writer send what is already answered.
                await self._wait_answered()
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.closed = True
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    await self.stream.aclose()

    async def _wait_answered(self) -> None:
        # Requests still parked (fetch long polls, produce acks) are answered by the broker during shutdown; a peer
        # that closed does not wait for them.
        while (self._out or self.in_flight > 0) and not self.closed and self.broker.stopping:
            self._drained = trio.Event()
            with trio.move_on_after(self.broker.config.shutdown_grace_s):
                await self._drained.wait()

    async def _reader(self) -> None:
        broker = self.broker
        decoder = FrameDecoder(broker.config.frame_bytes_max)
        limit = broker.config.requests_in_flight_max
        while not broker.stopping:
            while self.in_flight >= limit or self._out_bytes >= OUTBOX_BYTES_MAX:
                self._capacity = trio.Event()
                await self._capacity.wait()
            try:
                data = await self.stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            try:
                frames = decoder.feed(data)
            except FrameTooLargeError as exc:
                log.warning("closing connection from %s: %s", self.peer, exc)
                self.in_flight += 1
                self.respond_error(0, exc)
                await self._flush_and_close()
                return
            for body in frames:
                self.in_flight += 1
                broker.dispatch(self, body)

    async def _flush_and_close(self) -> None:
        with trio.move_on_after(1):
            while self._out:
                data = b"".join(self._out)
                self._out.clear()
                self._out_bytes = 0
                await self.stream.send_all(data)
        self.closed = True

    async def _writer(self) -> None:
        stream = self.stream
        while True:
            await self._writer_wakeup.wait()
            self._writer_wakeup = trio.Event()
            while self._out:
                out = self._out
                size = self._out_bytes
                self._out = []
                self._out_bytes = 0
                if self.in_flight < self.broker.config.requests_in_flight_max:
                    self._capacity.set()
                if size <= COALESCE_BYTES_MAX:
                    await stream.send_all(b"".join(out))  # many small answers: one send
                else:
                    for piece in out:  # large fetch answers: no extra copy of the data
                        await stream.send_all(piece)
            if self.in_flight <= 0:
                self._drained.set()
