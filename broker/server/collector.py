# The daemon's garbage-collection schedule (`millpond serve` only: an embedded broker leaves its host's settings).
# A broker holding a million queue messages spent a fifth of its CPU in CPython's full collections, each a pause of
# about 0.3 s re-scanning every message (`millpond bench fanout`, 10 subscriptions: 11 full passes, 3.5 of 18.4 CPU
# seconds): CPython runs one whenever the long-lived objects grew by a quarter, so a filling queue triggers them over
# and over. Here the young passes run as CPython schedules them, and what survives a pass of generation 1 or 2 is
# frozen (gc.freeze: kept out of later passes; reference counting still frees it). A full pass over everything
# (unfreeze, collect, freeze) runs when the frozen objects have grown fourfold since the last one (and passed a
# million: a pass over 3 million messages takes ~0.4 s here), or after FULL_PASS_INTERVAL_S: cyclic garbage among
# objects that were once frozen (a closed connection's) is reclaimed, and the tracked objects stay within about
# four times what is live. What the broker allocates is nearly all freed by reference counting (the broker avoids
# cycles); the collector is there for the few it makes.
from __future__ import annotations

import gc
import logging
import time
from typing import Any, Callable

import trio

FULL_PASS_INTERVAL_S = 600.0
FULL_PASS_GROWTH = 4.0  # frozen objects, against those left after the last full pass
FULL_PASS_FLOOR = 1_000_000  # frozen objects below which growth alone never asks for a full pass (~130 ms here)
CHECK_INTERVAL_S = 1.0

log = logging.getLogger("millpond.collector")


class FullPassSchedule:
    """When the next full collection is due (pure: counts and monotonic seconds are arguments)."""

    def __init__(self, frozen: int, now: float, *, growth: float = FULL_PASS_GROWTH, floor: int = FULL_PASS_FLOOR,
                 interval_s: float = FULL_PASS_INTERVAL_S) -> None:
        self.growth, self.floor, self.interval_s = growth, floor, interval_s
        self.after_last = frozen  # frozen objects left by the last full pass (or at the start)
        self.last_at = now
        self.passes = 0

    def due(self, frozen: int, now: float) -> bool:
        """True once ``frozen`` objects reach ``growth`` times those the last pass left (and ``floor``), or
        ``interval_s`` seconds after it."""
        return frozen >= max(self.floor, self.growth * self.after_last) or now - self.last_at >= self.interval_s

    def done(self, frozen: int, now: float) -> None:
        """A full pass ended at ``now`` and left ``frozen`` objects."""
        self.after_last, self.last_at = frozen, now
        self.passes += 1


class _FreezeSurvivors:
    """A gc callback: once a pass of generation 1 or 2 has ended, its survivors (all in generation 2 then) are
    counted and frozen. Counting them here costs what they number; gc.get_freeze_count walks every frozen object
    (tens of milliseconds over millions), so it is asked only after a full pass."""

    def __init__(self) -> None:
        self.frozen = 0  # objects frozen since the last full pass (some may have been freed since)
        self.full_pass = False  # run_collector's own pass: it freezes and counts for itself

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] >= 1 and not self.full_pass:
            self.frozen += len(gc.get_objects(2))  # gc.collect is refused in a callback; these two are not
            gc.freeze()


def full_pass() -> int:
    """Collect everything, the frozen objects too, then freeze the survivors; returns how many are frozen."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def run_collector(*, check_interval_s: float = CHECK_INTERVAL_S, schedule: FullPassSchedule | None = None,
                        clock: Callable[[], float] = trio.current_time) -> None:
    """Freeze what survives the young passes and run full passes on ``schedule``, until cancelled; then the
    collector is back to CPython's own schedule (everything unfrozen)."""
    survivors = _FreezeSurvivors()
    gc.callbacks.append(survivors)
    try:
        schedule = schedule or FullPassSchedule(gc.get_freeze_count(), clock())
        while True:
            await trio.sleep(check_interval_s)
            frozen = schedule.after_last + survivors.frozen
            if schedule.due(frozen, clock()):
                started = time.perf_counter()
                survivors.full_pass = True
                try:
                    left = full_pass()
                finally:
                    survivors.full_pass = False
                survivors.frozen = 0
                schedule.done(left, clock())
                log.info("full garbage collection over %d objects: %.0f ms, %d left", frozen,
                         (time.perf_counter() - started) * 1000, schedule.after_last)
    finally:
        gc.callbacks.remove(survivors)
        gc.unfreeze()


__all__ = ["FULL_PASS_INTERVAL_S", "FullPassSchedule", "full_pass", "run_collector"]
