# Fan-out delivery into queues: one turn reads the durable records (below the high watermark) of the partitions that
# have news, in offset order, once per partition for every subscription behind on it, and sends each matching record
# into its subscription's queue, with a bound on the (record, subscription) pairs one turn looks at so the event loop
# is never held long. Exactly once into a queue: each send carries its origin (subscription, partition, offset),
# journaled with the message (queues/manager.py `origin_next`), and a record below that mark is counted delivered,
# not sent again. Webhook subscriptions take their records into their delivery state instead (webhook.py; the
# requests are the fan-out api's jobs), as many as their window holds. Sans-IO: `now`/`now_ms` handed in, its only
# IO the log's reads through the LogManager; must not know about waiting, clocks or protocols.
from __future__ import annotations

import bisect
import logging
import math
from typing import Any, Iterable

from millpond.broker.core.fanout.delivery import (
    delivery_message_id,
    delivery_message_ids,
    envelope,
    group_id,
    raw_message,
    record_message_id,
)
from millpond.broker.core.fanout.subscriptions import Subscription, Subscriptions
from millpond.broker.core.fanout.webhook import Delivery
from millpond.broker.core.log import LogManager
from millpond.broker.core.queues.manager import Outgoing, QueueManager
from millpond.broker.wire.batch import Record, decode_records
from millpond.broker.wire.errors import MillpondError, QueueFullError

# (record, subscription) pairs one turn looks at, over every partition: a turn of sends costs ~10-40 ms, then the
# loop's other work runs
RECORDS_PER_TURN = 1024
READ_BYTES = 1 << 20  # bytes read from a partition at a time
CACHED_PARTITIONS = 8  # partitions whose last decoded read is kept for the next turns
RETRY_S = 0.5  # a subscription whose queue is full tries again after this long (monotonic s)

log = logging.getLogger("millpond.fanout")


