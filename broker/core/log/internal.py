# The broker's internal topics (__millpond_offsets, __millpond_queues, __millpond_subscriptions): created on first
# open, replayed record by record into the core that owns them, around damage (docs/data-safety.md), and kept short
# by checkpoints, so restart time and disk use follow the live state rather than its history. One partition each;
# what a record means is the owner's. Its only I/O is through the LogManager's partition reads, appends, rolls
# and segment deletions (the log's normal path); time is handed in.
#
# A checkpoint restates the owner's live state as records: a begin marker (the first record of a new segment),
# the state in chunks, an end marker. Once the end marker is durable, the whole segments before the begin marker
# are deleted (the log start moves up to it). Chunks are written by `step`, after the owner's own appends, a
# bounded amount per call, so a big state never stalls the event loop; other requests' events land between chunks.
# So each state record restates its part of the state *as it is when written* (an upsert), and replay applies
# records in log order: an event before the record of the object it touches finds the object absent (the owner
# skips it) and the record restates its effect; an event after applies on top. Hence:
# - replay from the log start 0 (the full history) builds the state from the events alone and skips every state
#   record (each restates what the events already built);
# - replay from a moved log start (older segments deleted) loads state records until an end marker closes a
#   checkpoint whose begin it read; events there apply on top, in order;
# - a checkpoint torn by a crash (no end marker) replaced nothing: its segments' predecessors were not deleted, and
#   its records restate the true state anyway, so applying or skipping them gives the same state.
from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Protocol

import msgpack

from millpond.broker.core.log.manager import LogManager
from millpond.broker.core.log.partition import PartitionLog
from millpond.broker.wire.batch import Record, decode_records, encode_batch, read_header
from millpond.broker.wire.errors import MillpondError

REPLAY_CHUNK_BYTES = 1 << 20
CHECKPOINT_HEADER = "millpond.checkpoint"  # record header: BEGIN, STATE or END; absent on the owner's events
BEGIN, STATE, END = b"begin", b"state", b"end"
# A checkpoint starts when the bytes written since the last one began pass the last one's size plus
# max(CHECKPOINT_BYTES_MIN, CHECKPOINT_FACTOR x its size): its cost is amortised over at least that many bytes of
# events, and a replay reads at most about (2 + factor) x the live state (or the floor).
CHECKPOINT_BYTES_MIN = 64 * 1024 * 1024
CHECKPOINT_FACTOR = 2
CHECKPOINT_STEP_BYTES = 256 * 1024  # state written per step at most: bench/journal_checkpoint.py measures a step's time
# A step after an append that grew the topic by B bytes (the owner's appends since the last step) writes
# CHECKPOINT_STEP_RATIO x B of state, at most the step bytes: the checkpoint outpaces the events, so it ends before the
# topic grows by half the live state more, and a small request carries a small step (256 KiB took 4.1 ms here: a
# queue receive waited behind a whole step while a 1M-message checkpoint was written). Between requests, the
# broker's timer writes CHECKPOINT_BACKGROUND_BYTES every CHECKPOINT_BACKGROUND_INTERVAL_S while a checkpoint is
# being written (``step(background=True)``), so a checkpoint also ends when few events arrive, without every small
# request paying for it (a floor of 8 KiB per step did: publish-to-queue p50 4.10 ms against 1.76 while the
# checkpoint lasted, side by side; docs/data-safety.md).
CHECKPOINT_STEP_RATIO = 2
CHECKPOINT_BACKGROUND_BYTES = 64 * 1024  # about 0.5 ms of state writing (bench/journal_checkpoint.py)
CHECKPOINT_BACKGROUND_INTERVAL_S = 0.01  # so about a twentieth of one core while a checkpoint lasts


class StateWriter(Protocol):
    """An owner's live state as records, a part at a time (see the module comment for what a record must mean)."""

    def chunk(self, now_ms: int, now: float | None, budget_bytes: int) -> list[tuple[bytes | None, bytes]] | None:
        """The next ``(key, value)`` records, about ``budget_bytes`` of them (may be none), read from the
        state as it is now (``now_ms`` wall-clock ms, ``now`` monotonic s or None); None once everything was
        given."""


class RecordsWriter:
    """``StateWriter`` over an iterator of ``(key, value)`` records; make it a generator, so that each record is
    read from the state when it is written."""

    def __init__(self, records: Iterator[tuple[bytes | None, bytes]]) -> None:
        self._records = records

    def chunk(self, now_ms: int, now: float | None, budget_bytes: int) -> list[tuple[bytes | None, bytes]] | None:
        out: list[tuple[bytes | None, bytes]] = []
        size = 0
        for key, value in self._records:
            out.append((key, value))
            size += len(value) + (0 if key is None else len(key))
            if size >= budget_bytes:
                break
        return out or None


