# The daemon's garbage-collection schedule (broker/server/collector.py): when a full pass is due, with literal counts
# and times; and, run under Trio with a virtual clock, that young passes freeze their survivors, that cyclic
# garbage among frozen objects waits for the next full pass and is reclaimed by it, and that stopping the collector
# gives CPython its own schedule back.
from __future__ import annotations

import gc
import weakref

import trio

from millpond.broker.server.collector import FullPassSchedule, run_collector


def test_a_full_pass_is_due_when_the_frozen_objects_doubled_or_the_interval_passed():
    s = FullPassSchedule(150_000, 0.0, growth=2.0, floor=200_000, interval_s=600.0)
    assert not s.due(299_999, 10.0)  # less than twice what the start left
    assert s.due(300_000, 10.0)
    assert s.due(100, 600.0)  # the interval, whatever the count
    s.done(120_000, 20.0)
    assert (s.after_last, s.last_at, s.passes) == (120_000, 20.0, 1)
    assert not s.due(239_999, 30.0) and s.due(240_000, 30.0)
    assert not s.due(1000, 619.9) and s.due(1000, 620.0)  # the interval counts from the last pass
    small = FullPassSchedule(10, 0.0, growth=2.0, floor=200_000, interval_s=600.0)
    assert not small.due(199_999, 1.0) and small.due(200_000, 1.0)  # below the floor growth alone does not count


class Node:
    def __init__(self) -> None:
        self.other: object = self  # a reference cycle: only the collector can free it


async def test_cyclic_garbage_among_frozen_objects_waits_for_the_next_full_pass(autojump_clock):
    schedule = FullPassSchedule(gc.get_freeze_count(), trio.current_time(), interval_s=60.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_collector(check_interval_s=1.0, schedule=schedule))
        await trio.sleep(0.5)
        node = Node()
        gone = weakref.ref(node)
        gc.collect(1)  # a young pass: node survives it (it is referenced) and is frozen
        assert gc.get_freeze_count() > 0
        del node
        gc.collect(1)  # young passes no longer look at it: the cycle stays
        assert gone() is not None
        await trio.sleep(30.0)
        assert gone() is not None and schedule.passes == 0
        await trio.sleep(31.0)  # the interval has passed: a full pass, over the frozen objects too
        assert gone() is None and schedule.passes == 1
        nursery.cancel_scope.cancel()
    assert gc.get_freeze_count() == 0  # stopped: nothing frozen, CPython's own schedule again
    node = Node()
    gone = weakref.ref(node)
    gc.collect(1)
    del node
    gc.collect()
    assert gone() is None


async def test_a_full_pass_runs_once_the_young_passes_froze_enough_survivors(autojump_clock):
    schedule = FullPassSchedule(gc.get_freeze_count(), trio.current_time(), growth=2.0, floor=50_000,
                                interval_s=1e9)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_collector(check_interval_s=1.0, schedule=schedule))
        await trio.sleep(1.5)
        assert schedule.passes == 0
        live = [Node() for _ in range(60_000)]
        gc.collect(1)  # they survive a young pass: counted and frozen
        await trio.sleep(1.0)
        assert schedule.passes == 1 and schedule.after_last >= len(live)  # what is live is still there
        await trio.sleep(5.0)
        assert schedule.passes == 1  # nothing new survived: no other pass
        nursery.cancel_scope.cancel()
    assert gc.get_freeze_count() == 0
