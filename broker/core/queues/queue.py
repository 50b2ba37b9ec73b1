# One queue's messages and their timers: which are delayed, visible or in flight, when each becomes visible or
# expires, FIFO message groups and the deduplication window. The state changes only through the `apply_*` methods
# (the events the manager emits and the journal replays), so a replayed queue is the queue that was written. Pure:
# times are monotonic seconds handed in; must not know about receipt handles' text, dead-letter queues, storage,
# clocks or any protocol.
from __future__ import annotations

import heapq
from collections import deque
from typing import Any, Iterator

from sortedcontainers import SortedList, SortedSet

from millpond.broker.core.queues.attributes import DEDUP_WINDOW_S, QueueAttributes

DELAYED, VISIBLE, IN_FLIGHT = 0, 1, 2


class Message:
    """One stored message. ``visible_at``: monotonic seconds when it is (again) receivable; ``enqueued_at``:
    monotonic seconds its retention counts from (kept when moved to a dead-letter queue, as SQS);
    ``received_at``: when its current receipt began (the 12 h visibility cap counts from there)."""

    __slots__ = ("seq", "message_id", "body", "attributes", "sent_ms", "enqueued_at", "visible_at", "group_id",
                 "dedup_id", "source", "receive_count", "first_receive_ms", "received_at", "state")

    def __init__(self, seq: int, message_id: str, body: bytes, attributes: dict[str, Any], sent_ms: int,
                 enqueued_at: float, visible_at: float, group_id: str | None, dedup_id: str | None,
                 source: str | None) -> None:
        self.seq = seq
        self.message_id = message_id
        self.body = body
        self.attributes = attributes
        self.sent_ms = sent_ms
        self.enqueued_at = enqueued_at
        self.visible_at = visible_at
        self.group_id = group_id
        self.dedup_id = dedup_id
        self.source = source  # the queue it was moved from as a dead letter, else None
        self.receive_count = 0
        self.first_receive_ms = -1
        self.received_at = -1.0
        self.state = DELAYED


class _Group:
    __slots__ = ("seqs", "in_flight", "entry")

    def __init__(self) -> None:
        self.seqs: SortedList = SortedList()  # its stored messages, oldest first
        self.in_flight = 0
        self.entry: tuple[int, str] | None = None  # its row in Queue._available, if any


