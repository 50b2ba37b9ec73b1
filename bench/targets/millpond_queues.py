# The millpond side of `millpond bench queues`: the broker started as for the other workloads (bench.targets.millpond,
# a subprocess with a temporary data directory), driven through the public async client under Trio: sends and
# receive+delete cycles from concurrent tasks on one connection (up to ``in_flight`` calls at once, which the client
# gathers into batch requests as it does for any program: docs/queues.md "Gathered calls"), push
# delivery through `Queue.subscribe(prefetch=N)` with each message acked as it arrives (acks not awaited one by one,
# the window bounds them), and the long-poll wake-up's sender and receiver. Must not know the broker's internals or
# how figures are summarised.
from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import trio

from millpond.bench import stats
from millpond.bench.targets import Tick
from millpond.bench.targets import millpond as topic_target
from millpond.bench.targets.queue_kit import Bodies, Claims, QueueOutcome, QueuePlan, Seen, Ticker, wake_body, \
    wake_latency_us

RECEIVE_WAIT_S = 1.0  # a receiver with nothing to take long-polls this long before it asks again
WAKE_WAIT_S = 20.0  # the wake-up receiver's long poll (SQS's longest)


class MillpondQueues:
    name = "millpond"

    def missing(self) -> str | None:
        return None

    def describe(self) -> dict[str, str]:
        return {"server": "millpond (this tree), a subprocess",
                "client": "millpond async client under Trio (calls made together leave as batch requests: "
                          "docs/queues.md \"Gathered calls\")",
                "durability": "its fsync mode, as the row says"}

    def server(self, fsync: str, address: str | None) -> Any:
        return topic_target.TARGET.server(fsync, address)

    def create(self, address: str, queue: str) -> None:
        trio.run(_admin, address, lambda c: c.create_queue(queue))

    def depth(self, address: str, queue: str) -> int:
        """Messages the queue holds: visible, in flight and delayed."""
        info = trio.run(_admin, address, lambda c: c.queue_attributes(queue))
        return info.messages_visible + info.messages_in_flight + info.messages_delayed

    def send(self, address: str, queue: str, plan: QueuePlan, tick: Tick) -> QueueOutcome:
        return trio.run(_send, address, queue, plan, tick)

    def receive_delete(self, address: str, queue: str, plan: QueuePlan, tick: Tick) -> QueueOutcome:
        return trio.run(_receive_delete, address, queue, plan, tick)

    def push(self, address: str, queue: str, plan: QueuePlan, tick: Tick) -> QueueOutcome:
        return trio.run(_push, address, queue, plan, tick)

    def wake_receive(self, address: str, queue: str, ready: Callable[[], None],
                     report: Callable[[float], None]) -> str:
        return trio.run(wake_receive, address, queue, ready, report, "bench-queue-wake-receiver")

    def wake_send(self, address: str, queue: str, rounds: Iterator[int], body_bytes: int, gap_s: float,
                  received: Callable[[], None]) -> str:
        return trio.run(_wake_send, address, queue, rounds, body_bytes, gap_s, received)


QUEUE_TARGET = MillpondQueues()


async def _admin(address: str, call: Callable[[Any], Any]) -> Any:
    from millpond.client import connect

    async with connect(address, client_id="bench-admin") as c:
        return await call(c)


async def _send(address: str, queue: str, plan: QueuePlan, tick: Tick) -> QueueOutcome:
    """``in_flight`` tasks, each sending ``batch`` messages per request (``send`` for 1, ``send_batch`` above),
    every request timed from the call to its answer."""
    from millpond.client import connect

    bodies, claims, ticker = Bodies(plan.body_bytes), Claims(plan), Ticker(tick)
    hist = stats.new_histogram()
    perf_ns = time.perf_counter_ns
    state = {"sent": 0, "last": 0.0, "error": ""}

    async def sender(q: Any) -> None:
        body = bodies.body
        while not state["error"]:
            seqs = claims.claim(plan.batch)
            if not seqs:
                return
            t0 = perf_ns()
            try:
                if plan.batch == 1:
                    await q.send(body(seqs[0]))
                else:
                    failed = [r for r in await q.send_batch([body(s) for s in seqs]) if isinstance(r, Exception)]
                    if failed:
                        raise failed[0]
            except Exception as exc:  # the workload aborts on any failure
                state["error"] = state["error"] or repr(exc)
                return
            stats.record_us(hist, (perf_ns() - t0) / 1000)
            state["sent"] += len(seqs)
            state["last"] = time.perf_counter()
            ticker(len(seqs))

    async with connect(address, client_id="bench-queue-send") as c:
        q = c.queue(queue)
        async with trio.open_nursery() as n:
            for _ in range(plan.in_flight):
                n.start_soon(sender, q)
    ticker.flush()
    return QueueOutcome(state["sent"], claims.first, state["last"] or time.perf_counter(), stats.encode(hist),
                        state["error"])


