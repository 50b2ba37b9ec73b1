# The async consumer: which partitions it reads (assign / topic names), its position in each, seeks, and a fetcher
# task that keeps one long-poll fetch in flight while the application works through the previous answer.
# Records come out per partition in offset order. Must not know sockets (it calls Client.request) and must not
# decide partition ownership itself: in a consumer group, client._group.GroupMember drives `_add`/`_pause`/`_drop`.
from __future__ import annotations

import logging
import math
import random
from collections import deque
from typing import TYPE_CHECKING, Any, Iterable

import anyio

from millpond.broker.wire.batch import Record, decode_records
from millpond.broker.wire.errors import (
    EXCEPTIONS,
    CorruptRangeError,
    MillpondError,
    OffsetOutOfRangeError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
)

from millpond.client._group import Callback, GroupMember, MemberCore
from millpond.client._native import native
from millpond.client._seconds import seconds_api

if TYPE_CHECKING:
    from millpond.client._client import Client

RESETS = ("earliest", "latest", "error")
TopicPartition = tuple[str, int]
_log = logging.getLogger("millpond.client")


class _Part:
    __slots__ = ("position", "fetch_offset", "reset", "epoch", "processed", "paused", "corrupt", "skip_to")

    def __init__(self, reset: str | int) -> None:
        self.position: int | None = None  # next offset the application will get
        self.fetch_offset: int | None = None  # next offset to fetch (ahead of position while prefetching)
        self.reset: str | int | None = reset  # pending "earliest" / "latest" / "error" / timestamp ms to resolve
        self.epoch = 0  # bumped on every seek: answers to older fetches are dropped
        self.processed: int | None = None  # position when the application last came back for more (auto-commit)
        self.paused = False  # being revoked: no more fetches, no more records handed out
        self.corrupt: MillpondError | None = None  # damage met: raised once the records before it are handed out
        self.skip_to: int | None = None  # damage skipped: the position once the records before it are handed out

    def at(self, offset: int) -> None:
        self.position = self.fetch_offset = self.processed = offset
        self.reset = None


