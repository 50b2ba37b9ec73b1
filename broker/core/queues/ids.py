# Message ids: unique, in the shape SQS gives them (a UUID string), minted without the cost of uuid4() per message.
# Owns the id layout; must not know about queues, storage or clocks.
#
# Layout (a version 8 UUID, RFC 9562's layout for ids of one's own design): 60 random bits drawn once per broker
# start, then a counter of 62 bits from 0. Two ids of one start differ in the counter; ids of different starts
# differ in the random part (a new draw per start, so a restart never repeats the ids of an earlier run: two starts
# share a prefix with probability 2^-60). Ids are unique, not secret and not unguessable: nothing in millpond
# trusts a message id (receipt handles carry the queue's random incarnation).
from __future__ import annotations

import secrets

_VARIANT = 0b10 << 62  # the RFC 9562 variant bits on top of the 62-bit counter
_COUNTER_MAX = (1 << 62) - 1


class MessageIds:
    """``next()``: a new id, ``xxxxxxxx-xxxx-8xxx-yxxx-xxxxxxxxxxxx`` (lowercase hex; ``y`` one of 8, 9, a, b)."""

    __slots__ = ("prefix", "_n")

    def __init__(self, random_bits: int | None = None) -> None:
        r = secrets.randbits(60) if random_bits is None else random_bits & ((1 << 60) - 1)
        a, b = f"{r >> 12:012x}", f"{r & 0xFFF:03x}"
        self.prefix = f"{a[:8]}-{a[8:]}-8{b}-"
        self._n = 0

    def next(self) -> str:
        n = self._n
        if n > _COUNTER_MAX:  # 2^62 ids in one run: start a new random part rather than repeat
            self.__init__()  # type: ignore[misc]
            n = 0
        self._n = n + 1
        c = f"{_VARIANT | n:016x}"
        return f"{self.prefix}{c[:4]}-{c[4:]}"


__all__ = ["MessageIds"]
