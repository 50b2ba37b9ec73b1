"""CQRS: commands append events on the write side; a projection keeps a SQLite read model; queries read it.

What it shows: the write side is a command handler for a warehouse's stock. It validates each command against
the state it built from its own events (you cannot reserve more than is available) and appends the resulting
event to the topic ``stock-events``, keyed by SKU; once the append is acknowledged the command has happened. The
read side is separate: a queue subscription on the topic feeds a projection worker (pushed messages,
``subscribe(prefetch=...)``) that applies each event to a SQLite table, once per event id; a query function reads
that table. Between the two there is a delay, eventual consistency, which the example measures per command
(command acknowledged -> read model updated, in real time) and prints as p50/p99; it also counts the queries
made right after an acknowledgement that still saw the old value.

Run it (an embedded broker, in a second or two):

    python examples/cqrs.py
    python examples/cqrs.py --broker 127.0.0.1:7420     # a running `millpond serve`
"""
from __future__ import annotations

import argparse
import json
import random
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import trio

from millpond import connect

from examplekit import broker_address, run_example  # examples/examplekit.py

SKUS = ["kettle", "teapot", "mug", "tray", "strainer"]
COMMANDS = 300
PREFETCH = 50


# -- the write side ---------------------------------------------------------------------------------------------------
class Rejected(Exception):
    pass


