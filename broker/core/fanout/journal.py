# The subscriptions' journal: every event of subscriptions.py (subscribed, unsubscribed, cursor saved) is a msgpack
# record of the internal topic __millpond_subscriptions, and opening the broker replays it (as the queues' journal,
# broker/core/queues/journal.py, for the same reasons: CRC-checked batches, a torn tail cut at open, group commit).
# Checkpoints (broker/core/log/internal.py) restate what the journal holds of each subscription (its settings, its
# saved cursors and the counters saved with them) as the same events, so cursor saves do not pile up for ever.
# Owns the record layout. Must not know about requests, waiting, clocks or trio; its only IO is through the
# LogManager.
from __future__ import annotations

import logging
from typing import Any, Iterator

import msgpack

from millpond.broker.core.fanout.subscriptions import Event, Subscriptions
from millpond.broker.core.log import LogManager, PartitionLog
from millpond.broker.core.log.internal import Checkpoints, RecordsWriter, open_internal
from millpond.broker.wire.batch import Record, encode_batch, read_header

SUBSCRIPTIONS_TOPIC = "__millpond_subscriptions"
SUBSCRIPTIONS_TOPIC_CONFIG = {"retention_ms": -1, "retention_bytes": -1}  # only checkpoints delete segments


class SubscriptionJournal:
    """Appends the subscriptions' events to __millpond_subscriptions, checkpoints what they add up to there and
    replays them. ``log=None``: memory only. ``checkpoint``: keyword arguments of ``Checkpoints``."""

    def __init__(self, log: LogManager | None, *, logger: logging.Logger | None = None,
                 checkpoint: dict[str, Any] | None = None) -> None:
        self._logman = log
        self.plog: PartitionLog | None = None
        self.checkpoints: Checkpoints | None = None
        self._checkpoint = checkpoint or {}
        self._log = logger or logging.getLogger("millpond.fanout")
        # what the journal holds: subscription id -> [its "sub" event, its last "cursor" event or None]
        self.journaled: dict[str, list[Any]] = {}

    def open(self, subs: Subscriptions, now_ms: int) -> None:
        """Create the topic if missing, then replay it into ``subs`` (empty). An undecodable record is skipped and
        logged; so is a damaged range of the topic (docs/data-safety.md): only the events stored there are lost."""
        if self._logman is None:
            return
        self.plog = plog = open_internal(self._logman, SUBSCRIPTIONS_TOPIC, SUBSCRIPTIONS_TOPIC_CONFIG, now_ms)
        self.checkpoints = Checkpoints(plog, lambda: RecordsWriter(_journaled_records(self.journaled)),
                                       logger=self._log, **self._checkpoint)

        def apply(rec: Record) -> None:
            try:
                event = msgpack.unpackb(rec.value, raw=False)
                if not isinstance(event, list) or not event or not isinstance(event[0], str):
                    raise ValueError(f"not a subscription event: {event!r}"[:200])
                if event[0] == "sub" and event[1]["id"] in subs.by_id:  # restated by a checkpoint: replace it
                    subs.apply(("unsub", event[1]["id"]))
                subs.apply(tuple(event))
                self._note(event)
            except (ValueError, TypeError, KeyError, IndexError, msgpack.UnpackException) as exc:
                self._log.warning("%s: skipping undecodable record at offset %d: %s", SUBSCRIPTIONS_TOPIC,
                                  rec.offset, exc)

        applied = self.checkpoints.replay(apply, apply)  # a checkpoint's records are the same events
        subs.take_events()
        self._log.info("replayed %d record(s) of %s: %d subscription(s)", applied, SUBSCRIPTIONS_TOPIC,
                       len(subs.by_id))

    def _note(self, event: Any) -> None:
        kind = event[0]
        if kind == "sub":
            self.journaled[event[1]["id"]] = [list(event), None]
        elif kind == "unsub":
            self.journaled.pop(event[1], None)
        elif kind == "cursor" and event[1] in self.journaled:
            self.journaled[event[1]][1] = list(event)

    def append(self, events: list[Event], now_ms: int) -> int:
        """Append events as one batch, then a step of checkpoint work (internal.py); returns the offset the
        topic's high watermark must reach for them to be durable. Raises ``StorageError``."""
        plog = self.plog
        if plog is None:
            return 0
        if events:
            blob = encode_batch([(now_ms, None, msgpack.packb(list(e), use_bin_type=True), None) for e in events])
            plog.append(blob, read_header(blob), now_ms)
            for e in events:
                self._note(e)
        end = plog.log_end_offset
        self.checkpoints.step(now_ms)  # type: ignore[union-attr]
        return end

    def background_step(self, now_ms: int, now: float) -> None:
        """A background step of the checkpoint being written, if any (internal.py)."""
        if self.checkpoints is not None:
            self.checkpoints.step(now_ms, background=True)


def _journaled_records(journaled: dict[str, list[Any]]) -> Iterator[tuple[None, bytes]]:
    """What ``SubscriptionJournal.journaled`` holds, as events for a checkpoint: each subscription present at the
    start, read when written (one unsubscribed meanwhile is skipped)."""
    for sub_id in list(journaled):
        for event in journaled.get(sub_id) or ():
            if event is not None:
                yield None, msgpack.packb(event, use_bin_type=True)


__all__ = ["SUBSCRIPTIONS_TOPIC", "SubscriptionJournal"]