async def _receive_delete(address: str, queue: str, plan: QueuePlan, tick: Tick) -> QueueOutcome:
    """``in_flight`` tasks, each receiving up to ``batch`` messages, then deleting them (``delete`` for 1,
    ``delete_batch`` above), until ``count`` are deleted; each cycle timed from the receive call to the delete's
    answer. A receiver finding nothing long-polls (the queue was filled before, so only near the end)."""
    from millpond.client import connect

    expected = plan.count or 0
    seen, ticker = Seen(expected), Ticker(tick)
    hist = stats.new_histogram()
    perf_ns = time.perf_counter_ns
    state = {"deleted": 0, "last": 0.0, "error": ""}

    async def worker(q: Any, done: trio.CancelScope) -> None:
        while True:
            t0 = perf_ns()
            try:
                got = await q.receive(plan.batch, wait_s=RECEIVE_WAIT_S)
                for m in got:
                    problem = seen.add(m.body)
                    if problem:
                        raise RuntimeError(problem)
                if not got:
                    continue
                if plan.batch == 1:
                    await q.delete(got[0])
                else:
                    failed = [e for e in await q.delete_batch(got) if e is not None]
                    if failed:
                        raise failed[0]
            except Exception as exc:  # the workload aborts on any failure
                state["error"] = state["error"] or repr(exc)
                done.cancel()
                return
            stats.record_us(hist, (perf_ns() - t0) / 1000)
            state["deleted"] += len(got)
            ticker(len(got))
            if state["deleted"] >= expected:
                state["last"] = time.perf_counter()
                done.cancel()  # the other receivers are parked in long polls: nothing more will come
                return

    async with connect(address, client_id="bench-queue-receive") as c:
        q = c.queue(queue)
        first = time.perf_counter()
        with trio.move_on_after(plan.timeout_s) as scope:
            async with trio.open_nursery() as n:
                for _ in range(plan.in_flight):
                    n.start_soon(worker, q, n.cancel_scope)
        if scope.cancelled_caught and not state["error"]:
            state["error"] = f"timed out after {plan.timeout_s:g} s with {state['deleted']} of {expected} messages"
    ticker.flush()
    return QueueOutcome(state["deleted"], first, state["last"] or time.perf_counter(), stats.encode(hist),
                        state["error"])


async def _push(address: str, queue: str, plan: QueuePlan, tick: Tick) -> QueueOutcome:
    """``Queue.subscribe(prefetch=N)``: each pushed message is acked as it arrives, the acks not awaited one by one
    (the window of N unacked messages bounds them), until ``count`` acks are answered."""
    from millpond.client import connect

    expected = plan.count or 0
    seen, ticker = Seen(expected), Ticker(tick)
    state = {"acked": 0, "last": 0.0, "error": ""}

    async with connect(address, client_id="bench-queue-push") as c:
        q = c.queue(queue)
        first = time.perf_counter()
        with trio.move_on_after(plan.timeout_s) as scope:
            async with q.subscribe(prefetch=plan.prefetch) as sub, trio.open_nursery() as n:

                async def ack(msg: Any) -> None:
                    try:
                        await msg.ack()
                    except Exception as exc:  # the workload aborts on any failure
                        state["error"] = state["error"] or repr(exc)
                        n.cancel_scope.cancel()
                        return
                    state["acked"] += 1
                    ticker(1)
                    if state["acked"] >= expected:
                        state["last"] = time.perf_counter()
                        n.cancel_scope.cancel()

                async for msg in sub:
                    problem = seen.add(msg.body)
                    if problem:
                        state["error"] = problem
                        n.cancel_scope.cancel()
                        break
                    n.start_soon(ack, msg)
        if scope.cancelled_caught and not state["error"]:
            state["error"] = f"timed out after {plan.timeout_s:g} s with {state['acked']} of {expected} messages"
    ticker.flush()
    return QueueOutcome(state["acked"], first, state["last"] or time.perf_counter(), b"", state["error"])


async def wake_receive(address: str, queue: str, ready: Callable[[], None], report: Callable[[float], None],
                       client_id: str) -> str:
    """Long-poll for one message at a time: report the µs since its send (or its record's publish) was called,
    delete it in the background and long-poll again at once, until the message numbered -1 (the sender's last).
    Used for the queues' wake-up and the fan-out's publish-to-queue latency."""
    from millpond.client import connect

    async with connect(address, client_id=client_id) as c:
        q = c.queue(queue)
        await q.attributes()  # connected, and the queue is there: what is measured next is the wake-up
        ready()
        async with trio.open_nursery() as n:
            while True:
                got = await q.receive(1, wait_s=WAKE_WAIT_S)
                if not got:
                    return f"no message within the {WAKE_WAIT_S:g} s long poll"
                latency_us, seq = wake_latency_us(got[0].body)
                n.start_soon(q.delete, got[0])
                if seq < 0:
                    return ""
                report(latency_us)


async def _wake_send(address: str, queue: str, rounds: Iterator[int], body_bytes: int, gap_s: float,
                     received: Callable[[], None]) -> str:
    """For each round: wait ``gap_s`` (the receiver is parked again), send one stamped message, then block until
    the receiver reports it (``received``; nothing else runs meanwhile, so nothing is skewed); at the end the
    message numbered -1, which stops the receiver."""
    from millpond.client import connect

    async with connect(address, client_id="bench-queue-wake-sender") as c:
        q = c.queue(queue)
        for seq in rounds:
            await trio.sleep(gap_s)
            await q.send(wake_body(seq, body_bytes))
            received()
        await q.send(wake_body(-1, body_bytes))
    return ""
