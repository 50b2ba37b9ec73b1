# One client connection, in its own nursery: a reader that takes frames one at a time and hands each to the
# handler (the request loop), a writer that sends the answers, and a watchdog for the handshake and idle timeouts.
# Owns the per-connection bounds (requests in flight and answer bytes, counted per frame) and the guarantee that
# nothing a peer does ends anything but its own connection. Knows no protocol: frames are bytes to it, answers are
# lists of pieces, and the codec's state (``session``) is opaque.
from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

import trio

from millpond.broker.wire.errors import FrameTooLargeError
from millpond.broker.wire.frames import unwritten

if TYPE_CHECKING:
    from millpond.broker.config import BrokerConfig

log = logging.getLogger("millpond.server")

# Pieces at least this large are sent on their own, as they are (stored batches: no copy); smaller ones are joined.
LARGE_PIECE_BYTES = 64 * 1024
# After the peer closed its side, answers still owed are sent for at most this long (a half-closed peer reads them).
EOF_LINGER_S = 30.0
# Closing the stream (and flushing the last answers of ``close_after``) never takes longer than this.
CLOSE_TIMEOUT_S = 1.0
# The reader lets other connections run after handing over this many frames, or once the answers they produced
# add up to this many bytes (a burst of large fetches does not hold the event loop for all of them).
FRAMES_PER_CHECKPOINT = 64
ANSWER_BYTES_PER_CHECKPOINT = 1024 * 1024

Piece = bytes | bytearray | memoryview
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16  # pieces one writev takes


class Decoder(Protocol):
    def feed(self, data: bytes) -> object: ...
    def next_frame_view(self) -> memoryview | None: ...  # valid until released, before the next feed


class Handler(Protocol):
    """What a connection needs from the request loop."""

    def on_frame(self, conn: "Connection", body: bytes | memoryview) -> None: ...  # body: only during the call
    def on_closed(self, conn: "Connection") -> None: ...
    def on_eof(self, conn: "Connection") -> None: ...  # the peer will send nothing more (it may still read)
    def on_frames_done(self, conn: "Connection") -> None: ...  # every frame of one read was handled
    def new_decoder(self, limits: "ConnectionLimits") -> Decoder: ...
    def frame_too_large(self, conn: "Connection", exc: FrameTooLargeError) -> list[Piece]: ...


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The bounds of one connection. Memory held for a peer is at most ``outbox_bytes_max`` plus one answer, plus
    the decoder's buffer (at most ``frame_bytes_max`` + ``receive_bytes``); timeouts of 0 are off."""

    frame_bytes_max: int = 16 * 1024 * 1024  # largest request frame read
    requests_in_flight_max: int = 1024  # frames handed to the handler and not yet answered
    outbox_bytes_max: int = 32 * 1024 * 1024  # answer bytes not yet sent before reading and answering pause
    handshake_timeout_s: float = 10.0  # from accept until the codec sets ``handshaken``
    idle_timeout_s: float = 600.0  # no request, nothing sent, nothing waited on the broker for
    receive_bytes: int = 256 * 1024  # one socket read
    coalesce_bytes_max: int = 256 * 1024  # small answers ready together are joined into one send up to this

    @classmethod
    def from_config(cls, config: "BrokerConfig") -> "ConnectionLimits":
        return cls(
            frame_bytes_max=config.frame_bytes_max,
            requests_in_flight_max=config.requests_in_flight_max,
            outbox_bytes_max=config.connection_outbox_bytes_max,
            handshake_timeout_s=config.handshake_timeout_s,
            idle_timeout_s=config.idle_timeout_s,
        )


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    frames: int  # frames handed to the handler so far
    in_flight: int  # of those, not yet answered
    unsent_bytes: int  # answer bytes queued or being sent
    parked_answers: int  # ``when_room`` callbacks waiting for room
    buffered_bytes: int  # read from the peer, not yet taken as frames


