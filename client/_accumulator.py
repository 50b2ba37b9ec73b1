# The producer's record accumulator (Kafka's RecordAccumulator, sans-IO): per-partition batches of pre-built rows,
# partition choice (explicit, keyed murmur2, sticky), readiness by size / linger / flush, and the handles that
# resolve to RecordMetadata. A batch goes (``ready``) when full, at flush, linger_s after it opened, or, if eager,
# as soon as nothing of its partition is in flight: eager is a batch opened while the producer had nothing pending
# (a lone send pays one round trip, not the linger) or one a caller awaits (``hurry``). Once one goes, every open
# batch at least half its linger old goes with it (Kafka's drain): keyed records over 64 partitions then cost one
# request per linger, not one per partition, and the broker's per-request work with it. So records sent while
# batches are in flight gather behind them, and go with the answer only if someone waits for them: sending every
# partial batch as an answer lands (linger 0) shrinks a busy producer's batches to one round trip's worth, and
# every batch costs the broker. Per partition, up to max_in_flight batches are in flight (an idempotent producer's
# sequence numbers let the broker refuse one that would land out of order; otherwise max_in_flight is 1), and a
# batch that failed goes again alone, at the head of its partition, so a retry never reorders a partition.
# Also fits batches to the broker's limit policies: a batch refused as COST_EXCEEDS_LIMIT is split into pieces that
# fit (order kept), and later batches of that topic are built to fit. Takes `now` as an argument and never reads a
# clock, sleeps or touches a socket; the async and blocking producers drive it. Not thread-safe by itself: the
# blocking producer wraps every call in `lock`.
from __future__ import annotations

import random
import time
from collections import deque
from typing import Any, Awaitable, Callable

from millpond.broker.wire.batch import HEADER_BYTES, encode_rows
from millpond.broker.wire.errors import RecordTooLargeError, UnknownTopicOrPartitionError
from millpond.broker.wire.partitioner import partition_for_key

from millpond.client.types import RecordMetadata

NO_MAX = 1 << 62  # records_max of a batch no limit policy has constrained
# Upper bound of a v2 record's framing (Kafka's DefaultRecord): length varint 5, attributes 1, timestamp delta varlong
# 10, offset delta varint 5, key and value length varints 5 + 5, header count varint 5; each header: two length
# varints. Over-estimating keeps an encoded (uncompressed) batch under its limit.
ROW_OVERHEAD = 36
HEADER_ENTRY_OVERHEAD = 10
BATCH_OVERHEAD = HEADER_BYTES
_time = time.time
SEQUENCE_WRAP = 2**31  # producer sequences are int32 and wrap to 0, as Kafka's


