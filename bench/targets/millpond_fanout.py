# The millpond side of `millpond bench fanout`: a topic of one partition with N queues subscribed to it (raw
# delivery: each queue message is the record value, as a peer's queue holds the published bytes). Records are
# published by the producer of the topic workloads (bench.targets.millpond: pipelined, acknowledged once durable
# under the broker's fsync mode); the row ends when every queue's attributes count every record. The latency
# receiver long-polls one subscribed queue; the sender publishes one record at a time with `publish`. Driven
# through the public async client under Trio. Must not know the broker's internals or how figures are summarised.
from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import trio

from millpond.bench.targets import Tick
from millpond.bench.targets import millpond as topic_target
from millpond.bench.targets.fanout_kit import POLL_S, BoundedPlan, FanoutOutcome
from millpond.bench.targets.millpond_queues import wake_receive
from millpond.bench.targets.queue_kit import wake_body



class MillpondFanout:
    name = "millpond"

    def missing(self) -> str | None:
        return None

    def describe(self) -> dict[str, str]:
        return {"server": "millpond (this tree), a subprocess",
                "client": "millpond async client under Trio: the producer publishes, queue subscriptions with raw "
                          "delivery fan out",
                "durability": "its fsync mode, as the row says"}

    def server(self, fsync: str, address: str | None) -> Any:
        return topic_target.TARGET.server(fsync, address)

    def setup(self, address: str, name: str, n: int) -> dict[str, Any]:
        """Topic ``name`` (one partition) and queues ``name-q0`` .. ``name-q{n-1}``, each subscribed with raw
        delivery from the topic's end."""
        return trio.run(_setup, address, name, n)

    def fan_out(self, address: str, fan: dict[str, Any], plan: BoundedPlan, tick: Tick,
                timeout_s: float) -> FanoutOutcome:
        """Publish ``plan`` to the topic, then look at the queues' depths, one queue at a time, every POLL_S until
        each holds every record acknowledged (or ``timeout_s`` passed)."""
        out = topic_target.TARGET.produce(address, fan["topic"], plan, tick)
        error = out.error or (f"{out.failed} publishes failed" if out.failed else "")
        if error:
            return FanoutOutcome(out.records, out.first_send, out.last_ack, out.last_ack, [], error)
        all_in, held = trio.run(_wait_all_in, address, fan["queues"], out.records, timeout_s)
        error = "" if all_in else f"after {timeout_s:g} s the queues hold {held} of {out.records} records each"
        return FanoutOutcome(out.records, out.first_send, out.last_ack, all_in or time.perf_counter(), held, error)

    def check(self, address: str, fan: dict[str, Any], records: int) -> str:
        """'' when every queue holds exactly ``records`` messages and every subscription counts them delivered,
        none failed; else what is wrong."""
        return trio.run(_check, address, fan, records)

    def latency_receive(self, address: str, fan: dict[str, Any], ready: Callable[[], None],
                        report: Callable[[float], None]) -> str:
        return trio.run(wake_receive, address, fan["queues"][0], ready, report, "bench-fanout-receiver")

    def latency_send(self, address: str, fan: dict[str, Any], rounds: Iterator[int], body_bytes: int, gap_s: float,
                     received: Callable[[], None]) -> str:
        return trio.run(_latency_send, address, fan["topic"], rounds, body_bytes, gap_s, received)


FANOUT_TARGET = MillpondFanout()


async def _setup(address: str, name: str, n: int) -> dict[str, Any]:
    from millpond.client import connect

    async with connect(address, client_id="bench-fanout-admin") as c:
        await c.create_topic(name, 1)
        queues = [f"{name}-q{i}" for i in range(n)]
        subs = []
        for q in queues:
            await c.create_queue(q)
            subs.append((await c.subscribe(name, queue=q, raw=True)).id)
    return {"topic": name, "queues": queues, "subscriptions": subs}


async def _depths(c: Any, queues: list[str]) -> list[int]:
    out = []
    for q in queues:
        info = await c.queue_attributes(q)
        out.append(info.messages_visible + info.messages_in_flight + info.messages_delayed)
    return out


async def _wait_all_in(address: str, queues: list[str], records: int,
                       timeout_s: float) -> tuple[float | None, list[int]]:
    from millpond.client import connect

    async with connect(address, client_id="bench-fanout-poll") as c:
        deadline = time.perf_counter() + timeout_s
        for q in queues:  # one at a time: a queue that holds every record keeps them, so one request per look
            while True:
                info = await c.queue_attributes(q)
                if info.messages_visible + info.messages_in_flight + info.messages_delayed >= records:
                    break
                if time.perf_counter() > deadline:
                    return None, await _depths(c, queues)
                await trio.sleep(POLL_S)
        return time.perf_counter(), await _depths(c, queues)


async def _check(address: str, fan: dict[str, Any], records: int) -> str:
    from millpond.client import connect

    async with connect(address, client_id="bench-fanout-check") as c:
        held = await _depths(c, fan["queues"])
        if held != [records] * len(held):
            return f"the queues hold {held} messages, {records} records were published"
        for sub in fan["subscriptions"]:
            d = await c.describe_subscription(sub)
            if (d.delivered, d.failed, d.lag) != (records, 0, 0):
                return (f"subscription {sub}: {d.delivered} delivered, {d.failed} failed, {d.lag} behind, "
                        f"{records} records were published")
    return ""


async def _latency_send(address: str, topic: str, rounds: Iterator[int], body_bytes: int, gap_s: float,
                        received: Callable[[], None]) -> str:
    """For each round: wait ``gap_s``, publish one stamped record (its acknowledgement awaited), then block until
    the receiver reports it; at the end the record numbered -1, which stops the receiver."""
    from millpond.client import connect

    async with connect(address, client_id="bench-fanout-publisher") as c:
        for seq in rounds:
            await trio.sleep(gap_s)
            await c.publish(topic, wake_body(seq, body_bytes))
            received()
        await c.publish(topic, wake_body(-1, body_bytes))
    return ""
