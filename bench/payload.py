# Record values for a run: random bytes of the asked size, or the lines of a payload file (a real log or event file
# instead of random bytes). Must not know brokers or timing.
from __future__ import annotations

import os

POOL = 256  # distinct random values cycled through: varied content without holding N records in memory
STAMP_BYTES = 16  # e2e values begin with a send timestamp and a sequence number (bench.targets.e2e.STAMP)


class PayloadError(ValueError):
    pass


def values(record_bytes: int, payload_file: str | None = None, *, stamped: bool = False) -> tuple[bytes, ...]:
    """The values a run cycles through.

    Random: ``POOL`` values of ``record_bytes`` bytes each (at least 16 for an e2e run, whose first 16 bytes the
    producer overwrites with its stamp). File: one value per line, the trailing newline removed; for an e2e run
    each line gets 16 bytes of stamp in front of it.
    """
    if payload_file:
        with open(payload_file, "rb") as f:
            lines = [line[:-1] if line.endswith(b"\n") else line for line in f]
        if not lines:
            raise PayloadError(f"payload file {payload_file} has no lines")
        if stamped:
            return tuple(bytes(STAMP_BYTES) + line for line in lines)
        return tuple(lines)
    if record_bytes < (STAMP_BYTES if stamped else 0):
        raise PayloadError(f"an e2e record needs at least {STAMP_BYTES} bytes (timestamp + sequence number)")
    return tuple(os.urandom(record_bytes) for _ in range(POOL))


def mean_bytes(vals: tuple[bytes, ...]) -> float:
    return sum(map(len, vals)) / len(vals)


def cycled_bytes(vals: tuple[bytes, ...], n: int) -> int:
    """Bytes in the first ``n`` values of ``vals`` cycled (what a run of ``n`` records sends)."""
    q, r = divmod(n, len(vals))
    return q * sum(map(len, vals)) + sum(map(len, vals[:r]))