class Batch:
    """Records for one partition, sent as one produce request. ``event`` is set once it is acked or failed.

    A batch split to fit a limit policy becomes ``routed``: its ``rows`` are the handles of its records in the
    pieces, and its ``event`` is set once every piece is settled (``pending`` counts the unsettled ones)."""

    __slots__ = ("topic", "partition", "rows", "size", "first_ts", "max_ts", "created", "seq", "event",
                 "base_offset", "error", "blob", "retry_at", "attempts", "routed", "records_max", "bytes_max",
                 "parent", "pending", "throttled_s", "base_seq", "epoch", "sent", "failed", "eager", "owner")

    def __init__(self, topic: str, partition: int, first_ts: int, created: float, seq: int, event: Any) -> None:
        self.topic = topic
        self.partition = partition
        self.rows: list[tuple[Any, ...]] = []
        self.size = BATCH_OVERHEAD
        self.first_ts = first_ts
        self.max_ts = first_ts
        self.created = created
        # Not a producer sequence number (that is base_seq): the accumulator's running count of batches opened,
        # so flush() can tell the batches that existed when it was called (seq <= its mark) from later ones.
        self.seq = seq
        self.event = event
        self.base_offset = -1
        self.error: BaseException | None = None
        self.blob: bytearray | None = None
        self.retry_at = 0.0
        self.attempts = 0
        self.routed = False  # placeholder batches (topic awaiting metadata) set this when their records move
        self.records_max = NO_MAX  # seal at this many records (a records limit policy's max cost)
        self.bytes_max = 0  # seal at this estimated size (batch_bytes, or a bytes limit policy's max cost)
        self.parent: Batch | None = None  # the batch this one is a piece of (split to fit a limit policy)
        self.pending = 0  # pieces not yet settled, while this batch is split
        self.throttled_s = 0.0  # seconds this batch has waited on THROTTLED answers
        self.base_seq = -1  # idempotent producer: its first record's sequence, fixed at its first send
        self.epoch = 0  # idempotent producer: the partition's producer epoch when base_seq was given
        self.sent = False  # a request carrying it is awaiting an answer
        self.failed = False  # an attempt failed: it goes again only at the head of its partition, alone
        # Goes as soon as nothing of its partition is in flight, without waiting for linger: opened while the
        # producer had nothing pending, or a caller awaits one of its records.
        self.eager = False
        self.owner: Accumulator | None = None  # the accumulator whose sender ``hurry`` wakes

    def hurry(self) -> None:
        """A caller awaits one of its records: send it as soon as nothing of its partition is in flight (the answers
        in flight still gather records into it; linger does not). Any thread may call it: it sets a flag and wakes
        the sender, which reads the flag under the producer's lock."""
        self.eager = True
        if self.owner is not None and not self.sent and not self.event.is_set():
            self.owner._wake()

    def encode(self, producer_id: int = -1, compression: int = 0) -> bytearray:
        """The batch as Kafka's record batch v2 (``compression``: its attribute id), built once and kept for
        retries: a resent batch is byte for byte the one sent before."""
        if self.blob is None:
            if producer_id >= 0:
                self.blob = encode_rows(self.rows, self.first_ts, self.max_ts, 0, producer_id, self.epoch,
                                        self.base_seq, compression)
            else:
                self.blob = encode_rows(self.rows, self.first_ts, self.max_ts, 0, -1, -1, -1, compression)
        return self.blob


