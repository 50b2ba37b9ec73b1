# The loop's own primitives, looked up once per client object: Trio's Event and clock under Trio, anyio's under asyncio;
# either way they behave as anyio's, and the clock is the one cancel scopes use (virtual under a Trio MockClock).
from __future__ import annotations

import asyncio
import math

import anyio
import trio
import trio.testing

from millpond.client._native import native, running_loop


def test_under_trio_they_are_trios_own_and_follow_a_mock_clock():
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main():
        event, now, _, _ = native()
        assert event is trio.Event and now is trio.current_time and running_loop() == "trio"
        start = now()
        ev = event()
        with trio.move_on_after(2.5):
            await ev.wait()  # never set: the scope's deadline, on the same clock, ends the wait
        assert not ev.is_set() and now() - start == 2.5
        ev.set()
        await ev.wait()

    trio.run(main, clock=clock)


def test_under_asyncio_they_are_anyios():
    async def main():
        event, now, _, _ = native()
        assert event is anyio.Event and now is anyio.current_time and running_loop() == "asyncio"
        ev = event()
        assert abs(now() - asyncio.get_running_loop().time()) < 1.0
        ev.set()
        await ev.wait()
        assert ev.is_set()

    asyncio.run(main())


def test_scopes_are_trios_under_trio_and_take_a_negative_timeout_as_zero():
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main():
        _, _, move_on_after, cancel_scope = native()
        assert cancel_scope is trio.CancelScope
        start = trio.current_time()
        with move_on_after(-1.0) as scope:  # trio itself refuses a negative timeout; anyio's takes it as 0
            await trio.sleep(1)
        assert scope.cancelled_caught and trio.current_time() == start
        with move_on_after(math.inf) as scope:
            await trio.sleep(5)
        assert not scope.cancelled_caught and trio.current_time() == start + 5

    trio.run(main, clock=clock)


def test_scopes_are_anyios_under_asyncio():
    async def main():
        _, _, move_on_after, cancel_scope = native()
        assert move_on_after is anyio.move_on_after and cancel_scope is anyio.CancelScope
        with move_on_after(0.01) as scope:
            await asyncio.sleep(1)
        assert scope.cancelled_caught

    asyncio.run(main())


def test_outside_any_loop_they_are_anyios_which_bind_to_the_loop_that_first_uses_them():
    # The blocking client makes some of its objects in the caller's thread (a push subscription's events).
    event, now, _, _ = native()
    _, _, move_on_after, cancel_scope = native()
    assert (event, now, move_on_after, cancel_scope) == (anyio.Event, anyio.current_time, anyio.move_on_after,
                                                          anyio.CancelScope)
    assert running_loop() is None
    ev = event()

    async def main():
        ev.set()
        await ev.wait()
        return ev.is_set()

    assert trio.run(main)
