# Idempotent producers, per partition: the last few batches' sequence numbers of each producer id, so a retried
# batch is acknowledged with its original offsets instead of being appended twice, and a batch that skips ahead is
# refused so pipelined batches can never land out of order. Rules as Kafka's ProducerStateManager /
# ProducerAppendInfo.checkSequence. Pure bookkeeping: no files, no clock.
from __future__ import annotations

from collections import OrderedDict, deque

from millpond.broker.wire.errors import InvalidProducerEpochError, OutOfOrderSequenceError

BATCHES_RETAINED = 5  # Kafka's NUM_BATCHES_TO_RETAIN: a producer may have this many batches in flight
PRODUCERS_MAX = 10_000  # per partition; the least recently seen producer id is forgotten first
SEQUENCE_MAX = 2**31 - 1  # int32: sequences wrap to 0 after this, as Kafka's


def next_sequence(seq: int, count: int) -> int:
    """The sequence after a batch of ``count`` records starting at ``seq``, wrapping as Kafka's."""
    return (seq + count) % (SEQUENCE_MAX + 1)


class _Entry:
    __slots__ = ("epoch", "batches", "pending")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        # (first_seq, last_seq, base_offset, last_offset), oldest first
        self.batches: deque[tuple[int, int, int, int]] = deque(maxlen=BATCHES_RETAINED)
        # (first_seq, last_seq) of batches admitted but held by a shaping limit policy, to be appended in order
        self.pending: deque[tuple[int, int]] = deque()


class ProducerStates:
    """Sequence state of every producer id that appended to one partition recently."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: OrderedDict[int, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, producer_id: int, epoch: int, first_seq: int, count: int) -> int | None:
        """Decide on a batch before it is appended. Returns the base offset it was stored at if it is a retry of
        one of the producer's last ``BATCHES_RETAINED`` batches (answer that, append nothing), else None (append).

        Raises ``InvalidProducerEpochError`` (an older epoch: a fenced zombie) or ``OutOfOrderSequenceError``
        (the batch does not continue the producer's sequence: an earlier one is missing). A producer id with no
        state here (new, or forgotten) may start at any sequence, as Kafka's.
        """
        entry = self._entries.get(producer_id)
        if entry is None:
            return None
        if epoch < entry.epoch:
            raise InvalidProducerEpochError(
                f"producer {producer_id} epoch {epoch} is older than {entry.epoch}: fenced",
                producer_id=producer_id, current_epoch=entry.epoch,
            )
        last_seq = next_sequence(first_seq, count - 1)
        if epoch > entry.epoch:
            if first_seq != 0:
                raise OutOfOrderSequenceError(
                    f"producer {producer_id} started epoch {epoch} at sequence {first_seq}, not 0",
                    producer_id=producer_id, expected_sequence=0,
                )
            return None
        for f, l, base, _ in entry.batches:
            if f == first_seq and l == last_seq:
                return base
        if entry.pending:
            if entry.pending[0] == (first_seq, last_seq):
                return None  # a held batch whose turn it is
            if (first_seq, last_seq) in entry.pending:
                raise OutOfOrderSequenceError(
                    f"producer {producer_id}'s batch at sequence {first_seq} is still held by a shaping limit policy",
                    producer_id=producer_id, expected_sequence=first_seq,
                )
            expected = next_sequence(entry.pending[-1][1], 1)
        elif not entry.batches:
            return None
        else:
            expected = next_sequence(entry.batches[-1][1], 1)
        if first_seq != expected:
            raise OutOfOrderSequenceError(
                f"producer {producer_id} sent sequence {first_seq}, expected {expected}: an earlier batch is missing",
                producer_id=producer_id, expected_sequence=expected,
            )
        return None

    def record(self, producer_id: int, epoch: int, first_seq: int, count: int, base_offset: int) -> None:
        """Remember a batch just appended (or found in the log at recovery)."""
        entry = self._entries.get(producer_id)
        if entry is None or epoch > entry.epoch:
            entry = _Entry(epoch)
            self._entries[producer_id] = entry
            if len(self._entries) > PRODUCERS_MAX:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(producer_id)
        last_seq = next_sequence(first_seq, count - 1)
        entry.batches.append((first_seq, last_seq, base_offset, base_offset + count - 1))
        if entry.pending and entry.pending[0] == (first_seq, last_seq):
            entry.pending.popleft()

    def hold(self, producer_id: int, epoch: int, first_seq: int, count: int) -> None:
        """A batch passed ``check`` and is held by a shaping policy: later batches follow on from it, and it must be
        appended before them."""
        entry = self._entries.get(producer_id)
        if entry is None or epoch > entry.epoch:
            entry = self._entries[producer_id] = _Entry(epoch)
        entry.pending.append((first_seq, next_sequence(first_seq, count - 1)))

    def held(self, producer_id: int) -> bool:
        entry = self._entries.get(producer_id)
        return entry is not None and bool(entry.pending)

    def release(self, producer_id: int) -> None:
        """A held batch could not be appended: drop every held batch of the producer (its later ones are then
        refused as out of order and resent, in order, by the producer)."""
        entry = self._entries.get(producer_id)
        if entry is not None:
            entry.pending.clear()

    def to_plain(self) -> list:
        """The recorded batches as plain data for a snapshot (held batches are not: they are not in the log):
        ``[[producer_id, epoch, [first_seq, last_seq, base_offset, last_offset, ...]], ...]``, least recently seen
        producer first."""
        return [[pid, e.epoch, [x for b in e.batches for x in b]] for pid, e in self._entries.items() if e.batches]

    def restore(self, plain: object) -> None:
        """Replace the state with a snapshot's ``to_plain`` data. Raises ``ValueError`` (the state is then empty)
        if it is not that shape."""
        self._entries.clear()
        try:
            if not isinstance(plain, list):
                raise TypeError("not a list")
            for pid, epoch, flat in plain:
                if not (isinstance(flat, list) and len(flat) % 4 == 0 and len(flat) <= 4 * BATCHES_RETAINED
                        and all(type(x) is int for x in (pid, epoch, *flat))):
                    raise TypeError(f"producer {pid!r}")
                entry = self._entries[pid] = _Entry(epoch)
                entry.batches.extend(tuple(flat[i:i + 4]) for i in range(0, len(flat), 4))
        except (TypeError, ValueError) as exc:
            self._entries.clear()
            raise ValueError(f"not a producer state snapshot: {exc}") from None
        while len(self._entries) > PRODUCERS_MAX:
            self._entries.popitem(last=False)

    def forget_below(self, offset: int) -> None:
        """Drop batches below ``offset`` (retention moved the log start), and producers left with none."""
        for pid in [pid for pid, e in self._entries.items() if e.batches and e.batches[-1][3] < offset]:
            del self._entries[pid]