class Pump:
    """Delivers records of ``log`` to the queues of ``subs`` through ``queues``. ``dirty`` holds the
    ``(topic, partition)`` pairs that may have records to deliver; ``turn`` works some off: at most
    ``records_per_turn`` looks at a record for a subscription (at least one record per partition it reads)."""

    def __init__(self, log_manager: LogManager, subs: Subscriptions, queues: QueueManager, *,
                 records_per_turn: int = RECORDS_PER_TURN, retry_s: float = RETRY_S) -> None:
        self.log = log_manager
        self.subs = subs
        self.queues = queues
        self.records_per_turn = records_per_turn
        self.retry_s = retry_s
        self.dirty: dict[tuple[str, int], None] = {}  # insertion ordered: partitions take turns
        self.paused: dict[str, Subscription] = {}  # waiting for their paused_until
        self.active: dict[str, Subscription] = {}  # webhook subscriptions holding records not settled
        # (topic, partition) -> the records of its last read: a turn uses a slice of a read, the next turns the rest
        self._cache: dict[tuple[str, int], list[Record]] = {}

    def mark_topic(self, topic: str) -> None:
        t = self.log.topics.get(topic)
        if t is not None:
            for p in range(len(t.partitions)):
                self.dirty[(topic, p)] = None

    def turn(self, now: float, now_ms: int) -> list[Subscription]:
        """One bounded turn of delivery; returns the subscriptions whose cursors moved."""
        budget = self.records_per_turn
        moved: dict[str, Subscription] = {}
        for key in list(self.dirty):
            if budget <= 0:
                break
            del self.dirty[key]
            topic, p = key
            t = self.log.topics.get(topic)
            subs = self.subs.by_topic.get(topic)
            if t is None or subs is None or p >= len(t.partitions):
                continue
            plog = t.partitions[p]
            hw = plog.high_watermark
            behind = []
            for s in subs.values():
                cur = s.cursors.get(p, 0)
                if cur < plog.log_start_offset:  # retention removed records before they were delivered
                    s.cursors[p] = cur = plog.log_start_offset
                w = s.webhook
                if w is not None:  # a webhook's window full: it waits for settled records, the others go on
                    cur = w.look_from(p, cur)
                    if not w.has_room():
                        continue
                if cur < hw and s.paused_until <= now:
                    behind.append(s)
            if not behind:
                continue
            start = min(_look_from(s, p) for s in behind)
            try:
                records, damaged = self._read(key, plog, start, hw)
            except MillpondError as exc:
                log.error("fan-out of %s/%d at offset %d: %s; trying again later", topic, p, start, exc)
                for s in behind:
                    self._pause(s, now)
                continue
            if not records and damaged is not None:
                self._step_over(behind, p, damaged)
                moved.update((s.id, s) for s in behind)
                self.dirty[key] = None
                continue
            records = records[:max(1, budget // len(behind))]
            if not records:
                continue
            budget -= len(records) * len(behind)
            raws: list[Any] | None = None  # each record's raw message, made once for every raw subscription
            for s in behind:
                if s.raw and s.webhook is None and raws is None:
                    raws = [_raw(rec) for rec in records]
                if self._deliver(s, p, records, now, now_ms, raws if s.raw else None):
                    moved[s.id] = s
            self.dirty[key] = None  # looked at again next turn: more records, or nothing and it is dropped
        return list(moved.values())

    def _read(self, key: tuple[str, int], plog: Any, start: int, hw: int) -> tuple[list[Record], Any]:
        """``(records, damaged)``: the records of ``plog`` from ``start`` below ``hw`` that one read gives (from the
        cache when the last read holds ``start``), and the ``CorruptRangeError`` of a quarantined range the read
        stopped at (None: none). Raises ``MillpondError`` (a batch that does not decode)."""
        cached = self._cache.get(key)
        if cached and cached[0].offset <= start <= cached[-1].offset:
            return cached[bisect.bisect_left(cached, start, key=lambda r: r.offset):], None
        self._cache.pop(key, None)
        data, damaged = plog.read_intact(start, READ_BYTES, hw)
        records = [r for r in decode_records(data, key[0], key[1], start, header_pairs=True) if r.offset < hw]
        if records:
            self._cache[key] = records
            if len(self._cache) > CACHED_PARTITIONS:
                del self._cache[next(iter(self._cache))]
        return records, damaged

    def _step_over(self, behind: list[Subscription], p: int, damaged: Any) -> None:
        """Records damaged on disk (quarantined, never served: DESIGN section 4) cannot be delivered: each
        subscription's cursor moves past them and counts them failed (delivered, those its queue already holds)."""
        nxt = int(damaged.details["next_offset"])
        log.error("fan-out steps over damaged records: %s", damaged.message)
        for s in behind:
            w = s.webhook
            if w is not None:
                cur = w.look_from(p, s.cursors.get(p, 0))
                if cur < nxt:
                    s.failed += nxt - cur
                    w.passed(p, nxt)
                    s.cursors[p] = w.cursor(p, s.cursors.get(p, 0))
                continue
            cur = s.cursors.get(p, 0)
            if cur < nxt:
                sent = max(0, min(nxt, self.queues.origin_next(s.id, p)) - cur)
                s.delivered += sent
                s.failed += nxt - cur - sent
                s.cursors[p] = nxt

    def forget(self, topic: str) -> None:
        """Drop what is cached of a topic (deleted: a new one of the same name starts again at offset 0)."""
        for key in [k for k in self._cache if k[0] == topic]:
            del self._cache[key]

    def _deliver(self, s: Subscription, p: int, records: list[Record], now: float, now_ms: int,
                 raws: list[Any] | None = None) -> bool:
        """Deliver ``records`` (offset order) from ``s``'s cursor on; returns whether the cursor moved. The
        records to send go to the queue in batches (one ``send_batch`` call, in order); a record the queue
        refuses is handled before anything after it is sent (dead-lettered, or the subscription pauses there).
        ``raws``: the raw message of each record (``_raw``), shared by the raw subscriptions of one turn."""
        if s.webhook is not None:
            return self._take(s, p, records)
        cur = before = s.cursors.get(p, 0)
        mark = self.queues.origin_next(s.id, p)
        policy, raw, sub_id = s.policy, s.raw, s.id
        target = self.queues.queues.get(s.target.name)  # send_batch raises UNKNOWN_QUEUE for a missing one
        fifo = target is not None and target.fifo
        ids = delivery_message_ids(sub_id, s.topic, p)
        new = tuple.__new__
        run: list[tuple[Record, Any]] = []  # (record, None: sent before | False: filtered out | its Outgoing)
        for i, rec in enumerate(records):
            offset = rec.offset
            if offset < cur:
                continue
            if policy is not None and not policy.matches(rec.headers or (), rec.value):
                run.append((rec, False))  # counted filtered out, also when met again after a restart
                continue
            if offset < mark:  # sent before a restart that came before the cursor was saved
                run.append((rec, None))
                continue
            mid = ids(offset)
            try:
                if raws is not None:
                    made = raws[i]
                    if isinstance(made, MillpondError):
                        raise made
                    body, attributes = made
                else:
                    body, attributes = raw_message(rec) if raw else (envelope(rec, sub_id), None)
            except MillpondError as exc:  # no message can be made of it: what comes before goes first
                go_on, cur = self._flush(s, run, cur, now, now_ms)
                run = []
                if not go_on or not self._dead_letter(s, rec, exc, now, now_ms):
                    break
                cur = offset + 1
                continue
            run.append((rec, new(Outgoing, (body, attributes, None, group_id(rec.key) if fifo else None,
                                            mid if fifo else None, mid, (sub_id, p, offset)))))
        else:
            cur = self._flush(s, run, cur, now, now_ms)[1]
        s.cursors[p] = cur
        return cur != before

    def _flush(self, s: Subscription, run: list[tuple[Record, Any]], cur: int, now: float,
               now_ms: int) -> tuple[bool, int]:
        """Send the messages of ``run`` to ``s``'s queue and count every record of it, in order; ``(go on, the
        cursor after the last record settled)``. A refused message stops the batch there: a full queue pauses the
        subscription (the record is tried again), any other refusal dead-letters it and the rest is sent after."""
        while run:
            entries = [out for _, out in run if out]
            if entries:
                try:
                    results = self.queues.send_batch(s.target.name, entries, now, now_ms, stop_at_error=True)
                except MillpondError as exc:  # the queue is gone
                    results = [exc]
            else:
                results = []
            i = 0
            for k, (rec, out) in enumerate(run):
                if out is None:
                    s.delivered += 1
                elif out is False:
                    s.filtered += 1
                else:
                    result = results[i]
                    i += 1
                    if isinstance(result, MillpondError):
                        if isinstance(result, QueueFullError):
                            self._pause(s, now)  # never dropped: the same record is tried again
                            return False, cur
                        if not self._dead_letter(s, rec, result, now, now_ms):
                            return False, cur
                        cur = rec.offset + 1
                        run = run[k + 1:]  # not sent yet: stop_at_error
                        break
                    s.delivered += 1
                    s.last_lag_ms = now_ms - rec.timestamp_ms
                cur = rec.offset + 1
            else:
                return True, cur
        return True, cur

    def _take(self, s: Subscription, p: int, records: Iterable[Record]) -> bool:
        """A webhook subscription takes the matching ``records`` from where it looks on into its delivery state
        (filtered ones are passed over), as many as its window holds; returns whether its cursor moved."""
        w = s.webhook
        assert w is not None
        before = s.cursors.get(p, 0)
        cur = w.look_from(p, before)
        policy = s.policy
        for rec in records:
            offset = rec.offset
            if offset < cur:
                continue
            if not w.has_room():
                break
            if policy is not None and not policy.matches(rec.headers or (), rec.value):
                s.filtered += 1
            else:
                body = bytes(rec.value or b"") if s.raw else envelope(rec, s.id)
                w.take(Delivery(p, offset, record_message_id(rec.topic, p, offset), body, rec))
                self.active[s.id] = s
            cur = offset + 1
            w.passed(p, cur)
        s.cursors[p] = w.cursor(p, before)
        return s.cursors[p] != before

    def dead_letter(self, s: Subscription, rec: Record, now: float, now_ms: int) -> bool:
        """A webhook delivery out of attempts: into the dead-letter queue as an envelope (as SNS), or dropped
        without one; counted failed. Returns False when the dead-letter queue is full (try again later)."""
        dlq = s.dead_letter_queue
        if dlq is not None:
            try:
                self._send(s, dlq, rec, False, now, now_ms, origin=False)
                s.dead_lettered += 1
            except QueueFullError:
                return False
            except MillpondError as exc:
                log.warning("subscription %s: record %s/%d@%d dropped (dead-letter queue %r: %s)", s.id, rec.topic,
                            rec.partition, rec.offset, dlq, exc)
        s.failed += 1
        return True

    def _send(self, s: Subscription, queue: str, rec: Record, raw: bool, now: float, now_ms: int, *,
              origin: bool = True) -> None:
        q = self.queues.queues.get(queue)  # send() raises UNKNOWN_QUEUE for a missing one
        fifo = q is not None and q.fifo
        mid = delivery_message_id(s.id, rec.topic, rec.partition, rec.offset)
        if raw:
            body, attributes = raw_message(rec)
        else:
            body, attributes = envelope(rec, s.id), None
        self.queues.send(queue, body, now, now_ms, attributes=attributes,
                         group_id=group_id(rec.key) if fifo else None, dedup_id=mid if fifo else None,
                         message_id=mid, origin=(s.id, rec.partition, rec.offset) if origin else None)

    def _dead_letter(self, s: Subscription, rec: Record, exc: MillpondError, now: float, now_ms: int) -> bool:
        """A record its queue refuses (the queue deleted, the message too large, headers no queue attributes can
        hold): into the dead-letter queue as an envelope (as SNS), or dropped without one; counted failed. Returns
        False when the dead-letter queue is full (the subscription pauses, the record is tried again)."""
        dlq = s.dead_letter_queue
        if dlq is not None:
            try:
                self._send(s, dlq, rec, False, now, now_ms)
                s.dead_lettered += 1
            except QueueFullError:
                self._pause(s, now)
                return False
            except MillpondError as again:
                log.warning("subscription %s: record %s/%d@%d dropped (%s; dead-letter queue %r: %s)", s.id,
                            rec.topic, rec.partition, rec.offset, exc, dlq, again)
        s.failed += 1
        return True

    def _pause(self, s: Subscription, now: float) -> None:
        s.paused_until = now + self.retry_s
        self.paused[s.id] = s

    def retry_at(self) -> float:
        """The earliest time a paused subscription tries again (``inf``: none)."""
        if not self.paused:  # asked after every request the broker answers
            return math.inf
        return min(s.paused_until for s in self.paused.values())

    def resume_due(self, now: float) -> None:
        for s in [s for s in self.paused.values() if s.paused_until <= now]:
            del self.paused[s.id]
            s.paused_until = -math.inf
            if self.subs.by_id.get(s.id) is s:
                self.mark_topic(s.topic)


def _raw(rec: Record) -> Any:
    """``raw_message(rec)``, or the ``MillpondError`` it raises."""
    try:
        return raw_message(rec)
    except MillpondError as exc:
        return exc


def _look_from(s: Subscription, p: int) -> int:
    cur = s.cursors.get(p, 0)
    return cur if s.webhook is None else s.webhook.look_from(p, cur)


def lag(log_manager: LogManager, s: Subscription, now_ms: int) -> tuple[list[tuple[int, int, int]], int, Any]:
    """``([(partition, cursor, high watermark)], records behind, seconds behind or None)``: seconds from the
    timestamp of the oldest record not yet looked at to ``now_ms`` (0.0 when caught up)."""
    t = log_manager.topics.get(s.topic)
    rows, behind, oldest = [], 0, None
    for plog in (t.partitions if t is not None else ()):
        cur = max(s.cursors.get(plog.partition, 0), plog.log_start_offset)
        hw = plog.high_watermark
        rows.append((plog.partition, cur, hw))
        if cur < hw:
            behind += hw - cur
            try:
                first = decode_records(plog.read(cur, 1, hw), s.topic, plog.partition, cur)
            except MillpondError:
                first = []
            if first:
                ts = first[0].timestamp_ms
                oldest = ts if oldest is None else min(oldest, ts)
    return rows, behind, 0.0 if oldest is None else max(0, now_ms - oldest) / 1000


__all__ = ["Pump", "READ_BYTES", "RECORDS_PER_TURN", "RETRY_S", "lag"]