class Queue:
    """A queue's state. ``advance(now)`` runs its timers (delays and visibility timeouts ending, retention, the
    deduplication window) and must be called before reading it at ``now``."""

    def __init__(self, name: str, attrs: QueueAttributes, incarnation: str, created_ms: int) -> None:
        self.name = name
        self.attrs = attrs
        self.incarnation = incarnation  # random, per creation: a deleted queue's handles never match its successor
        self.created_ms = created_ms
        self.modified_ms = created_ms
        self.messages: dict[int, Message] = {}
        self.next_seq = 1
        self.counts = [0, 0, 0]  # by state: delayed, visible, in flight
        # sorted lists rather than sets: each message is in each at most once by construction (placed once per
        # state, unplaced before it changes), and a list's add skips the set's bookkeeping on the hot path
        self._timers: SortedList = SortedList()  # (visible_at, seq) of delayed and in-flight messages
        # (enqueued_at + retention_s, seq) of every message: those stored in that order (every send: `now` and
        # the seq only grow) are appended to a deque, the others (dead letters keep their first enqueue time) go
        # to a sorted list. The deque's rows of removed messages are dropped lazily (when met at its head, or all
        # at once when they outnumber the messages): a send costs an append, not a sorted insert.
        self._expiring: deque[tuple[float, int]] = deque()
        self._expiry: SortedList = SortedList()
        # standard queues, the visible messages: those never received since they were sent visible, in seq order
        # (a deque: appended by sends, taken from the front by receives; a row whose message was removed or
        # received since is stale, dropped when met), and the others (visible again, or delayed until now)
        self._fresh: deque[int] = deque()
        self._ready: SortedList = SortedList()
        self._groups: dict[str, _Group] = {}  # FIFO queues
        self._available: SortedSet = SortedSet()  # FIFO: (head seq, group) of groups that can deliver now
        self._dedup: dict[str, tuple[float, str, int]] = {}  # FIFO: dedup id -> (expires_at, message id, seq)
        self._dedup_expiry: SortedSet = SortedSet()  # (expires_at, dedup id)

    @property
    def fifo(self) -> bool:
        return self.attrs.fifo

    # -- time -----------------------------------------------------------------------------------------------------
    def next_deadline(self) -> float:
        """When ``advance`` next has work (monotonic seconds; ``inf``: nothing scheduled)."""
        d = float("inf")
        for timers in (self._timers, self._expiry, self._dedup_expiry):
            if timers:
                d = min(d, timers[0][0])
        head = self._expiring_head()
        return d if head is None else min(d, head[0])

    def _expiring_head(self) -> tuple[float, int] | None:
        """The first row of ``_expiring`` whose message is still stored (stale rows before it dropped)."""
        rows, messages = self._expiring, self.messages
        while rows:
            row = rows[0]
            if row[1] in messages:
                return row
            rows.popleft()
        return None

    def advance(self, now: float) -> bool:
        """Run what is due at ``now``: messages past retention are dropped (in flight or not, as SQS), delays and
        visibility timeouts that ended make messages visible, deduplication ids older than 5 minutes are
        forgotten. Returns True if a message became visible (long polls may now be answered)."""
        while self._expiry and self._expiry[0][0] <= now:
            self._remove(self._expiry[0][1])
        while (head := self._expiring_head()) is not None and head[0] <= now:
            self._remove(head[1])
        while self._dedup_expiry and self._dedup_expiry[0][0] <= now:
            _, dedup_id = self._dedup_expiry.pop(0)
            del self._dedup[dedup_id]
        woke = False
        while self._timers and self._timers[0][0] <= now:
            m = self.messages[self._timers[0][1]]
            self._unplace(m)
            self._place(m, VISIBLE)
            woke = True
        return woke

    # -- reading --------------------------------------------------------------------------------------------------
    def duplicate_of(self, dedup_id: str) -> tuple[str, int] | None:
        """``(message id, seq)`` of the message sent with ``dedup_id`` within the last 5 minutes, else None."""
        found = self._dedup.get(dedup_id)
        return None if found is None else (found[1], found[2])

    def deliverable(self) -> Iterator[Message]:
        """Visible messages in the order a receive takes them (call ``advance`` first; do not change the queue
        while iterating). Standard queues: oldest first. FIFO queues: groups with nothing in flight, the group of
        the oldest head first, each group's messages in order while they are visible (as SQS, which fills a
        receive from one group first): a group with a message in flight delivers nothing."""
        if not self.fifo:
            messages = self.messages
            fresh = (m for seq in self._fresh
                     if (m := messages.get(seq)) is not None and m.receive_count == 0 and m.state == VISIBLE)
            if not self._ready:
                yield from fresh
            else:
                yield from heapq.merge((messages[seq] for seq in self._ready), fresh, key=_seq)
            return
        for _, group_id in self._available:
            for seq in self._groups[group_id].seqs:
                m = self.messages[seq]
                if m.state != VISIBLE:
                    break
                yield m

    # -- events (the only changes; the journal replays the same calls) --------------------------------------------
    def apply_send(self, m: Message, now: float) -> None:
        """Store ``m`` (seq given by the sender). A FIFO message with a deduplication id, sent here rather than
        moved here as a dead letter, holds its id for 5 minutes from ``enqueued_at``."""
        seq = m.seq
        self.messages[seq] = m
        if seq >= self.next_seq:
            self.next_seq = seq + 1
        row = (m.enqueued_at + self.attrs.retention_s, seq)
        rows = self._expiring
        if not rows or rows[-1] <= row:
            rows.append(row)
        else:
            self._expiry.add(row)
        if not self.fifo:
            fresh = self._fresh
            if m.visible_at <= now and (not fresh or fresh[-1] < seq):
                m.state = VISIBLE
                self.counts[VISIBLE] += 1
                fresh.append(seq)
            else:
                self._place(m, VISIBLE if m.visible_at <= now else DELAYED)
            return
        group = self._groups.get(m.group_id or "")
        if group is None:
            group = self._groups[m.group_id or ""] = _Group()
        group.seqs.add(m.seq)
        if m.dedup_id is not None and m.source is None:
            # a live send never repeats an id still held; a replay may, once the older one's window is over
            old = self._dedup.get(m.dedup_id)
            if old is not None:
                self._dedup_expiry.discard((old[0], m.dedup_id))
            expires = m.enqueued_at + DEDUP_WINDOW_S
            self._dedup[m.dedup_id] = (expires, m.message_id, m.seq)
            self._dedup_expiry.add((expires, m.dedup_id))
        self._place(m, VISIBLE if m.visible_at <= now else DELAYED)

    def apply_sends(self, ms: list[Message], now: float) -> None:
        """``apply_send`` of each of ``ms`` in order, in one loop for a standard queue (a batch's sends)."""
        if self.fifo:
            for m in ms:
                self.apply_send(m, now)
            return
        messages, rows, fresh, retention_s = self.messages, self._expiring, self._fresh, self.attrs.retention_s
        visible = 0
        for m in ms:
            seq = m.seq
            messages[seq] = m
            if seq >= self.next_seq:
                self.next_seq = seq + 1
            row = (m.enqueued_at + retention_s, seq)
            if not rows or rows[-1] <= row:
                rows.append(row)
            else:
                self._expiry.add(row)
            if m.visible_at <= now and (not fresh or fresh[-1] < seq):
                m.state = VISIBLE
                visible += 1
                fresh.append(seq)
            else:
                self._place(m, VISIBLE if m.visible_at <= now else DELAYED)
        self.counts[VISIBLE] += visible

    def apply_receive(self, seq: int, receive_count: int, visible_at: float, received_at: float,
                      first_receive_ms: int, now: float) -> None:
        """A delivery: its receive count, when it is visible again (``now`` or earlier: at once), when it began."""
        m = self.messages[seq]
        self._unplace(m)
        m.receive_count = receive_count
        m.visible_at = visible_at
        m.received_at = received_at
        m.first_receive_ms = first_receive_ms
        self._place(m, IN_FLIGHT if visible_at > now else VISIBLE)

    def apply_visibility(self, seq: int, visible_at: float, now: float) -> None:
        """A new visibility timeout for the message's current delivery, ending at ``visible_at``."""
        m = self.messages[seq]
        self._unplace(m)
        m.visible_at = visible_at
        self._place(m, IN_FLIGHT if visible_at > now else VISIBLE)

    def apply_delete(self, seq: int) -> None:
        if seq in self.messages:
            self._remove(seq)

    def apply_purge(self) -> None:
        """Every message gone, delayed and in flight too, and the deduplication window cleared (as SQS PurgeQueue).
        Sequence numbers are not reused."""
        self.messages.clear()
        self.counts = [0, 0, 0]
        for s in (self._timers, self._expiring, self._expiry, self._fresh, self._ready, self._available,
                  self._dedup_expiry):
            s.clear()
        self._groups.clear()
        self._dedup.clear()

    def apply_attributes(self, attrs: QueueAttributes, modified_ms: int) -> None:
        """New attributes; a changed retention period applies to stored messages too (lowering it can expire
        them at the next ``advance``, as SQS)."""
        old, self.attrs, self.modified_ms = self.attrs, attrs, modified_ms
        if attrs.retention_s != old.retention_s:
            self._expiring = deque(sorted((m.enqueued_at + attrs.retention_s, m.seq) for m in self.messages.values()))
            self._expiry = SortedList()

    # -- structures -----------------------------------------------------------------------------------------------
    def _remove(self, seq: int) -> None:
        m = self.messages.pop(seq)
        self._unplace(m)
        if self._expiry:
            self._expiry.discard((m.enqueued_at + self.attrs.retention_s, seq))
        if len(self._expiring) > 2 * len(self.messages) + 1024:  # stale rows outnumber the messages: drop them
            messages = self.messages
            self._expiring = deque(row for row in self._expiring if row[1] in messages)
        if self.fifo:
            key = m.group_id or ""
            group = self._groups[key]
            group.seqs.remove(seq)
            if not group.seqs:
                self._available.discard(group.entry)
                del self._groups[key]
            else:
                self._refresh(group, key)

    def _unplace(self, m: Message) -> None:
        self.counts[m.state] -= 1
        if m.state == VISIBLE:
            if not self.fifo:
                fresh = self._fresh
                if m.receive_count == 0 and fresh:
                    while fresh and fresh[0] != m.seq and not self._is_fresh(fresh[0]):
                        fresh.popleft()  # stale rows before it
                    if fresh and fresh[0] == m.seq:
                        fresh.popleft()
                        return
                    if len(fresh) > 2 * self.counts[VISIBLE] + 1024:  # stale rows outnumber the visible: drop them
                        self._fresh = deque(seq for seq in fresh if self._is_fresh(seq))
                # a row of m left in _fresh (rare: not at its head) is stale once m is removed or received
                self._ready.discard(m.seq)
        else:
            self._timers.discard((m.visible_at, m.seq))
        if self.fifo and m.state == IN_FLIGHT:
            self._groups[m.group_id or ""].in_flight -= 1

    def _is_fresh(self, seq: int) -> bool:
        m = self.messages.get(seq)
        return m is not None and m.receive_count == 0 and m.state == VISIBLE

    def _place(self, m: Message, state: int) -> None:
        m.state = state
        self.counts[state] += 1
        if state == VISIBLE:
            if not self.fifo:
                self._ready.add(m.seq)
        else:
            self._timers.add((m.visible_at, m.seq))
        if self.fifo:
            key = m.group_id or ""
            group = self._groups[key]
            if state == IN_FLIGHT:
                group.in_flight += 1
            self._refresh(group, key)

    def _refresh(self, group: _Group, key: str) -> None:
        """Keep the group's row in ``_available`` true: nothing in flight and its oldest message visible."""
        head = self.messages[group.seqs[0]]
        entry = (head.seq, key) if group.in_flight == 0 and head.state == VISIBLE else None
        if entry != group.entry:
            if group.entry is not None:
                self._available.discard(group.entry)
            if entry is not None:
                self._available.add(entry)
            group.entry = entry


def _seq(m: Message) -> int:
    return m.seq


__all__ = ["DELAYED", "IN_FLIGHT", "Message", "Queue", "VISIBLE"]
