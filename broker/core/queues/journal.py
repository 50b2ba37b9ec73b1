# The queues' journal: every event of broker/core/queues/manager.py (queue created, attributes set, queue deleted,
# purge, message sent, received, visibility changed, deleted; redrive task started, moved, ended) is a msgpack
# record of the internal topic __millpond_queues, and opening the broker replays that topic into the QueueManager.
# Owns the record layout.
# Must not know about requests, waiting, clocks or trio; its only IO is through the LogManager.
#
# Why an internal log topic (as the committed offsets in broker/core/groups/offsets.py) rather than a journal file
# of its own: the log already is a journal with the properties DESIGN section 4 asks for (each batch carries its
# length and a CRC-32C, a torn tail is cut at open, damage elsewhere is quarantined), and its appends take part in
# the server's group commit, so one fsync covers produces, commits and queue changes that arrived together; a
# queue request is answered once the topic's high watermark covers its records (`when_durable`), under every
# fsync mode, exactly like a produce. One request's events are in one batch: they are durable together or not at
# all. Under fsync="always" the requests of one pass (one read's frames) share a batch: QueueJournal.write_pending.
# Times: events hold monotonic seconds; the journal stores wall-clock ms (`now_ms + (t - now)`) and replay turns
# them back against the clock of the new process, so a visibility timeout or a retention period keeps running
# across a restart (time the broker was down counts).
# Checkpoints (broker/core/log/internal.py, records laid out by checkpoint.py) keep the topic about as long as the
# live state, so a queue that saw 10 million messages sent and deleted and is empty now replays almost nothing.
from __future__ import annotations

import logging
from typing import Any

import msgpack

from millpond.broker.core.log import LogManager, PartitionLog
from millpond.broker.core.log.internal import Checkpoints, open_internal
from millpond.broker.core.queues.checkpoint import ROWS_PER_RECORD, QueueStateWriter, load as load_checkpoint
from millpond.broker.core.queues.manager import Event, QueueManager
from millpond.broker.wire.batch import Record, encode_batch, read_header
from millpond.broker.wire.errors import MillpondError, StorageError

QUEUES_TOPIC = "__millpond_queues"
QUEUES_TOPIC_CONFIG = {"retention_ms": -1, "retention_bytes": -1}  # only checkpoints delete segments
# the positions of the monotonic times in each kind of event (stored as wall-clock ms)
_TIMES = {"send": (7, 8), "recv": (4, 5), "vis": (3,)}
_pack = msgpack.Packer(use_bin_type=True).pack  # one packer, not one per record (packb's); a call never releases the GIL
_ON_MESSAGE = ("recv", "vis")  # events that need their message to be there
PENDING_BYTES_MAX = 1 << 20  # held records beyond this are written at once, before the request that would pass it
_UNDECODABLE = (ValueError, TypeError, KeyError, IndexError, msgpack.UnpackException)


def _to_record(event: Event, now: float, now_ms: int) -> bytes:
    times = _TIMES.get(event[0])
    if times is None:
        return _pack(event)
    fields = list(event)
    for i in times:
        fields[i] = now_ms + round((fields[i] - now) * 1000)
    return _pack(fields)


def _from_record(value: bytes, now: float, now_ms: int) -> Event:
    fields = msgpack.unpackb(value, raw=False)
    if not isinstance(fields, list) or len(fields) < 2 or not isinstance(fields[0], str):
        raise ValueError(f"not a queue event: {fields!r}"[:200])
    for i in _TIMES.get(fields[0], ()):
        fields[i] = now + (int(fields[i]) - now_ms) / 1000
    return tuple(fields)


