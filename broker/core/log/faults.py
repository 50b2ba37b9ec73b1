# Fault points for crash tests (tests/daemon/test_crash_harness.py, bench/crash.py): MILLPOND_CRASH_AT="POINT:N",
# read once at import, makes the broker kill itself with SIGKILL the Nth time it passes POINT. Unset (always, outside
# crash tests) every hook is one module attribute test. Owns only that; knows no file format.
from __future__ import annotations

import os

# after a batch is written to its segment, before any fsync | after a sync plan's fsyncs, before the answers |
# after a roll made the new segment's file, before the old one is synced and indexed | after a closed segment's
# .index is written, before its .timeindex | a producer state snapshot's tmp file written, not yet renamed
POINTS = ("append", "fsync", "roll", "index", "snapshot")


def _parse(spec: str) -> tuple[str, int]:
    point, _, count = spec.partition(":")
    if point not in POINTS or not count.isdigit() or int(count) < 1:
        raise ValueError(f"MILLPOND_CRASH_AT must be POINT:N with POINT one of {', '.join(POINTS)} and N >= 1, "
                         f"got {spec!r}")
    return point, int(count)


_SPEC = os.environ.get("MILLPOND_CRASH_AT", "")
armed = bool(_SPEC)
_point, _left = _parse(_SPEC) if armed else ("", 0)


def hit(point: str) -> None:
    """Count a pass through ``point``; at the armed point's Nth pass the process ends at once (SIGKILL)."""
    global _left
    if point == _point:
        _left -= 1
        if _left <= 0:
            os.kill(os.getpid(), 9)  # SIGKILL: no handler, no flush, no clean-up, as a crash or power loss


__all__ = ["POINTS", "armed", "hit"]