def open_internal(logman: LogManager, name: str, config: dict[str, Any], now_ms: int) -> PartitionLog:
    """Internal topic ``name``'s one partition, the topic created with ``config`` if missing (blocking file work:
    call before serving). Raises ``StorageError``."""
    topic = logman.topics.get(name)
    if topic is None:
        topic = logman.create_topic(name, 1, dict(config), now_ms, internal=True)
    return topic.partitions[0]


def stored_records(plog: PartitionLog, log: logging.Logger) -> Iterator[Record]:
    """Every stored record of ``plog`` from its log start, in offset order. A damaged range is logged and skipped
    (only the records stored there are lost; those after it still count); a read that fails otherwise stops there,
    logged, rather than the broker."""
    name = plog.topic
    offset = plog.log_start_offset
    while offset < plog.log_end_offset:
        try:
            data, damaged = plog.read_intact(offset, REPLAY_CHUNK_BYTES)
            records = decode_records(data, name, 0, offset)
        except MillpondError as exc:
            log.error("replay of %s stopped at offset %d: %s", name, offset, exc)
            return
        yield from records
        if damaged is not None:
            log.error("replay of %s skipped a damaged range: %s", name, damaged.message)
            offset = damaged.details["next_offset"]
        elif not records:
            return
        else:
            offset = records[-1].offset + 1