class RecordHandle:
    """What ``send()`` returns. Async: ``await handle`` -> RecordMetadata, or raises the delivery error."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: Batch, index: int) -> None:
        self._batch = batch
        self._index = index

    def done(self) -> bool:
        """True once the record is acknowledged or failed (``await`` / ``result()`` will not wait)."""
        return self._follow().event.is_set()

    def _follow(self) -> Batch:
        b = self._batch
        while b.routed and b.event.is_set():  # parked record moved to a real batch: follow it
            real = b.rows[self._index]
            self._batch, self._index = real._batch, real._index  # type: ignore[attr-defined]
            b = self._batch
        return b

    def _outcome(self) -> RecordMetadata:
        b = self._batch
        if b.error is not None:
            raise b.error
        row = b.rows[self._index]
        return RecordMetadata(b.topic, b.partition, b.base_offset + self._index, b.first_ts + row[1])

    def __await__(self):  # type: ignore[no-untyped-def]
        return self._wait().__await__()

    async def _wait(self) -> RecordMetadata:
        while True:
            b = self._follow()
            if not b.eager:
                b.hurry()
            owner = b.owner
            if owner is not None and owner.send_inline is not None and not b.event.is_set():
                # the awaiting task writes the request itself (no hop to the sender), or, its batch already in
                # flight (written by a linger_s=0 send()), polls for the answer
                await owner.send_inline()
            await b.event.wait()
            if not b.routed:  # a routed placeholder means the record moved to a real batch: wait on that one
                return self._outcome()


class Accumulator:
    """Sans-IO batching state. ``event_factory`` makes each batch's completion event (anyio or threading);
    ``on_wake`` is called (rarely: a batch opened, filled, or records await metadata) so the sender re-plans."""

    def __init__(self, *, batch_bytes: int, batch_bytes_max: int, linger_s: float, now: Callable[[], float],
                 event_factory: Callable[[], Any], on_wake: Callable[[], None],
                 handle_cls: type[RecordHandle] = RecordHandle, max_in_flight: int = 1, compression: int = 0) -> None:
        self.batch_bytes = min(batch_bytes, batch_bytes_max)
        self.compression = compression  # Kafka's attribute id (broker.wire.batch.compression_id)
        # Batches per partition awaiting an answer. More than one needs an idempotent producer (sequence numbers),
        # so the broker refuses a batch whose predecessor failed instead of storing it out of order.
        self.max_in_flight = max_in_flight
        self.producer_id = -1  # set by an idempotent producer (init_producer) before anything is sent
        self._next_seq: dict[tuple[str, int], int] = {}
        self._epoch: dict[tuple[str, int], int] = {}
        self.batch_bytes_max = batch_bytes_max
        self.linger_s = linger_s
        self._now = now  # the caller's clock; used only to stamp a batch's creation for linger
        self._event = event_factory
        self._wake = on_wake
        self._handle = handle_cls
        self.counts: dict[str, int] = {}  # topic -> partition count (from metadata)
        self._open: dict[tuple[str, int], Batch] = {}
        self._queues: dict[tuple[str, int], deque[Batch]] = {}
        self._in_flight: dict[tuple[str, int], int] = {}  # partition -> batches sent and not yet answered
        self._sticky: dict[str, int] = {}
        # Records awaiting their topic's partition count: topic -> (placeholder batch, [(key, value, headers, ts)]).
        self._parked: dict[str, tuple[Batch, list[tuple[Any, ...]]]] = {}
        self._seq = 0
        self._flush_upto = -1
        self.records_buffered = 0
        self._fit: dict[str, tuple[int, int]] = {}  # topic -> (records_max, bytes_max) learnt from COST_EXCEEDS_LIMIT
        self.splits = 0
        self._planned_due: float | None = None  # the time of the sender's next turn, as ``ready`` last told it
        # Set by a producer whose awaiting tasks may send ready batches themselves (``RecordHandle``'s await)
        self.send_inline: Callable[[], Awaitable[None]] | None = None

    # ---- the hot path ----
    def append(self, topic: str, value: bytes, key: bytes | None = None, headers: dict[str, bytes] | None = None,
               partition: int | None = None, timestamp_ms: int | None = None) -> RecordHandle:
        if value.__class__ is not bytes:
            value = _as_bytes(value, "value")
        size = len(value) + ROW_OVERHEAD
        if key is not None:
            if key.__class__ is not bytes:
                key = _as_bytes(key, "key")
            size += len(key)
        if headers:
            size += _headers_size(headers)
        else:
            headers = None
        ts = int(_time() * 1000) if timestamp_ms is None else int(timestamp_ms)
        n = self.counts.get(topic)
        if partition is None:
            if n is None:
                return self._park(topic, key, value, headers, ts, size)
            if key is not None:
                partition = partition_for_key(key, n)
            else:
                partition = self._sticky.get(topic)
                if partition is None:
                    partition = self._sticky[topic] = random.randrange(n)
        elif partition.__class__ is not int or partition < 0 or (n is not None and partition >= n):
            _bad_partition(topic, partition, n)
        tp = (topic, partition)
        b = self._open.get(tp)
        if b is None or b.size + size > b.bytes_max:
            if b is not None and key is None and self._sticky.get(topic) == partition:
                self._seal(tp, b)  # a full sticky batch moves the sticky partition before this record lands
                partition = self._sticky[topic]
                tp = (topic, partition)
                b = self._open.get(tp)
            if b is None or b.size + size > b.bytes_max:
                b = self._new_batch(tp, ts, size)
        rows = b.rows
        i = len(rows)
        rows.append((i, ts - b.first_ts, key, value, headers))
        if ts > b.max_ts:
            b.max_ts = ts
        b.size += size
        self.records_buffered += 1
        if b.size >= b.bytes_max or i >= b.records_max - 1:
            self._seal(tp, b)
        return self._handle(b, i)

    def _check_fits(self, size: int) -> None:
        """A record of about ``size`` bytes must fit alone in a batch of the broker's ``batch_bytes_max``."""
        if size + BATCH_OVERHEAD > self.batch_bytes_max:
            raise RecordTooLargeError(
                f"record of about {size} bytes cannot fit a batch of batch_bytes_max={self.batch_bytes_max}",
                batch_bytes_max=self.batch_bytes_max)

    def _new_batch(self, tp: tuple[str, int], ts: int, size: int) -> Batch:
        self._check_fits(size)
        old = self._open.get(tp)
        if old is not None:
            self._seal(tp, old)  # the next record did not fit
        self._seq += 1
        b = Batch(tp[0], tp[1], ts, self._now(), self._seq, self._event())
        b.owner = self
        # Nothing pending anywhere: this record goes at the sender's next turn (one round trip, not the linger).
        # Not per partition: a keyless topic's sticky partition moves on at each send, to an idle partition.
        b.eager = not self._queues
        b.bytes_max = self.batch_bytes
        fit = self._fit.get(tp[0])
        if fit is not None:
            b.records_max, bytes_max = fit
            b.bytes_max = min(self.batch_bytes, bytes_max)
        self._open[tp] = b
        q = self._queues.get(tp)
        if q is None:
            q = self._queues[tp] = deque()
        q.append(b)
        due = self._planned_due
        if b.eager or due is None or due > b.created + self.linger_s:
            # The sender plans again only if this batch is due before the turn it has planned: with many
            # partitions a batch opens at almost every send, and a wake each time costs more than the batch.
            self._wake()
        return b

    def _seal(self, tp: tuple[str, int], b: Batch, wake: bool = True) -> None:
        """No more records go into ``b``; a keyless topic moves its sticky partition (Kafka KIP-480). ``wake``:
        tell the sender (not when the sender itself seals it, to send it)."""
        if self._open.get(tp) is b:
            del self._open[tp]
        if self._sticky.get(tp[0]) == tp[1]:
            self._pick_sticky(tp[0], tp[1])
        if wake:
            self._wake()

    def _pick_sticky(self, topic: str, old: int) -> None:
        n = self.counts.get(topic, 1)
        if n <= 1:
            self._sticky[topic] = 0
        else:
            p = random.randrange(n - 1)
            self._sticky[topic] = p + 1 if p >= old else p

    def _park(self, topic: str, key: bytes | None, value: bytes, headers: Any, ts: int, size: int) -> RecordHandle:
        """Partition count unknown: hold the record until metadata arrives (``set_partition_count`` /
        ``fail_topic``)."""
        self._check_fits(size)
        entry = self._parked.get(topic)
        if entry is None:
            entry = self._parked[topic] = (Batch(topic, -1, ts, self._now(), -1, self._event()), [])
            self._wake()
        ph, parked = entry
        parked.append((key, value, headers, ts))
        self.records_buffered += 1
        return self._handle(ph, len(parked) - 1)

    # ---- metadata ----
    def topics_awaiting_metadata(self) -> list[str]:
        return list(self._parked)

    def set_partition_count(self, topic: str, partitions: int) -> None:
        """Learn a topic's partition count and route any records parked for it, in send order."""
        self.counts[topic] = partitions
        entry = self._parked.pop(topic, None)
        if entry is None:
            return
        ph, parked = entry
        self.records_buffered -= len(parked)
        handles = []
        for key, value, headers, ts in parked:
            handles.append(self.append(topic, value, key, headers, None, ts))
        ph.rows = handles  # type: ignore[assignment]  # placeholder keeps the real handles for its waiters
        ph.routed = True
        ph.event.set()

    def forget_topic(self, topic: str) -> None:
        """Metadata went stale (UNKNOWN_TOPIC_OR_PARTITION): ask again before the next keyless/keyed record."""
        self.counts.pop(topic, None)
        self._sticky.pop(topic, None)

    def fail_topic(self, topic: str, error: BaseException) -> int:
        """Fail every record parked for ``topic`` (e.g. it does not exist). Returns how many failed."""
        entry = self._parked.pop(topic, None)
        if entry is None:
            return 0
        ph, parked = entry
        ph.error = error
        ph.event.set()
        self.records_buffered -= len(parked)
        return len(parked)

    # ---- the sender's side ----
    def flush(self) -> tuple[list[Any], bool]:
        """Make every batch existing now ready regardless of linger. Returns the events to wait on, and whether
        some are records awaiting metadata (once those are routed, flush again to wait for their batches)."""
        self._flush_upto = self._seq
        for tp, b in list(self._open.items()):
            self._seal(tp, b)
        events = [ph.event for ph, _ in self._parked.values()]
        parked = bool(events)
        for q in self._queues.values():
            events.extend(b.event for b in q)
        return events, parked

    def ready(self, now: float) -> tuple[list[Batch], float | None]:
        """Batches to send now (marked in flight), and the earliest time another may become ready (or None).

        In partition order, up to max_in_flight per partition: a sealed batch (full, flushed, split, or retried at
        its time), an open one ``linger_s`` old, or an eager open one once nothing of its partition is in flight;
        and if any of those goes, the open batches at least ``linger_s / 2`` old, after them."""
        out: list[Batch] = []
        deadline = None
        linger = self.linger_s
        # Open batches held back only by their linger, at least half of it old: they go too if anything goes now
        # (Kafka's drain takes every partition's batch once one is ready), so many partitions' batches share one
        # request instead of each lingering out at its own moment, one small request after another.
        drainable: list[tuple[tuple[str, int], Batch, int]] = []
        drain_from = now - linger / 2
        drain_due = None
        for tp, q in self._queues.items():
            if not q:
                continue
            flying = self._in_flight.get(tp, 0)
            due = None
            is_open = self._open.get(tp)
            for b in q:  # in order: a batch never goes out ahead of an unsent one before it
                if b.sent:
                    continue
                if flying >= self.max_in_flight or (b.failed and (flying or b is not q[0])):
                    break  # a failed batch is resent alone, at the head, so the partition's order is restored
                if b.retry_at > now:
                    due = b.retry_at
                    break
                if b is is_open:  # still gathering records (full, flushed, split and retried batches are sealed)
                    if now < b.created + linger and (flying or not b.eager):
                        if b.created <= drain_from:
                            drainable.append((tp, b, flying))
                            if drain_due is None or b.created + linger < drain_due:
                                drain_due = b.created + linger
                        else:
                            due = b.created + linger  # eager: or once the answers in flight arrive (they wake us)
                        break
                    if linger == 0 and flying and not b.eager:
                        break  # no linger: the answer in flight is the batching window (it wakes us)
                    self._seal(tp, b, wake=False)
                flying = self._take(tp, b, flying, out)
                if b.failed:
                    break
            self._in_flight[tp] = flying
            if due is not None and (deadline is None or due < deadline):
                deadline = due
        if drainable:
            if out:
                for tp, b, flying in drainable:
                    self._seal(tp, b, wake=False)
                    self._in_flight[tp] = self._take(tp, b, flying, out)
            elif deadline is None or drain_due < deadline:  # type: ignore[operator]
                deadline = drain_due
        self._planned_due = deadline
        return out, deadline

    def _take(self, tp: tuple[str, int], b: Batch, flying: int, out: list[Batch]) -> int:
        """Mark ``b`` in flight (numbered, for an idempotent producer) and add it to ``out``; returns ``flying``
        for its partition, one more."""
        epoch = self._epoch.get(tp, 0)
        if b.base_seq < 0 or b.epoch != epoch:  # first send, or renumbered after a lost batch
            b.base_seq = self._next_seq.get(tp, 0)
            b.epoch = epoch
            b.blob = None
            self._next_seq[tp] = (b.base_seq + len(b.rows)) % SEQUENCE_WRAP
        b.sent = True
        b.attempts += 1
        out.append(b)
        return flying + 1

    def complete(self, b: Batch, base_offset: int) -> bool:
        """``b`` is stored from ``base_offset``. Returns whether its partition has batches waiting to be sent (the
        answer may have made them ready: wake the sender); else nothing changed for the sender."""
        b.base_offset = base_offset
        self._finish(b)
        q = self._queues.get((b.topic, b.partition))
        if not q:
            return False
        # unsent batches are at the tail (a failed one goes again from the head, so look further only then)
        return not q[-1].sent or any(not x.sent for x in q)

    def fail(self, b: Batch, error: BaseException) -> None:
        b.error = error
        tp = (b.topic, b.partition)
        if b.base_seq >= 0 and self.producer_id >= 0:
            # Its sequence numbers will never be stored, so the partition's later batches could never follow on:
            # start a new producer epoch there (sequences from 0, as Kafka's KIP-360) and resend what is left one
            # batch at a time, in order.
            self._epoch[tp] = self._epoch.get(tp, 0) + 1
            self._next_seq[tp] = 0
            for later in self._queues.get(tp, ()):
                later.failed = True
        self._finish(b)

    def retry_later(self, b: Batch, at: float) -> None:
        """Keep ``b`` in its place (order preserved) and send it again at ``at``, alone, once it is the head."""
        b.retry_at = at
        b.failed = True
        self._landed(b)

    def _landed(self, b: Batch) -> None:
        """An answer for ``b`` arrived: it no longer counts as in flight."""
        if b.sent:
            b.sent = False
            tp = (b.topic, b.partition)
            self._in_flight[tp] = max(0, self._in_flight.get(tp, 0) - 1)

    def _finish(self, b: Batch) -> None:
        tp = (b.topic, b.partition)
        self._landed(b)
        q = self._queues.get(tp)
        if q:
            if q[0] is b:
                q.popleft()
            elif b in q:
                q.remove(b)
            if not q and tp not in self._open:
                del self._queues[tp]
        self.records_buffered -= len(b.rows)
        b.event.set()
        parent = b.parent
        while parent is not None:  # the last piece of a split batch settles it (and its own parent, if a piece)
            parent.pending -= 1
            if parent.pending:
                break
            parent.event.set()
            parent = parent.parent

    # ---- fitting limit policies ----
    def fit(self, topic: str, unit: str, max_cost: int) -> None:
        """Build later batches of ``topic`` to cost at most ``max_cost`` ``unit`` (``records`` or ``bytes``), the
        largest cost a limit policy said it can ever admit (COST_EXCEEDS_LIMIT); open batches are resized too.
        Remembered for the producer's lifetime (the smallest maximum seen per unit wins)."""
        records_max, bytes_max = self._fit.get(topic, (NO_MAX, NO_MAX))
        if unit == "records":
            records_max = min(records_max, max(1, int(max_cost)))
        elif unit == "bytes":
            bytes_max = min(bytes_max, max(1, int(max_cost)))
        else:
            return
        self._fit[topic] = (records_max, bytes_max)
        for tp, b in list(self._open.items()):
            if tp[0] == topic:
                b.records_max = records_max
                b.bytes_max = min(self.batch_bytes, bytes_max)
                if len(b.rows) >= b.records_max or b.size >= b.bytes_max:
                    self._seal(tp, b)

    def split(self, b: Batch, unit: str, max_cost: int, error: BaseException) -> int:
        """``b`` (in flight, head of its partition) was refused: it costs more ``unit`` than ``max_cost``. Replace
        it, at the head of its partition, by pieces that fit, in record order, so per-partition order holds; its
        handles follow their records into the pieces. A batch of one record cannot be split: it fails with
        ``error``. Returns how many records failed (0 or 1), and remembers the maximum for the topic (``fit``)."""
        self.fit(b.topic, unit, max_cost)
        rows = b.rows
        if len(rows) == 1 or unit not in ("records", "bytes"):
            n = len(rows)
            self.fail(b, error)
            return n
        if unit == "records":
            step = max(1, int(max_cost))
            chunks = [rows[i:i + step] for i in range(0, len(rows), step)]
        else:
            chunks, chunk, size = [], [], BATCH_OVERHEAD
            for row in rows:
                cost = _row_size(row)
                if chunk and size + cost > max_cost:
                    chunks.append(chunk)
                    chunk, size = [], BATCH_OVERHEAD
                chunk.append(row)
                size += cost
            chunks.append(chunk)
        if len(chunks) == 1:  # the estimate says it fits, the broker says not: halve it, so every split progresses
            half = len(rows) // 2
            chunks = [rows[:half], rows[half:]]
        pieces, handles = [], []
        for chunk in chunks:
            piece = Batch(b.topic, b.partition, b.first_ts, b.created, b.seq, self._event())
            piece.rows = [(j, r[1], r[2], r[3], r[4]) for j, r in enumerate(chunk)]
            piece.max_ts = b.first_ts + max(r[1] for r in chunk)
            piece.size = BATCH_OVERHEAD + sum(_row_size(r) for r in chunk)
            piece.parent = b
            piece.throttled_s = b.throttled_s
            piece.failed = True
            if b.base_seq >= 0:  # the pieces take the parent's sequence range, so later batches still follow on
                piece.base_seq = (b.base_seq + sum(len(c) for c in chunks[: len(pieces)])) % SEQUENCE_WRAP
            handles.extend(self._handle(piece, j) for j in range(len(chunk)))
            pieces.append(piece)
        tp = (b.topic, b.partition)
        self._landed(b)
        q = self._queues[tp]
        at = q.index(b)
        del q[at]
        for k, piece in enumerate(pieces):
            q.insert(at + k, piece)
        b.rows = handles
        b.pending = len(pieces)
        b.routed = True
        b.blob = None
        self.splits += 1
        return 0

    def pending_batches(self) -> list[Batch]:
        return [b for q in self._queues.values() for b in q]

    def abort(self, error: BaseException, *, in_flight: bool = False) -> None:
        """Fail everything not yet acknowledged (the producer is closing without flushing); with ``in_flight``,
        the batches marked sent too (the sender has stopped: no answer will settle them)."""
        for topic in list(self._parked):
            self.fail_topic(topic, error)
        self._open.clear()
        for tp, q in self._queues.items():
            keep = [] if in_flight else [b for b in q if b.sent]  # their answers will still settle them
            for b in q:
                if b.sent and not in_flight:
                    continue
                b.error = error
                self.records_buffered -= len(b.rows)
                b.event.set()
            q.clear()
            q.extend(keep)
        for tp in [tp for tp, q in self._queues.items() if not q]:
            del self._queues[tp]  # nothing pending there: a later record finds the producer idle