class QueueJournal:
    """Appends the manager's events to __millpond_queues, checkpoints the manager's state there and replays it.
    ``log=None``: memory only (nothing is written; offsets returned are 0). ``checkpoint``: keyword arguments of
    ``Checkpoints`` (``bytes_min``, ``factor``, ``step_bytes``); ``rows_per_record``: messages per checkpoint
    record."""

    def __init__(self, log: LogManager | None, *, logger: logging.Logger | None = None,
                 checkpoint: dict[str, Any] | None = None, rows_per_record: int = ROWS_PER_RECORD) -> None:
        self._logman = log
        self.plog: PartitionLog | None = None
        self.checkpoints: Checkpoints | None = None
        self._manager: QueueManager | None = None
        self._log = logger or logging.getLogger("millpond.queues")
        self._checkpoint = checkpoint or {}
        self._rows = rows_per_record
        # fsync="always": records wait here until the server's pass of requests ends (or the next sync plan), then
        # go as one batch (write_pending): every request waits for an fsync anyway, so one write per pass replaces
        # one per request, and it still runs while the fsync in flight does.
        self._defer = log is not None and log.fsync_mode == "always"
        self._pending: list[tuple[int, None, bytes, None]] = []
        self._pending_bytes = 0
        self._last = (0.0, 0)  # (now, now_ms) of the latest append: the clock write_pending's checkpoint step reads
        self._wake_owed = False  # a write failed inside append: the waiters of its records are still to be woken

    def open(self, manager: QueueManager, now: float, now_ms: int) -> None:
        """Create the topic if missing, then replay it into ``manager`` (which must be empty) and run the timers
        due at ``now``. An undecodable record is skipped and logged; so is a damaged range of the topic
        (docs/data-safety.md): only the events stored there are lost."""
        if self._logman is None:
            return
        self.plog = plog = open_internal(self._logman, QUEUES_TOPIC, QUEUES_TOPIC_CONFIG, now_ms)
        self._manager = manager
        self.checkpoints = cps = Checkpoints(plog, lambda: QueueStateWriter(manager, self._rows), logger=self._log,
                                             **self._checkpoint)

        def apply(rec: Record) -> None:
            try:
                event = _from_record(rec.value, now, now_ms)
                q = manager.queues.get(event[1])
                if q is not None:
                    # as the live call did first: its timers run to the event's time (a message past its retention
                    # then is gone before a retention change or a redrive task's start is applied)
                    q.advance(now + (rec.timestamp_ms - now_ms) / 1000)
                    if event[0] in _ON_MESSAGE and event[2] not in q.messages:
                        return  # its message is restated by a checkpoint record further on
                manager.apply(event, now)
            except _UNDECODABLE as exc:
                self._log.warning("%s: skipping undecodable record at offset %d: %s", QUEUES_TOPIC, rec.offset, exc)

        def load(rec: Record) -> None:
            try:
                load_checkpoint(manager, rec.value, now, now_ms)
            except _UNDECODABLE as exc:
                self._log.warning("%s: skipping undecodable checkpoint record at offset %d: %s", QUEUES_TOPIC,
                                  rec.offset, exc)

        applied = cps.replay(apply, load)
        manager.take_events()
        for name in list(manager.queues):
            manager.queue(name, now)  # every queue's timers scheduled (restored ones, and those advanced above)
        manager.tick(now)
        self._log.info("replayed %d record(s) of %s: %d queue(s)", applied, QUEUES_TOPIC, len(manager.queues))

    def append(self, events: list[Event], now: float, now_ms: int) -> int:
        """Append one request's events, then a step of checkpoint work (internal.py). Returns the offset the
        topic's high watermark must reach before the request may be answered (the log end when there is nothing to
        write: what an answer depends on may still be on its way to disk). Under ``fsync="always"`` the records
        are held for ``write_pending``, with those of the requests before and after: one request's events always
        land in one batch, durable together or not at all. Raises ``StorageError``."""
        plog = self.plog
        if plog is None:
            return 0
        if events:
            records = [(now_ms, None, _to_record(e, now, now_ms), None) for e in events]
            if self._defer:
                size = sum(len(r[2]) for r in records)
                if self._pending and self._pending_bytes + size > PENDING_BYTES_MAX and not self.write_pending():
                    self._wake_owed = True  # the next write_pending says so: its caller wakes their waiters
                    raise StorageError(f"{QUEUES_TOPIC}: writing the journal failed; see the broker log")
                self._pending += records
                self._pending_bytes += size
                self._last = (now, now_ms)
                return plog.log_end_offset + len(self._pending)
            blob = encode_batch(records)
            plog.append(blob, read_header(blob), now_ms)
        end = plog.log_end_offset + len(self._pending)
        if not self._pending and not self._manager.events:  # type: ignore[union-attr]  # nothing unwritten
            self.checkpoints.step(now_ms, now)  # type: ignore[union-attr]
        return end

    def write_pending(self) -> bool:
        """Write the held records as one batch, then a step of checkpoint work (``Engine.write_held``: after each
        pass of requests and before each sync plan). Returns False on a storage failure: the records are dropped
        and the partition counts a failed sync, so the requests waiting on them are answered ``STORAGE_ERROR`` once
        its key is woken (as when an fsync fails; the state in memory keeps their changes, as after a failed
        immediate append)."""
        if not self._pending:
            owed, self._wake_owed = self._wake_owed, False
            return not owed
        records, self._pending = self._pending, []
        self._pending_bytes = 0
        plog = self.plog
        assert plog is not None
        now, now_ms = self._last
        blob = encode_batch(records)
        try:
            plog.append(blob, read_header(blob), now_ms)
        except MillpondError as exc:
            plog.sync_failures += 1
            self._log.error("%s: %d record(s) not written: %s", QUEUES_TOPIC, len(records), exc)
            return False
        if not self._manager.events:  # type: ignore[union-attr]
            self.checkpoints.step(now_ms, now)  # type: ignore[union-attr]
        return True

    def background_step(self, now_ms: int, now: float) -> None:
        """A background step of the checkpoint being written, if any (internal.py), once the state holds every
        event appended."""
        cps = self.checkpoints
        if cps is not None and not self._manager.events:  # type: ignore[union-attr]
            if not self._pending:  # else the step after write_pending carries it on
                cps.step(now_ms, now, background=True)


__all__ = ["QUEUES_TOPIC", "QueueJournal"]