class Checkpoints:
    """Replay and checkpoints of one internal topic's partition ``plog``. ``writer()`` starts a ``StateWriter``
    over the owner's live state; the owner calls ``step`` after each of its appends, once its state holds every
    event appended (nothing applied but not yet written), and a background step between requests while ``writing``.
    ``bytes_min``, ``factor``: when a checkpoint starts (bytes); ``step_bytes``: the most state written by a step
    after an append (bytes; in proportion to what the topic grew by since the last step); ``background_bytes``: the
    state written by a background step (bytes). Counters: ``written`` checkpoints completed,
    ``deleted`` segments deleted since open."""

    def __init__(self, plog: PartitionLog, writer: Callable[[], StateWriter], *, logger: logging.Logger,
                 bytes_min: int = CHECKPOINT_BYTES_MIN, factor: float = CHECKPOINT_FACTOR,
                 step_bytes: int = CHECKPOINT_STEP_BYTES,
                 background_bytes: int = CHECKPOINT_BACKGROUND_BYTES) -> None:
        self.plog = plog
        self._new_writer = writer
        self._log = logger
        self.bytes_min = bytes_min
        self.factor = factor
        self.step_bytes = step_bytes
        self.background_bytes = background_bytes
        self._stepped_bytes = plog.size_bytes  # the partition's size after the last step
        self.written = 0
        self.deleted = 0
        self._base_bytes = 0  # bytes of the segments before the last checkpoint's begin marker
        self._live_bytes = 0  # the last checkpoint's own bytes: the live state's size
        self._writer: StateWriter | None = None  # the checkpoint being written
        self._begin = -1  # its begin marker's offset
        self._begin_bytes = 0  # the partition's bytes before it
        self._bytes = 0  # its bytes so far
        self._delete: tuple[int, int] | None = None  # (begin, end): delete below begin once end is durable
        self._failures = 0  # checkpoints abandoned since the last one written

    # -- replay ---------------------------------------------------------------------------------------------------

    def replay(self, apply: Callable[[Record], None], load: Callable[[Record], None]) -> int:
        """Hand each stored event to ``apply`` and, where the events alone cannot rebuild the state (the log start
        moved past the history's beginning), each checkpoint's state record to ``load``, in offset order (see the
        module comment); returns how many records were handed over. Damage: as ``stored_records``."""
        plog, name = self.plog, self.plog.topic
        rebuilt = plog.log_start_offset == 0  # the full history: events alone build the state
        begin: int | None = None
        last: tuple[int, int, int] | None = None  # (begin, end, bytes) of the last checkpoint closed
        handed = 0
        for rec in stored_records(plog, self._log):
            mark = rec.headers.get(CHECKPOINT_HEADER) if rec.headers else None
            if mark is None:
                apply(rec)
                handed += 1
            elif mark == STATE:
                if not rebuilt:
                    load(rec)
                    handed += 1
            elif mark == BEGIN:
                if begin is not None:
                    self._log.info("%s: the checkpoint at offset %d has no end marker (a crash while it was "
                                   "written): the records around it stand", name, begin)
                begin = rec.offset
            elif mark == END:
                try:
                    info = msgpack.unpackb(rec.value)
                    last = (int(info["begin"]), rec.offset + 1, int(info["bytes"]))
                except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
                    self._log.warning("%s: skipping undecodable end marker at offset %d: %s", name, rec.offset, exc)
                    continue
                if begin == last[0]:
                    rebuilt = True
                begin = None
        if begin is not None:
            self._log.info("%s: the checkpoint at offset %d has no end marker (a crash while it was written): the "
                           "state before it and the events after it stand", name, begin)
        if last is not None and last[0] >= plog.log_start_offset:
            b = last[0]
            self._base_bytes = sum(s.size for s in plog.store.segments if s.base_offset < b)
            self._live_bytes = last[2]
            if plog.log_start_offset < b:
                self._delete = (b, last[1])  # durable: a partition opens with its high watermark at its end
        return handed

    # -- writing --------------------------------------------------------------------------------------------------

    @property
    def writing(self) -> bool:
        """A checkpoint is being written."""
        return self._writer is not None

    def due(self) -> bool:
        """Whether enough was written since the last checkpoint began for a new one (see CHECKPOINT_FACTOR)."""
        since = self.plog.size_bytes - self._base_bytes
        return since > self._live_bytes + max(self.bytes_min, self.factor * self._live_bytes)

    def step(self, now_ms: int, now: float | None = None, *, background: bool = False) -> None:
        """Bounded checkpoint work: delete the segments a durable checkpoint replaced; start a checkpoint when one
        is due; write its next part of state (``background_bytes`` of it, else in proportion to what the topic grew
        by: ``step_bytes``), or its end marker. A ``background`` step (between requests) does nothing unless a
        checkpoint is being written. Never raises: a storage failure is logged and the checkpoint it hit
        is abandoned (a later one starts over; nothing relied on it)."""
        plog = self.plog
        if background:
            if self._writer is None:
                return  # a background step only carries on a checkpoint being written
            budget = self.background_bytes
        else:
            budget = min(self.step_bytes, CHECKPOINT_STEP_RATIO * max(0, plog.size_bytes - self._stepped_bytes))
        try:
            self._step(now_ms, now, budget)
        finally:
            self._stepped_bytes = plog.size_bytes

    def _step(self, now_ms: int, now: float | None, budget: int) -> None:
        plog = self.plog
        if self._delete is not None and plog.high_watermark >= self._delete[1]:
            before = plog.size_bytes
            self.deleted += plog.delete_segments_below(self._delete[0])
            dropped = before - plog.size_bytes
            self._base_bytes -= dropped
            self._begin_bytes -= dropped  # a checkpoint being written began after the deleted segments
            self._delete = None
        if self._writer is None:
            if not self.due():
                return
            self._writer = self._new_writer()
            self._begin, self._bytes = -1, 0
        if budget <= 0:
            return  # nothing appended since the last step: the background steps carry it on
        try:
            self._write(now_ms, now, budget)
        except MillpondError as exc:
            self._failures += 1
            if self._failures == 1:  # the partition logs its own storage failures; here, one line an episode
                self._log.error("%s: checkpoint abandoned (retried at the next append): %s", plog.topic, exc)
            self._writer = None

    def _write(self, now_ms: int, now: float | None, budget: int) -> None:
        plog = self.plog
        rows: list[tuple[int, bytes | None, bytes, dict[str, bytes]]] = []
        if self._begin < 0:
            plog.roll()  # the begin marker opens a segment: everything before it can go whole
            self._begin, self._begin_bytes = plog.log_end_offset, plog.size_bytes
            rows.append((now_ms, None, msgpack.packb({"version": 1}), {CHECKPOINT_HEADER: BEGIN}))
        chunk = self._writer.chunk(now_ms, now, budget)  # type: ignore[union-attr]
        if chunk is not None:
            rows += [(now_ms, k, v, {CHECKPOINT_HEADER: STATE}) for k, v in chunk]
            if not rows:
                return
        else:
            rows.append((now_ms, None, msgpack.packb({"begin": self._begin, "bytes": self._bytes}),
                         {CHECKPOINT_HEADER: END}))
        blob = encode_batch(rows)
        plog.append(blob, read_header(blob), now_ms)
        self._bytes += len(blob)
        if chunk is None:
            self._writer = None
            self.written += 1
            self._failures = 0
            self._live_bytes = self._bytes
            self._base_bytes = self._begin_bytes
            self._delete = (self._begin, plog.log_end_offset)
            self._log.info("%s: checkpoint of %d bytes written at offsets %d-%d", plog.topic, self._bytes,
                           self._begin, plog.log_end_offset - 1)


__all__ = ["BEGIN", "CHECKPOINT_BYTES_MIN", "CHECKPOINT_FACTOR", "CHECKPOINT_HEADER", "CHECKPOINT_STEP_BYTES",
           "CHECKPOINT_BACKGROUND_BYTES", "CHECKPOINT_BACKGROUND_INTERVAL_S", "CHECKPOINT_STEP_RATIO",
           "Checkpoints", "END", "REPLAY_CHUNK_BYTES", "RecordsWriter", "STATE", "StateWriter", "open_internal",
           "stored_records"]
