# Gathered queue calls (client/_gather.py): the sends, receives, deletes and visibility changes that tasks of one
# client make in the same turn of the event loop leave as one batch request, each caller still getting its own
# answer or error. The gatherer alone with a fake send, then the Queue methods against the in-process broker,
# counting the requests the broker served.
from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import trio

from millpond.broker.wire.errors import MillpondError
from millpond.client import SendResult
from millpond.client._gather import Batch, Gathering
from millpond.client.errors import InvalidParameterValueError, ReceiptHandleInvalidError, UnknownQueueError


def _greedy(order: list[tuple[int, int]], entries_max: int, size_max: int) -> list[list[int]]:
    """The batches calls made in ``order`` ((entry, size) pairs) must form: a new one when the next would pass a
    bound."""
    out: list[list[int]] = []
    size = 0
    for entry, n in order:
        if not out or len(out[-1]) >= entries_max or size + n > size_max:
            out.append([])
            size = 0
        out[-1].append(entry)
        size += n
    return out


async def test_calls_of_one_turn_share_a_batch_bounded_by_entries_and_size():
    sent: list[list[Any]] = []
    order: list[tuple[int, int]] = []

    async def send(batch: Batch[Any]) -> list[Any]:
        sent.append(list(batch.entries))
        return [f"r{e}" for e in batch.entries]

    results: dict[int, Any] = {}

    async def call(g: Gathering, i: int, size: int) -> None:
        order.append((i, size))  # the order the scheduler ran the callers in
        results[i] = await g.submit("k", send, i, count_max=4, size=size, size_max=10)

    async with trio.open_nursery() as nursery:
        g = Gathering(nursery)
        for i in range(7):
            nursery.start_soon(call, g, i, 1)
    assert sorted(sent) == sorted(_greedy(order, 4, 10)) and sorted(map(len, sent)) == [3, 4]
    assert results == {i: f"r{i}" for i in range(7)}
    assert g._open == {}  # nothing held once the batches left

    sent.clear()
    order.clear()
    async with trio.open_nursery() as nursery:
        g = Gathering(nursery)
        for i, size in enumerate((6, 3, 2, 9)):
            nursery.start_soon(call, g, i, size)
    assert sorted(sent) == sorted(_greedy(order, 4, 10))  # at most 10 units of size each
    assert sorted(e for b in sent for e in b) == [0, 1, 2, 3] and len(sent) == 3