@seconds_api
class Consumer:
    """Reads records; ``async with client.consumer("logs", auto_offset_reset="earliest") as cons:``.

    ``async for record in cons`` yields ``broker.wire.batch.Record`` (topic, partition, offset, timestamp_ms, key,
    value, headers), in offset order per partition, forever; ``await cons.getmany(max_records, timeout_s)`` returns
    a list instead. A partition nobody seeks starts at ``auto_offset_reset`` (``"latest"``: only new records;
    ``"earliest"``: the oldest kept; ``"error"``: raise ``OffsetOutOfRangeError``), which also answers
    OFFSET_OUT_OF_RANGE (e.g. retention passed the position). After a reconnect the consumer fetches again from
    its position, so nothing is skipped; a record is delivered again only if you seek back. Errors that retrying
    cannot fix (e.g. ``UnknownTopicOrPartitionError``) are raised from the iteration / ``getmany``.

    Records the broker finds damaged on disk (CORRUPT_RANGE) are never handed out: the records before them are,
    then ``CorruptRangeError`` is raised (details ``topic``, ``partition``, ``first_offset``, ``last_offset``,
    ``next_offset``); the partition stays there until you ``seek`` (e.g. to ``next_offset``). With
    ``skip_corrupt=True`` the consumer continues past them instead, logs a warning and appends
    ``(topic, partition, first_offset, last_offset)`` to ``skipped``. The default is Kafka's Java consumer's
    with ``check.crcs`` (it raises at a corrupt record until the application seeks past it), with the range named.

    With ``group=``, the consumer is a member of that consumer group (see ``client._group`` and
    ``Client.consumer``): it reads only the partitions the group assigns it, starting at the group's committed
    offsets, and ``commit()`` / auto-commit store its positions.
    """

    def __init__(self, client: Client, topics: str | Iterable[str] | None, *, group: str | None,
                 auto_offset_reset: str, max_wait_s: float, fetch_bytes: int,
                 retry_backoff_s: tuple[float, float], enable_auto_commit: bool = True,
                 auto_commit_interval_s: float = 5.0, session_timeout_s: float = 10.0,
                 max_poll_interval_s: float = 300.0, group_instance_id: str | None = None,
                 assignor: str | None = None, on_assigned: Callback | None = None,
                 on_revoked: Callback | None = None, skip_corrupt: bool = False) -> None:
        if auto_offset_reset not in RESETS:
            raise ValueError(f"auto_offset_reset must be 'earliest', 'latest' or 'error', got {auto_offset_reset!r}")
        self._client = client
        self.auto_offset_reset = auto_offset_reset
        self.max_wait_s = max_wait_s
        self.fetch_bytes = fetch_bytes
        self.retry_backoff_s = retry_backoff_s
        self.skip_corrupt = skip_corrupt
        self.skipped: list[tuple[str, int, int, int]] = []  # damaged ranges continued past (skip_corrupt)
        self._skips = 0  # partitions with a skip_to not yet settled
        self._parts: dict[TopicPartition, _Part] = {}
        self._fetch_round = 0  # rotates which partition a fetch names first (the broker fills them in order)
        self._topics: list[str] = []  # subscribed names still to expand into partitions
        self._results: deque[list[tuple[TopicPartition, int, list[Record]]]] = deque()
        self._ready: deque[Record] = deque()
        self._error: BaseException | None = None
        # the loop's own events and scopes (client._native): a getmany and a fetch each make a few
        loop = native()
        self._event, self._move_on_after, self._cancel_scope = loop.event, loop.move_on_after, loop.cancel_scope
        self._data = self._event()  # the fetcher added results or an error
        self._changed = self._event()  # assignment, seek or consumption changed what the fetcher should do
        self._fetch_scope: Any = None  # the fetch in flight's cancel scope (the loop's own)
        self._tg: Any = None
        self._closed = False
        self.group = group
        self.enable_auto_commit = enable_auto_commit
        self._member: GroupMember | None = None
        self._last: _Part | None = None  # part of the record __anext__ handed out last
        if group is not None:
            names = [topics] if isinstance(topics, str) else list(topics or ())
            if not names:
                raise ValueError("a consumer group member needs the topic names it subscribes to")
            if auto_commit_interval_s <= 0 or session_timeout_s <= 0 or max_poll_interval_s <= 0:
                raise ValueError("auto_commit_interval_s, session_timeout_s and max_poll_interval_s must be > 0")
            core = MemberCore(group, names, anyio.current_time(), session_timeout_s=session_timeout_s,
                              max_poll_interval_s=max_poll_interval_s,
                              auto_commit_interval_s=auto_commit_interval_s if enable_auto_commit else None,
                              group_instance_id=group_instance_id, assignor=assignor)
            self._member = GroupMember(client, self, core, auto_offset_reset=auto_offset_reset,
                                       on_assigned=on_assigned, on_revoked=on_revoked)
        elif topics is not None:
            self.assign([topics] if isinstance(topics, str) else list(topics))

    # ---- assignment and positions ----
    def assign(self, partitions: Iterable[TopicPartition | str]) -> None:
        """Read exactly these: ``(topic, partition)`` pairs, or topic names meaning all their partitions.
        Replaces the previous assignment; partitions kept keep their position. Not for a group member (the
        group assigns its partitions): raises ``RuntimeError``."""
        if self._member is not None:
            raise RuntimeError(f"consumer group {self.group!r} assigns this consumer's partitions; assign() is "
                               "for consumers without a group")
        pairs, names = [], []
        for item in partitions:
            if isinstance(item, str):
                names.append(item)
            else:
                topic, p = item
                pairs.append((str(topic), int(p)))
        self._topics = names
        self._set_assignment(pairs)

    def _set_assignment(self, pairs: Iterable[TopicPartition], keep_names: bool = False) -> None:
        new = {}
        for tp in pairs:
            new[tp] = self._parts.get(tp) or _Part(self.auto_offset_reset)
        if keep_names:
            new.update({tp: st for tp, st in self._parts.items() if tp not in new})
        dropped = set(self._parts) - set(new)
        self._parts = new
        for tp in dropped:
            self._purge(tp)
        self._poke()

    def assignment(self) -> frozenset[TopicPartition]:
        """Partitions currently read (topic names not yet expanded are not included)."""
        return frozenset(self._parts)

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Next record from ``topic/partition`` will be at ``offset`` (or the reset rule if out of range)."""
        st = self._part(topic, partition)
        st.at(int(offset))
        self._moved((topic, partition), st)

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Move the given partitions (default: all assigned) to their log start offset."""
        self._seek_spec("earliest", partitions)

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        """Move the given partitions (default: all assigned) to their end: only records produced later."""
        self._seek_spec("latest", partitions)

    def seek_to_timestamp(self, timestamp_ms: int, *partitions: TopicPartition) -> None:
        """Move to the first record with timestamp >= ``timestamp_ms`` (epoch ms), or the end if none."""
        self._seek_spec(int(timestamp_ms), partitions)

    async def position(self, topic: str, partition: int) -> int:
        """Offset of the next record this consumer will return for the partition (resolving a pending seek)."""
        st = self._part(topic, partition)
        while st.position is None:
            await self._resolve([(topic, partition)])
        return st.position

    def _part(self, topic: str, partition: int) -> _Part:
        st = self._parts.get((topic, partition))
        if st is None:
            raise ValueError(f"{topic}/{partition} is not assigned to this consumer; assign() it first")
        return st

    def _seek_spec(self, spec: str | int, partitions: tuple[TopicPartition, ...]) -> None:
        for tp in partitions or tuple(self._parts):
            st = self._part(*tp)
            st.position = st.fetch_offset = st.processed = None
            st.reset = spec
            self._moved(tp, st)

    def _moved(self, tp: TopicPartition, st: _Part) -> None:
        st.epoch += 1
        if st.skip_to is not None:
            self._skips -= 1
        st.corrupt = st.skip_to = None
        self._purge(tp)
        self._poke()

    def _purge(self, tp: TopicPartition) -> None:
        if any(r.partition == tp[1] and r.topic == tp[0] for r in self._ready):
            self._ready = deque(r for r in self._ready if r.partition != tp[1] or r.topic != tp[0])
        for res in self._results:
            res[:] = [c for c in res if c[0] != tp]

    def _poke(self) -> None:
        if self._fetch_scope is not None:
            self._fetch_scope.cancel()  # the fetch in flight asks for stale offsets: drop it
        self._changed.set()

    # ---- the application's side ----
    async def getmany(self, max_records: int | None = None, timeout_s: float | None = None) -> list[Record]:
        """Up to ``max_records`` records (all buffered if None) as soon as any are available, or ``[]`` after
        ``timeout_s`` seconds (None: wait as long as it takes). Raises the fetcher's non-retriable error.
        In a group, each call also tells the group the records returned before have been processed (what
        auto-commit stores, as Kafka's poll) and restarts the max_poll_interval_s timer (KIP-62)."""
        if self._member is not None:
            for st in self._parts.values():
                st.processed = st.position
        await self._pull(timeout_s)
        ready = self._ready
        n = len(ready) if max_records is None else min(max_records, len(ready))
        out = [ready.popleft() for _ in range(n)]
        last: dict[TopicPartition, int] = {}
        for r in out:
            last[(r.topic, r.partition)] = r.offset
        for tp, off in last.items():
            st = self._parts.get(tp)
            if st is not None:
                st.position = off + 1
        if self._skips:
            self._settle_skips()
        return out

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Record:
        if self._member is not None and self._last is not None:
            self._last.processed = self._last.position
        await self._pull(None, buffered_ok=True)
        r = self._ready.popleft()
        st = self._parts.get((r.topic, r.partition))
        if st is not None:
            st.position = r.offset + 1
            self._last = st
        if self._skips:
            self._settle_skips()
        return r

    def _settle_skips(self) -> None:
        """Move each position past a skipped damaged range once every record before it has been handed out."""
        pending = {(r.topic, r.partition) for r in self._ready}
        pending.update(c[0] for res in self._results for c in res)
        left = 0
        for tp, st in self._parts.items():
            if st.skip_to is not None:
                if tp in pending:
                    left += 1
                    continue
                if st.position is not None and st.position < st.skip_to:
                    st.position = st.skip_to
                st.skip_to = None
        self._skips = left  # counted afresh: partitions dropped meanwhile took theirs with them

    async def _pull(self, timeout_s: float | None, buffered_ok: bool = False) -> None:
        """Wait until records are ready in ``_ready``, or ``timeout_s`` passes (None: no limit). Raises the
        fetcher's error, unless ``buffered_ok`` and records are already buffered (those are handed out first).
        In a group, the wait is a poll: the member counts as polling meanwhile (KIP-62)."""
        member = self._member
        if member is not None:
            self._pull_started(member)
        try:
            if not (buffered_ok and self._ready):
                with self._move_on_after(math.inf if timeout_s is None else timeout_s):
                    while not self._fill():
                        await self._data.wait()
                        self._data = self._event()
        finally:
            if member is not None:
                member.core.poll_ended(anyio.current_time())

    def _pull_started(self, member: GroupMember) -> None:
        if self._closed:
            raise RuntimeError("the consumer is closed")
        core = member.core
        was = core.state
        core.poll_started(anyio.current_time())
        if core.state is not was:
            member.wake()  # it had left for want of pulls (KIP-62): rejoin now

    def _fill(self) -> bool:
        """Move the next fetch answer into ``_ready``; True if records are ready. Raises a stored error."""
        if self._error is not None:
            err, self._error = self._error, None
            self._changed.set()
            raise err
        while not self._ready and self._results:
            for tp, epoch, records in self._results.popleft():
                st = self._parts.get(tp)
                if st is not None and st.epoch == epoch:
                    self._ready.extend(records)
            self._changed.set()  # room for the next prefetch
        if not self._ready:  # every record before a damaged range is out: now its error, or the skip
            if self._skips:
                self._settle_skips()
            for st in self._parts.values():
                if st.corrupt is not None:
                    err, st.corrupt = st.corrupt, None
                    st.position = st.fetch_offset
                    self._changed.set()  # fetched again from there (and raised again) unless seek() moves it
                    raise err
        return bool(self._ready)

    async def __aenter__(self) -> Consumer:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._fetcher)
        if self._member is not None:
            self._tg.start_soon(self._member.run)
        return self

    async def __aexit__(self, exc_type: Any, *exc: Any) -> None:
        try:
            with anyio.CancelScope(shield=True):
                await self._close(processed_only=exc_type is not None)
        finally:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)

    async def close(self) -> None:
        """Leave the consumer group, first committing every position if auto-commit is on (a static member leaves
        temporarily and keeps its partitions for its session timeout, as KIP-345). Leaving ``async with`` calls
        it; after an exception there, only what was processed before the last pull is committed."""
        await self._close(processed_only=False)

    async def _close(self, processed_only: bool) -> None:
        if self._closed:
            return
        self._closed = True
        if self._member is not None:
            await self._member.close(commit=self.enable_auto_commit, processed_only=processed_only)

    # ---- consumer groups: commits, and the seam GroupMember drives ----
    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        """Commit synchronously: ``offsets`` ``{(topic, partition): next offset to read}``, or by default the
        position of every partition this member owns (everything handed out so far, as Kafka's commitSync).
        Returns once the commit is durable; one that crossed a new member epoch is sent again with it while this
        member still holds the partitions. Raises ``NotPartitionOwnerError`` / ``UnknownMemberIdError`` if the
        group refuses it (e.g. the partition moved: a zombie cannot commit), ``StaleMemberEpochError`` only after
        three epoch changes in a row, and ``RuntimeError`` for a consumer without a group."""
        if self._member is None:
            raise RuntimeError("commit() needs a consumer group: client.consumer(topics, group=...)")
        await self._member.commit(self._offsets() if offsets is None else
                                  {(str(t), int(p)): int(o) for (t, p), o in offsets.items()})

    def _offsets(self, partitions: Iterable[TopicPartition] | None = None, *,
                 processed: bool = False) -> dict[TopicPartition, int]:
        out = {}
        for tp in self._parts if partitions is None else partitions:
            st = self._parts.get(tp)
            if st is not None:
                off = st.processed if processed else st.position
                if off is not None:
                    out[tp] = off
        return out

    def _add(self, starts: dict[TopicPartition, int | str]) -> None:
        for tp, start in starts.items():
            st = self._parts[tp] = _Part(start if isinstance(start, str) else self.auto_offset_reset)
            if not isinstance(start, str):
                st.at(start)
        self._poke()

    def _pause(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            st = self._parts.get(tp)
            if st is not None:
                st.paused = True
                st.epoch += 1
                self._purge(tp)
        self._poke()

    def _drop(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            if self._parts.pop(tp, None) is not None:
                self._purge(tp)
        self._poke()

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._data.set()

    # ---- the fetcher task ----
    async def _fetcher(self) -> None:
        delay = self.retry_backoff_s[0]
        while True:
            self._changed = self._event()
            try:
                # A seek or assignment while we plan sets _changed (made above), so the wait below returns at once.
                if self._error is None and not self._results:
                    if await self._fetch_once():
                        delay = self.retry_backoff_s[0]
                        continue
            except MillpondError as exc:
                if exc.retriable:  # connection lost, broker restarting...: same positions, after a backoff
                    await anyio.sleep(delay * (0.5 + random.random() / 2))
                    delay = min(delay * 2, self.retry_backoff_s[1])
                    continue
                self._error = exc
                self._data.set()
            await self._changed.wait()

    async def _fetch_once(self) -> bool:
        """One round: expand topic names, resolve pending resets, one long-poll fetch. False if nothing to do."""
        if self._topics:
            names = self._topics
            counts = await self._client.metadata(names)
            missing = [t for t in names if t not in counts]
            if missing:
                raise UnknownTopicOrPartitionError(f"topic {missing[0]!r} does not exist", topic=missing[0])
            self._topics = []
            self._set_assignment([(t, p) for t in names for p in range(counts[t])], keep_names=True)
        pending = [tp for tp, st in self._parts.items() if st.fetch_offset is None and not st.paused]
        if pending:
            await self._resolve(pending)
        asked = [(tp, st.fetch_offset, st.epoch) for tp, st in self._parts.items()
                 if st.fetch_offset is not None and not st.paused and st.corrupt is None]
        if not asked:
            return False
        if self._changed.is_set():
            return True  # a seek landed while we resolved offsets: plan again before a long poll
        # A fetch's bytes go to the partitions in the order named: rotate it so a partition with a backlog cannot
        # starve the others (as Kafka's consumer rotates its fetch order).
        self._fetch_round += 1
        k = self._fetch_round % len(asked)
        asked = asked[k:] + asked[:k]
        # The answer is applied by the connection's reader as it arrives (the application wakes from there, with
        # no hop through this task); this task only waits to plan the next fetch.
        conn = await self._client._connection()
        positions = {tp: (off, epoch) for tp, off, epoch in asked}
        done = self._event()
        failed: list[BaseException] = []

        def answered(response: Any, error: BaseException | None) -> None:
            try:
                if error is not None:
                    raise error
                self._apply(response.result(), positions)
            except Exception as exc:  # raised in this task below, as an awaited request would have
                failed.append(exc)
            done.set()

        cid = conn.begin_callback("fetch", {"partitions": [[t, p, off] for (t, p), off, _ in asked],
                                            "max_bytes": self.fetch_bytes,
                                            "max_wait_ms": round(self.max_wait_s * 1000)}, answered)
        timeout_s = self._client.request_timeout_s + self.max_wait_s
        try:
            with self._cancel_scope() as scope:
                self._fetch_scope = scope
                await conn.send_queued()  # a long poll does not busy-poll: records come when they come
                with self._move_on_after(timeout_s):
                    await done.wait()
        finally:
            self._fetch_scope = None
            if not done.is_set():
                conn.cancel(cid)  # cancelled by a seek or reassignment, or timed out: its answer is dropped
        if failed:
            raise failed[0]
        if not done.is_set() and not scope.cancelled_caught:
            raise RequestTimedOutError(f"no answer from {conn.description} within {timeout_s:g} s")
        return True

    def _apply(self, body: dict[str, Any], asked: dict[TopicPartition, tuple[int, int]]) -> None:
        result = []
        for row in body["partitions"]:
            topic, partition, code, log_start, high_watermark, data = row[:6]
            tp = (topic, partition)
            st = self._parts.get(tp)
            if st is None or tp not in asked or st.epoch != asked[tp][1]:
                continue
            offset = asked[tp][0]
            if code == OffsetOutOfRangeError.code:  # e.g. retention passed a committed offset: the reset rule
                if self.auto_offset_reset == "error":
                    raise OffsetOutOfRangeError(
                        f"{topic}/{partition}: offset {offset} is outside [{log_start}, {high_watermark}] and "
                        "auto_offset_reset='error'", topic=topic, partition=partition, log_start_offset=log_start,
                        high_watermark=high_watermark)
                st.at(log_start if self.auto_offset_reset == "earliest" else high_watermark)
                st.epoch += 1
                self._purge(tp)
            elif code == CorruptRangeError.code and len(row) > 6 and isinstance(row[6], dict):
                self._corrupt(tp, st, result, offset, data, row[6])
            elif code:
                raise EXCEPTIONS.get(code, MillpondError)(
                    f"fetch of {topic}/{partition} at offset {offset} failed", topic=topic, partition=partition)
            elif data:
                records = decode_records(data, topic, partition, offset)
                if records:
                    st.fetch_offset = records[-1].offset + 1
                    result.append((tp, st.epoch, records))
        if result:
            self._results.append(result)
            self._data.set()

    def _corrupt(self, tp: TopicPartition, st: _Part, result: list, offset: int, data: Any,
                 details: dict[str, Any]) -> None:
        """A CORRUPT_RANGE answer: the intact records before the damage go out as usual; then skip the range
        (``skip_corrupt``) or hold its error until those records are handed out."""
        first, last, nxt = int(details["first_offset"]), int(details["last_offset"]), int(details["next_offset"])
        if data:
            records = decode_records(data, tp[0], tp[1], offset)
            if records:
                result.append((tp, st.epoch, records))
        st.fetch_offset = max(first, offset)
        if self.skip_corrupt:
            self.skipped.append((tp[0], tp[1], first, last))
            _log.warning("%s/%s: skipped damaged offsets %d-%d (%s)", tp[0], tp[1], first, last,
                         details.get("message", "CORRUPT_RANGE"))
            if st.skip_to is None:
                self._skips += 1
            st.fetch_offset = st.skip_to = nxt
            self._data.set()  # a pull moves the position past it once the records before it are out
            return
        st.corrupt = CorruptRangeError(
            f"{details.get('message', f'{tp[0]}/{tp[1]}: offsets {first}-{last} are damaged')}; seek({tp[0]!r}, "
            f"{tp[1]}, {nxt}) to continue past them, or consume with skip_corrupt=True",
            topic=tp[0], partition=tp[1], first_offset=first, last_offset=last, next_offset=nxt)
        self._data.set()

    async def _resolve(self, tps: list[TopicPartition]) -> None:
        """Turn pending reset specs into offsets with list_offsets, concurrently."""
        errors: list[BaseException] = []

        async def one(tp: TopicPartition) -> None:
            try:
                await resolve(tp)
            except MillpondError as exc:  # re-raised below, unwrapped from the task group's ExceptionGroup
                errors.append(exc)

        async def resolve(tp: TopicPartition) -> None:
            st = self._parts.get(tp)
            if st is None or st.reset is None:
                return
            spec, epoch = st.reset, st.epoch
            if spec == "error":
                where = f"consumer group {self.group!r} has no committed offset for" if self.group else "no position for"
                raise OffsetOutOfRangeError(f"{where} {tp[0]}/{tp[1]} and auto_offset_reset='error'; seek() it"
                                            + (" or reset the group's offsets" if self.group else ""),
                                            topic=tp[0], partition=tp[1])
            offset, _ = await self._client.list_offsets(tp[0], tp[1], spec)
            if offset < 0:  # no record at or after that timestamp: start at the end
                offset, _ = await self._client.list_offsets(tp[0], tp[1], "latest")
            if self._parts.get(tp) is st and st.epoch == epoch and st.reset == spec:
                st.at(offset)

        async with anyio.create_task_group() as tg:
            for tp in tps:
                tg.start_soon(one, tp)
        if errors:
            raise errors[0]