class CommandHandler:
    """Validates commands against the write side's state and appends the events they produce."""

    def __init__(self, producer: Any, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.available: dict[str, int] = {}  # the write side's own state, from the events it appended
        self.reserved: dict[str, int] = {}
        self.events = 0

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        sku, n = command["sku"], command["quantity"]
        if n <= 0:
            raise Rejected("quantity must be positive")
        if command["type"] == "AddStock":
            event = {"type": "StockAdded", "sku": sku, "quantity": n}
        elif command["type"] == "Reserve":
            if self.available.get(sku, 0) < n:
                raise Rejected(f"only {self.available.get(sku, 0)} {sku} available, {n} asked")
            event = {"type": "StockReserved", "sku": sku, "quantity": n}
        else:
            raise Rejected(f"unknown command {command['type']!r}")
        self.events += 1
        event["id"] = f"e{self.events}"
        await self.producer.send(self.topic, json.dumps(event).encode(), key=sku.encode())  # acknowledged: it happened
        apply_to_state(self.available, self.reserved, event)
        return event


def apply_to_state(available: dict[str, int], reserved: dict[str, int], event: dict[str, Any]) -> None:
    sku, n = event["sku"], event["quantity"]
    if event["type"] == "StockAdded":
        available[sku] = available.get(sku, 0) + n
    else:
        available[sku] -= n
        reserved[sku] = reserved.get(sku, 0) + n


# -- the read side ----------------------------------------------------------------------------------------------------
def open_read_model() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE stock (sku TEXT PRIMARY KEY, available INTEGER NOT NULL, reserved INTEGER NOT NULL)")
    db.execute("CREATE TABLE applied (event_id TEXT PRIMARY KEY)")  # a redelivered event is applied once
    return db


def project(db: sqlite3.Connection, event: dict[str, Any]) -> bool:
    """Apply one event to the read model in one transaction; False if it was applied before."""
    with db:
        if db.execute("SELECT 1 FROM applied WHERE event_id = ?", (event["id"],)).fetchone():
            return False
        db.execute("INSERT INTO applied VALUES (?)", (event["id"],))
        db.execute("INSERT OR IGNORE INTO stock VALUES (?, 0, 0)", (event["sku"],))
        if event["type"] == "StockAdded":
            db.execute("UPDATE stock SET available = available + ? WHERE sku = ?", (event["quantity"], event["sku"]))
        else:
            db.execute("UPDATE stock SET available = available - ?, reserved = reserved + ? WHERE sku = ?",
                       (event["quantity"], event["quantity"], event["sku"]))
    return True


def query_stock(db: sqlite3.Connection, sku: str) -> tuple[int, int] | None:
    """The query side: (available, reserved) of a SKU, as the read model has it now."""
    row = db.execute("SELECT available, reserved FROM stock WHERE sku = ?", (sku,)).fetchone()
    return None if row is None else (row[0], row[1])


@dataclass
class Result:
    accepted: int = 0
    rejected: int = 0
    projected: int = 0  # events the projection applied
    lags_ms: list[float] = field(default_factory=list)  # per accepted command: acknowledged -> read model updated
    stale_reads: int = 0  # queries right after an acknowledgement that still saw the old value
    ahead: int = 0  # events in the read model before their acknowledgement reached the command handler
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    write_side: dict[str, tuple[int, int]] = field(default_factory=dict)  # sku -> (available, reserved)
    read_model: dict[str, tuple[int, int]] = field(default_factory=dict)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def commands(seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(COMMANDS):
        kind = "AddStock" if rng.random() < 0.3 else "Reserve"
        out.append({"type": kind, "sku": rng.choice(SKUS),
                    "quantity": rng.randint(5, 12) if kind == "AddStock" else rng.randint(1, 6)})
    return out


async def run(address: str | None = None, *, say: Callable[[str], Any] = print) -> Result:
    result = Result()
    db = open_read_model()
    updated: dict[str, float] = {}  # event id -> when the read model had it (perf_counter)
    projected_event = trio.Event()

    async def projection(queue: Any, task_status: Any) -> None:
        async with queue.subscribe(prefetch=PREFETCH) as subscription:
            task_status.started()
            async for message in subscription:
                event = json.loads(message.body)
                if project(db, event):
                    updated[event["id"]] = time.perf_counter()
                    result.projected += 1
                    projected_event.set()
                await message.ack()

    async with broker_address(address, fsync="never") as where, connect(where, client_id="warehouse") as client:
        suffix = "" if address is None else "-" + secrets.token_hex(3)  # a shared broker: fresh names per run
        topic, queue = "stock-events" + suffix, "stock-projection" + suffix
        await client.create_topic(topic, partitions=len(SKUS))
        await client.create_queue(queue)
        await client.subscribe(topic, queue=queue, raw=True)
        say(f"write side: commands -> events on {topic}; read side: {topic} -> queue {queue} -> projection "
            "-> SQLite")
        acknowledged: dict[str, float] = {}
        async with trio.open_nursery() as nursery:
            await nursery.start(projection, client.queue(queue))
            async with client.producer(linger_s=0) as producer:
                handler = CommandHandler(producer, topic)
                for i, command in enumerate(commands()):
                    try:
                        event = await handler.handle(command)
                    except Rejected as exc:
                        result.rejected += 1
                        if result.rejected <= 3:
                            say(f"  command {i}: {command['type']} {command['quantity']} {command['sku']} "
                                f"rejected: {exc}")
                        continue
                    acknowledged[event["id"]] = time.perf_counter()
                    result.accepted += 1
                    seen = query_stock(db, event["sku"])  # read right after the acknowledgement
                    expected = (handler.available[event["sku"]], handler.reserved.get(event["sku"], 0))
                    if seen != expected:
                        result.stale_reads += 1
                    if i < 4:
                        say(f"  command {i}: {command['type']} {command['quantity']} {command['sku']} -> "
                            f"{event['type']} acknowledged; a query right away sees {seen}, the write side "
                            f"{expected}")
            with trio.fail_after(60):  # the projection catches up with every accepted command
                while result.projected < result.accepted:
                    await projected_event.wait()
                    projected_event = trio.Event()
            nursery.cancel_scope.cancel()
        result.write_side = {sku: (handler.available.get(sku, 0), handler.reserved.get(sku, 0))
                             for sku in SKUS if sku in handler.available}

    result.read_model = {sku: query_stock(db, sku) for sku in SKUS if query_stock(db, sku) is not None}
    # an event may reach the read model while its acknowledgement is still on its way to the handler: lag 0
    result.ahead = sum(1 for e in acknowledged if updated[e] <= acknowledged[e])
    result.lags_ms = [max(0.0, updated[e] - acknowledged[e]) * 1000 for e in acknowledged]
    result.p50_ms, result.p99_ms = percentile(result.lags_ms, 50), percentile(result.lags_ms, 99)
    say(f"\n{COMMANDS} commands: {result.accepted} accepted (events appended), {result.rejected} rejected by "
        f"validation; the projection applied {result.projected} events")
    say(f"eventual consistency, command acknowledged -> read model updated: p50 {result.p50_ms:.2f} ms, "
        f"p99 {result.p99_ms:.2f} ms, max {max(result.lags_ms):.2f} ms")
    say(f"  ({result.ahead} events were in the read model before their acknowledgement reached the handler: lag 0)")
    say(f"queries right after an acknowledgement that saw the old value: {result.stale_reads} of {result.accepted}")
    say("read model (available, reserved): " + ", ".join(f"{s} {v}" for s, v in result.read_model.items()))
    say("it matches the write side" if result.read_model == result.write_side else "it DIFFERS from the write side")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="CQRS: commands, events, a projection into SQLite, measured lag.")
    parser.add_argument("--broker", metavar="HOST:PORT", help="a running broker (default: an embedded one)")
    args = parser.parse_args(argv)
    run_example("cqrs", lambda: trio.run(run, args.broker))


if __name__ == "__main__":
    main()
