# The subscriptions' journal: every event of subscriptions.py (subscribed, unsubscribed, cursor saved) is a msgpack
# record of the internal topic __millpond_subscriptions, and opening the broker replays it (as the queues' journal,
# broker/core/queues/journal.py, for the same reasons: CRC-checked batches, a torn tail cut at open, group commit).
# Owns the record layout. Must not know about requests, waiting, clocks or trio; its only IO is through the
# LogManager.
from __future__ import annotations

import logging

import msgpack

from millpond.broker.core.fanout.subscriptions import Event, Subscriptions
from millpond.broker.core.log import LogManager, PartitionLog
from millpond.broker.core.log.internal import open_internal, replay
from millpond.broker.wire.batch import Record, encode_batch, read_header

SUBSCRIPTIONS_TOPIC = "__millpond_subscriptions"
SUBSCRIPTIONS_TOPIC_CONFIG = {"retention_ms": -1, "retention_bytes": -1}  # kept forever: replay needs every record


class SubscriptionJournal:
    """Appends the subscriptions' events to __millpond_subscriptions and replays them. ``log=None``: memory only."""

    def __init__(self, log: LogManager | None, *, logger: logging.Logger | None = None) -> None:
        self._logman = log
        self.plog: PartitionLog | None = None
        self._log = logger or logging.getLogger("millpond.fanout")

    def open(self, subs: Subscriptions, now_ms: int) -> None:
        """Create the topic if missing, then replay it into ``subs`` (empty). An undecodable record is skipped and
        logged; so is a damaged range of the topic (docs/data-safety.md): only the events stored there are lost."""
        if self._logman is None:
            return
        self.plog = plog = open_internal(self._logman, SUBSCRIPTIONS_TOPIC, SUBSCRIPTIONS_TOPIC_CONFIG, now_ms)

        def apply(rec: Record) -> None:
            try:
                event = msgpack.unpackb(rec.value, raw=False)
                if not isinstance(event, list) or not event or not isinstance(event[0], str):
                    raise ValueError(f"not a subscription event: {event!r}"[:200])
                subs.apply(tuple(event))
            except (ValueError, TypeError, KeyError, IndexError, msgpack.UnpackException) as exc:
                self._log.warning("%s: skipping undecodable record at offset %d: %s", SUBSCRIPTIONS_TOPIC,
                                  rec.offset, exc)

        applied = replay(plog, apply, self._log)
        subs.take_events()
        self._log.info("replayed %d record(s) of %s: %d subscription(s)", applied, SUBSCRIPTIONS_TOPIC,
                       len(subs.by_id))

    def append(self, events: list[Event], now_ms: int) -> int:
        """Append events as one batch; returns the offset the topic's high watermark must reach for them to be
        durable. Raises ``StorageError``."""
        plog = self.plog
        if plog is None:
            return 0
        if events:
            blob = encode_batch([(now_ms, None, msgpack.packb(list(e), use_bin_type=True), None) for e in events])
            plog.append(blob, read_header(blob), now_ms)
        return plog.log_end_offset


__all__ = ["SUBSCRIPTIONS_TOPIC", "SubscriptionJournal"]