def _as_bytes(value: Any, name: str) -> bytes:
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{name} must be bytes, got {type(value).__name__}"
                    + (f"; encode it first, e.g. {name}.encode()" if isinstance(value, str) else ""))


def _row_size(row: tuple[Any, ...]) -> int:
    """The estimated encoded size of a row, as ``append`` counts it (an over-estimate)."""
    _, _, key, value, headers = row
    return len(value) + ROW_OVERHEAD + (len(key) if key is not None else 0) + (_headers_size(headers) if headers else 0)


def _headers_size(headers: dict[str, bytes]) -> int:
    size = 5
    for k, v in headers.items():
        if not isinstance(k, str) or v.__class__ is not bytes:
            raise TypeError(f"headers must map str to bytes, got {type(k).__name__} -> {type(v).__name__}")
        size += len(k) * 4 + len(v) + HEADER_ENTRY_OVERHEAD
    return size


def _bad_partition(topic: str, partition: Any, n: int | None) -> None:
    if partition.__class__ is not int:
        raise TypeError(f"partition must be an int, got {type(partition).__name__}")
    if partition < 0:
        raise ValueError(f"partition must be >= 0, got {partition}")
    raise UnknownTopicOrPartitionError(f"topic {topic!r} has {n} partitions; partition {partition} does not exist",
                                       topic=topic, partition=partition)


__all__ = ["Accumulator", "Batch", "RecordHandle"]
