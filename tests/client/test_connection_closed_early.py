# A connection closed before its own tasks first ran (its handshake failed: a broker killed while it was being
# reached, a reset at once) or while they run: its reader, writer and busy poll end quietly. Under Trio the reader
# waits on the raw socket, whose fd is -1 once closed: waiting on it raised ValueError, which took the client's
# task group down (a `millpond consume --group` whose broker was killed ended in a traceback; a producer's watch
# of its broker died with it). Also a bare connection's waiting: an answer whose caller left before taking it.
from __future__ import annotations

import anyio
import pytest

from millpond.client._connection import Connection
from millpond.client._protocol import ClientProtocol


async def _connected(busy_poll_s: float) -> tuple[Connection, anyio.abc.SocketListener]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    stream = await anyio.connect_tcp("127.0.0.1", port)
    return Connection(stream, ClientProtocol("test"), f"127.0.0.1:{port}", busy_poll_s), listener


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@pytest.mark.parametrize("busy_poll_s", [0.0, 0.001])
def test_tasks_of_a_connection_closed_before_they_ran_end_quietly(backend, busy_poll_s):
    async def main() -> str:
        conn, listener = await _connected(busy_poll_s)
        try:
            await conn.aclose("handshake failed")
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:  # as Connection.open starts them, after the close
                    tg.start_soon(conn._reader)
                    tg.start_soon(conn._writer)
                    if conn._poll_wakeup is not None:
                        tg.start_soon(conn._busy_poll)
            return conn.close_reason
        finally:
            await listener.aclose()

    assert anyio.run(main, backend=backend) == "handshake failed"


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_a_reader_whose_connection_another_task_closes_ends_quietly(backend):
    async def main() -> str:
        conn, listener = await _connected(0.0)
        try:
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(conn._reader)
                    tg.start_soon(conn._writer)
                    await anyio.wait_all_tasks_blocked()  # the reader waits on the socket
                    await conn.aclose("closed by the client")
            return conn.close_reason
        finally:
            await listener.aclose()

    assert anyio.run(main, backend=backend) == "closed by the client"


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_an_answer_whose_caller_left_before_taking_it_goes_to_on_late(backend):
    # the caller's timeout and its answer meet: cancelled, then answered, before its task runs again (asyncio does
    # that); the answer must reach on_late (a receive releases what it took), not be dropped with the caller
    from millpond.client._protocol import Response

    async def main() -> tuple[list, list]:
        conn = Connection(None, ClientProtocol("test"), "nowhere")
        slot = conn._queue(7, [], wake=False)
        scope = anyio.CancelScope()
        late: list = []
        outcome: list = []

        async def caller() -> None:
            with scope:
                outcome.append(await conn._wait(7, slot, 10.0, late.append))
            outcome.append("cancelled" if scope.cancel_called else "returned")

        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            answer = Response(7, 0, {"messages": ["m"]})
            conn._slots.pop(7)  # as the reader hands an answer over
            slot.response = answer
            slot.event.set()
        return [r.body for r in late], outcome

    assert anyio.run(main, backend=backend) == ([{"messages": ["m"]}], ["cancelled"])