async def test_an_entry_error_reaches_its_caller_alone_and_a_request_error_every_caller():
    async def send(batch: Batch[int]) -> list[Any]:
        if 99 in batch.entries:
            raise UnknownQueueError("the queue 'gone' does not exist")
        return [InvalidParameterValueError(f"entry {e} refused") if e % 2 else e for e in batch.entries]

    outcomes: dict[int, Any] = {}

    async def call(g: Gathering, i: int) -> None:
        try:
            outcomes[i] = await g.submit(("k", i // 10), send, i % 10 if i < 90 else 99, count_max=10)
        except MillpondError as exc:
            outcomes[i] = exc

    async with trio.open_nursery() as nursery:
        g = Gathering(nursery)
        for i in (0, 1, 2, 3, 90, 91):
            nursery.start_soon(call, g, i)
    assert (outcomes[0], outcomes[2]) == (0, 2)
    assert [type(outcomes[i]).__name__ for i in (1, 3)] == ["InvalidParameterValueError"] * 2
    assert outcomes[1].message == "entry 1 refused" and outcomes[3].message == "entry 3 refused"
    assert type(outcomes[90]) is UnknownQueueError and type(outcomes[91]) is UnknownQueueError
    assert outcomes[90] is not outcomes[91]  # each caller its own copy, with its own traceback
    assert outcomes[90].message == outcomes[91].message == "the queue 'gone' does not exist"


async def test_a_caller_cancelled_while_it_waits_is_marked_gone_and_the_others_get_their_answers():
    release = trio.Event()
    seen: list[set[str]] = []

    async def send(batch: Batch[str]) -> list[Any]:
        await release.wait()
        seen.append({batch.entries[i] for i in batch.gone})
        return [e.upper() for e in batch.entries]

    got: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        g = Gathering(nursery)

        async def call(e: str, scope: trio.CancelScope) -> None:
            with scope:
                got[e] = await g.submit("k", send, e, count_max=10)

        scopes = {e: trio.CancelScope() for e in "abc"}
        for e in "abc":
            nursery.start_soon(call, e, scopes[e])
        await trio.testing.wait_all_tasks_blocked()
        scopes["b"].cancel()
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert got == {"a": "A", "c": "C"}
    assert seen == [{"b"}]  # the request still went, knowing b's caller had left


async def test_concurrent_sends_deletes_and_receives_leave_as_batch_requests(broker, client):
    await client.create_queue("gathered")
    q = client.queue("gathered")
    before = broker.loop.requests
    results: dict[int, Any] = {}
    batches: dict[int, list[Any]] = {}

    async def send(i: int) -> None:
        results[i] = await q.send(b"m%d" % i, attributes={"i": i})

    async def send_batch(k: int) -> None:
        batches[k] = await q.send_batch([b"b%d-%d" % (k, j) for j in range(10)])

    async with trio.open_nursery() as nursery:
        for i in range(25):
            nursery.start_soon(send, i)
        for k in range(3):
            nursery.start_soon(send_batch, k)
    assert broker.loop.requests - before == 1  # 55 messages in one request
    assert sorted(len(b) for b in batches.values()) == [10, 10, 10]
    assert all(type(r) is SendResult for b in batches.values() for r in b)
    assert len({r.message_id for b in batches.values() for r in b} | {r.message_id for r in results.values()}) == 55
    await q.purge()

    # a broker that announces SQS's 10 entries a batch (or none): requests of 10 at most
    limits = client._conn.protocol.limits
    client._conn.protocol.limits = dataclasses.replace(limits, queue_batch_entries_max=10)
    before = broker.loop.requests
    async with trio.open_nursery() as nursery:
        for i in range(25):
            nursery.start_soon(send, i)
    assert broker.loop.requests - before == 3  # 10 + 10 + 5
    client._conn.protocol.limits = limits

    before = broker.loop.requests
    got: dict[int, list[Any]] = {}

    async def receive(i: int) -> None:
        got[i] = await q.receive(1, wait_s=0.0)

    async with trio.open_nursery() as nursery:
        for i in range(25):
            nursery.start_soon(receive, i)
    assert broker.loop.requests - before == 1  # one receive for the 25 callers' messages
    assert sorted(len(v) for v in got.values()) == [1] * 25
    messages = [v[0] for v in got.values()]
    assert sorted(m.body for m in messages) == sorted(b"m%d" % i for i in range(25))
    assert all(m.attributes == {"i": int(m.body[1:])} and m.receive_count == 1 for m in messages)

    before = broker.loop.requests
    async with trio.open_nursery() as nursery:
        for m in messages[:12]:
            nursery.start_soon(q.change_visibility, m, 0.0)
        for m in messages[12:]:
            nursery.start_soon(q.delete, m)
    assert broker.loop.requests - before == 2  # the 12 visibility changes, the 13 deletes
    info = await q.attributes()
    assert (info.messages_visible, info.messages_in_flight) == (12, 0)


async def test_a_gathered_callers_error_is_its_own_and_the_others_succeed(client):
    await client.create_queue("mixed")
    q = client.queue("mixed")
    outcome: dict[str, Any] = {}

    async def send(name: str, **options: Any) -> None:
        try:
            outcome[name] = await q.send(b"x", **options)
        except (MillpondError, OverflowError) as exc:
            outcome[name] = exc

    async def delete(name: str, handle: str) -> None:
        try:
            outcome[name] = await q.delete(handle)
        except MillpondError as exc:
            outcome[name] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, "good")
        nursery.start_soon(lambda: send("bad", attributes={"AWS.reserved": "x"}))
        nursery.start_soon(lambda: send("late", delay_s=5.0))
    assert outcome["good"].message_id and outcome["late"].message_id
    assert type(outcome["bad"]) is InvalidParameterValueError and "AWS." in outcome["bad"].message
    # an entry of a shape the broker refuses the whole request for goes alone: the others are not refused with it
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, "good again")
        nursery.start_soon(lambda: send("shapeless", attributes={"a": [1, 2]}, group_id=7))
    assert outcome["good again"].message_id
    assert isinstance(outcome["shapeless"], MillpondError) and "attributes" in outcome["shapeless"].message
    # an integer the protocol cannot carry fails its own call in the client, not the request it would have shared
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, "good once more")
        nursery.start_soon(lambda: send("too big", attributes={"n": 2**64}))
        nursery.start_soon(lambda: send("too small", attributes={"n": -2**64}))
    assert outcome["good once more"].message_id
    assert type(outcome["too big"]) is OverflowError and type(outcome["too small"]) is OverflowError
    [m] = await q.receive(1, wait_s=0.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(delete, "kept", m.receipt_handle)
        nursery.start_soon(delete, "garbage", "garbage")
    assert outcome["kept"] is None
    assert type(outcome["garbage"]) is ReceiptHandleInvalidError and "'garbage'" in outcome["garbage"].message
    await client.delete_queue("mixed")
    outcome.clear()
    async with trio.open_nursery() as nursery:
        for name in ("a", "b"):
            nursery.start_soon(send, name)
    # an error of the whole request: every caller gets it
    assert [type(outcome[n]) for n in ("a", "b")] == [UnknownQueueError, UnknownQueueError]


async def test_what_a_gathered_receive_took_for_a_caller_that_left_is_receivable_again_at_once(client):
    await client.create_queue("left", visibility_timeout_s=30.0)
    q = client.queue("left")
    gone_caller = trio.CancelScope()
    kept: list[Any] = []

    async def leaves() -> None:
        with gone_caller:
            await q.receive(1, wait_s=5.0)

    async def keeps() -> None:
        kept.extend(await q.receive(1, wait_s=5.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(leaves)
        nursery.start_soon(keeps)
        await trio.testing.wait_all_tasks_blocked()  # one long poll for both, held by the broker
        gone_caller.cancel()
        await q.send_batch([b"three", b"four"])  # the poll's answer takes both
    assert len(kept) == 1
    with trio.fail_after(5.0):
        [back] = await q.receive(1, wait_s=5.0)  # made receivable again at once, not after 30 s
    assert {back.body, kept[0].body} == {b"three", b"four"} and back.receive_count == 2


async def test_a_fifo_queues_receives_are_not_gathered_so_a_group_never_splits_between_callers(broker, client):
    await client.create_queue("orders.fifo", content_based_deduplication=True)
    q = client.queue("orders.fifo")
    for body in (b"g1-m1", b"g1-m2"):
        await q.send(body, group_id="g1")
    got: list[list[Any]] = []

    async def receive() -> None:
        got.append(await q.receive(1, wait_s=0.0))

    before = broker.loop.requests
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        nursery.start_soon(receive)
    assert broker.loop.requests - before == 2
    # the group has a message in flight: the other receive gets nothing, as SQS
    assert sorted([m.body for m in g] for g in got) == [[], [b"g1-m1"]]


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_a_result_its_caller_left_before_taking_goes_to_lost(backend):
    # a caller cancelled after its batch was answered but before it resumed (asyncio does that when a timeout
    # and the answer meet): its result is handed to ``lost`` (a receive releases the messages), not dropped
    import anyio

    async def main() -> tuple[list[Any], list[str]]:
        lost: list[Any] = []
        outcomes: list[str] = []
        async with anyio.create_task_group() as tg:
            g = Gathering(tg)
            scope = anyio.CancelScope()

            async def send(batch: Batch[str]) -> list[Any]:
                scope.cancel()  # the caller is cancelled while this answer is on its way back to it
                return [f"taken by {e}" for e in batch.entries]

            async def caller() -> None:
                with scope:
                    outcomes.append(await g.submit("k", send, "one", count_max=10, lost=lost.append))
                outcomes.append("cancelled" if scope.cancel_called else "returned")

            tg.start_soon(caller)
        return lost, outcomes

    assert anyio.run(main, backend=backend) == (["taken by one"], ["cancelled"])