class Connection:
    """Serves one stream with ``handler`` until the peer leaves, a bound or timeout closes it, or ``close()``.

    The handler answers every frame it is given with exactly one ``send`` (or ends the connection with
    ``close_after``). Everything here is called from the Trio thread; nothing but ``run`` and ``drained`` awaits.
    """

    __slots__ = (
        "stream", "peer", "host", "handler", "limits", "closed", "session", "handshaken", "answer_bytes_max",
        "in_flight", "held_bytes", "share", "frames", "_out", "_out_bytes", "_writer_wakeup", "_writing", "_defer_write", "_read_room", "_room_waiters", "_quiet",
        "_progress", "_closing", "_scope", "_last_progress", "_decoder", "_writer_done", "_fd",
    )

    def __init__(self, stream: trio.abc.Stream, peer: str, handler: Handler, *, limits: ConnectionLimits) -> None:
        self.stream = stream
        self.peer = peer
        self.host = peer.rsplit(":", 1)[0] if ":" in peer else peer
        self.handler = handler
        self.limits = limits
        self.closed = False
        self.session: Any = None
        self.handshaken = False
        self.answer_bytes_max = limits.frame_bytes_max
        self.in_flight = 0
        self.held_bytes = 0  # bytes of this peer's parked requests the request loop holds (``hold``/``release``)
        # this connection's share of the broker-wide bound on unsent answers and held requests (set by the broker)
        self.share: Callable[[], int] | None = None
        self.frames = 0
        self._out: list[Piece] = []
        self._out_bytes = 0
        self._writer_wakeup = trio.Event()
        self._writing = False  # a task is sending the outbox (the writer, or the reader right after answering)
        self._defer_write = False  # the reader is handing a frame over: it sends the answers itself afterwards
        self._read_room: trio.Event | None = None  # the reader waits on it while a bound is reached
        self._room_waiters: deque[Callable[[], None]] = deque()
        self._quiet: trio.Event | None = None  # ``drained`` waits on it
        self._progress: trio.Event | None = None  # the idle watchdog waits on it while the broker owes answers
        self._closing = False  # no more frames are read and no more answers queued
        self._scope: trio.CancelScope | None = None
        self._last_progress = 0.0
        self._decoder: Decoder | None = None
        self._writer_done = trio.Event()
        sock = getattr(stream, "socket", None)  # a socket stream: answers can be written without waiting
        self._fd: int | None = sock.fileno() if sock is not None else None

    # -- the request loop's side (synchronous) -----------------------------------------------------------------
    def send(self, pieces: list[Piece]) -> None:
        """Queue the whole answer to one request; the pieces are sent in order, large ones without a copy."""
        self.in_flight -= 1
        if self._closing:
            return
        n = 0
        for p in pieces:
            n += p.nbytes if type(p) is memoryview else len(p)
        self._out += pieces
        self._out_bytes += n
        if not self._defer_write:
            if not self._writing and self._fd is not None:
                self._write_now()  # an answer made by another connection's request (a woken fetch): no task hop
            if self._out:
                self._writer_wakeup.set()
        if self._read_room is not None:
            self._wake_reader()
        if self._progress is not None:  # the idle watchdog waits for the broker: its answer is here
            self._last_progress = trio.current_time()
            self._made_progress()
        if n == 0 and self._out_bytes == 0 and self.in_flight == 0:
            self._became_quiet()

    def close_after(self, pieces: list[Piece]) -> None:
        """End the connection after sending ``pieces`` (and what was queued before them): no frame is read,
        no answer queued, after this call."""
        if self._closing:
            return
        self._out += pieces
        self._out_bytes += sum(p.nbytes if type(p) is memoryview else len(p) for p in pieces)
        self._closing = True
        self._writer_wakeup.set()
        self._room_waiters.clear()
        if self._read_room is not None:
            self._read_room.set()

    def outbox_limit(self) -> int:
        """Unsent answer bytes (plus held request bytes) above which this peer is not read and its parked answers
        are not built: ``outbox_bytes_max``, or less when the broker's shared bound is spread over many peers."""
        limit = self.limits.outbox_bytes_max
        return limit if self.share is None else min(limit, self.share())

    def hold(self, nbytes: int) -> None:
        """The request loop parked a request of ``nbytes``: it counts against the outbox bound, so a peer's parked
        requests (shaped produces holding their batches) cannot grow without bound either."""
        self.held_bytes += nbytes

    def release(self, nbytes: int) -> None:
        """A parked request of ``nbytes`` was resumed or dropped."""
        self.held_bytes -= nbytes
        if self._read_room is not None:
            self._wake_reader()

    def when_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` now if the outbox is below its bound (and no earlier callback waits), else once the
        writer has sent enough (first in, first out). Dropped if the connection is ending (``on_closed`` follows).

        Room here is the outbox only: the request that ``callback`` answers is already counted in flight.
        """
        if self._closing:
            return
        if not self._room_waiters and self._out_bytes < self.outbox_limit():
            callback()
        else:
            self._room_waiters.append(callback)

    async def drained(self) -> None:
        """Return once nothing is in flight or unsent, or the connection has ended."""
        while not self.closed and (self.in_flight > 0 or self._out_bytes > 0):
            if self._quiet is None:
                self._quiet = trio.Event()
            await self._quiet.wait()

    def close(self) -> None:
        """End the connection now (unsent answers are dropped); ``run`` returns soon after."""
        self._closing = True
        self._room_waiters.clear()
        if self._scope is not None:
            self._scope.cancel()

    def statistics(self) -> ConnectionStatistics:
        decoder = self._decoder
        return ConnectionStatistics(self.frames, self.in_flight, self._out_bytes, len(self._room_waiters),
                                    getattr(decoder, "buffered_bytes", 0) if decoder is not None else 0)

    # -- run -----------------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve until the connection ends. Never raises (only a cancellation from outside passes through):
        whatever goes wrong in this connection's tasks ends this connection and nothing else."""
        try:
            self._last_progress = trio.current_time()
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                if self._closing:  # close() came before run()
                    nursery.cancel_scope.cancel()
                nursery.start_soon(self._writer)
                if self.limits.handshake_timeout_s > 0 or self.limits.idle_timeout_s > 0:
                    nursery.start_soon(self._watchdog)
                eof = await self._reader()
                if eof:
                    # The peer will send nothing more; a half-closed peer still reads the answers it is owed, except
                    # those only a later request of its own could end (the handler ends them now).
                    self.handler.on_eof(self)
                    with trio.move_on_after(EOF_LINGER_S):
                        await self.drained()
                else:
                    with trio.move_on_after(CLOSE_TIMEOUT_S):  # close_after: let the writer flush
                        await self._writer_done.wait()
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as group:
            log.debug("connection from %s ended: %s", self.peer, _first(group))
        except* FrameTooLargeError as group:  # a decoder that raised outside next_frame
            log.warning("closing connection from %s: %s", self.peer, _first(group))
        except* Exception as group:
            log.error("connection from %s ended by an error", self.peer, exc_info=_first(group))
        finally:
            await self._finish()

    async def _finish(self) -> None:
        self._closing = True
        self.closed = True
        self._room_waiters.clear()
        self._out = []
        self._out_bytes = 0
        self._became_quiet()
        if self._read_room is not None:
            self._read_room.set()
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + CLOSE_TIMEOUT_S
            try:
                await self.stream.aclose()
            except Exception as exc:  # the stream is going away either way
                log.debug("closing connection from %s: %s", self.peer, exc)
        try:
            self.handler.on_closed(self)
        except Exception:
            log.exception("on_closed failed for connection from %s", self.peer)

    # -- reader --------------------------------------------------------------------------------------------------
    def _has_read_room(self) -> bool:
        return (self.in_flight < self.limits.requests_in_flight_max
                and self._out_bytes + self.held_bytes < self.outbox_limit())

    def _wake_reader(self) -> None:
        room = self._read_room
        if room is not None and (self._closing or self._has_read_room()):
            self._read_room = None
            room.set()

    async def _reader(self) -> bool:
        """Hand frames to the handler while there is room; read only when no whole frame is buffered.
        Returns True at end of stream, False when the connection is closing."""
        handler = self.handler
        decoder = self._decoder = handler.new_decoder(self.limits)
        receive_bytes = self.limits.receive_bytes
        while True:
            taken = 0
            mark = self._out_bytes
            while True:
                if not self._has_read_room():
                    if self._out:
                        self._writer_wakeup.set()
                    room = self._read_room = trio.Event()
                    await room.wait()
                if self._closing:
                    return False
                try:
                    body = decoder.next_frame_view()  # released below, before the decoder is fed again
                except FrameTooLargeError as exc:
                    log.warning("closing connection from %s: %s", self.peer, exc)
                    self.close_after(handler.frame_too_large(self, exc))
                    return False
                if body is None:
                    break
                self.in_flight += 1
                self.frames += 1
                self._defer_write = True
                try:
                    handler.on_frame(self, body)
                finally:
                    self._defer_write = False
                    body.release()
                if self._closing:
                    return False
                taken += 1
                if taken % FRAMES_PER_CHECKPOINT == 0 or self._out_bytes - mark >= ANSWER_BYTES_PER_CHECKPOINT:
                    if self._out:
                        self._writer_wakeup.set()
                    await trio.lowlevel.checkpoint()
                    mark = self._out_bytes
            if taken:
                self._last_progress = trio.current_time()
                self._made_progress()
                handler.on_frames_done(self)
            if self._out and not self._writing:
                # answers to what was just read go out from here: no hop to the writer task on a request's path
                if self._fd is not None:
                    self._write_now()
                if self._out:
                    await self._write_out()
            data = await self.stream.receive_some(receive_bytes)
            if not data:
                return True
            decoder.feed(data)

    # -- writer --------------------------------------------------------------------------------------------------
    async def _writer(self) -> None:
        try:
            await self._write_until_closing()
        finally:
            self._writer_done.set()

    async def _write_until_closing(self) -> None:
        while True:
            while not self._out or self._writing:
                if self._closing and self._out_bytes == 0 and not self._writing:
                    return
                self._writer_wakeup = trio.Event()
                await self._writer_wakeup.wait()
            await self._write_out()

    async def _write_out(self) -> None:
        """Send the outbox until it is empty: small answers joined into one send, large pieces (stored batches)
        sent as they are. Called by the writer task, or by the reader right after it answered frames."""
        stream = self.stream
        limits = self.limits
        self._writing = True
        try:
            while self._out:
                pieces = self._out
                self._out = []
                small: list[Piece] = []
                small_bytes = 0
                for p in pieces:
                    n = p.nbytes if type(p) is memoryview else len(p)
                    if n < LARGE_PIECE_BYTES:
                        small.append(p)
                        small_bytes += n
                        if small_bytes < limits.coalesce_bytes_max:
                            continue
                    if small:
                        await stream.send_all(small[0] if len(small) == 1 else b"".join(small))
                        self._sent(small_bytes)
                        small = []
                        small_bytes = 0
                    if n >= LARGE_PIECE_BYTES:
                        await stream.send_all(p)
                        self._sent(n)
                if small:
                    await stream.send_all(small[0] if len(small) == 1 else b"".join(small))
                    self._sent(small_bytes)
        finally:
            self._writing = False
            if self._out or self._closing:
                self._writer_wakeup.set()  # what came meanwhile, or the close: the writer takes over

    def _write_now(self) -> None:
        """Write what the socket takes at once, without waiting (the outbox in order, as the writer would); the
        rest stays for the writer task. Only while no task is sending, so nothing interleaves."""
        out = self._out
        if not out or len(out) > _IOV_MAX:
            return
        try:
            n = os.writev(self._fd, out)
        except OSError:
            return  # would block, or the socket failed: the writer task waits, or meets the error, as usual
        self._out = unwritten(out, n)
        self._sent(n)

    def _sent(self, n: int) -> None:
        """``n`` answer bytes left: make room (parked answers first, in order, then the reader)."""
        self._out_bytes -= n
        self._last_progress = trio.current_time()
        if self._progress is not None:
            self._made_progress()
        waiters = self._room_waiters
        limit = self.outbox_limit()
        while waiters and self._out_bytes < limit and not self._closing:
            waiters.popleft()()
        if self._read_room is not None:
            self._wake_reader()
        if self._out_bytes == 0 and self.in_flight == 0:
            self._became_quiet()

    def _became_quiet(self) -> None:
        quiet = self._quiet
        if quiet is not None:
            self._quiet = None
            quiet.set()

    def _made_progress(self) -> None:
        progress = self._progress
        if progress is not None:
            self._progress = None
            progress.set()

    # -- handshake and idle timeouts ----------------------------------------------------------------------------
    async def _watchdog(self) -> None:
        limits = self.limits
        if limits.handshake_timeout_s > 0 and not self.handshaken:
            await trio.sleep_until(self._last_progress + limits.handshake_timeout_s)
            if not self.handshaken:
                log.info("closing connection from %s: no handshake within %g s", self.peer,
                         limits.handshake_timeout_s)
                self.close()
                return
        idle = limits.idle_timeout_s
        if idle <= 0:
            return
        while True:
            if self.in_flight > 0 and self._out_bytes == 0:
                # The broker owes answers (long polls, acks held until durable): the peer is waiting, not idle.
                progress = self._progress = trio.Event()
                await progress.wait()
                continue
            deadline = self._last_progress + idle
            if trio.current_time() >= deadline:
                what = "answers unread" if self._out_bytes else "no request"
                log.info("closing connection from %s: idle for %g s (%s)", self.peer, idle, what)
                self.close()
                return
            await trio.sleep_until(deadline)


def _first(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


__all__ = ["Connection", "ConnectionLimits", "ConnectionStatistics", "Handler"]
