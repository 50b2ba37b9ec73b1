"""Event sourcing: bank accounts kept as a log of events, not as rows of balances.

What it shows: every change to an account is an event appended to the topic ``bank-events`` (AccountCreated,
Deposited, Withdrew), keyed by the account id, so all of one account's events hash to one partition and stay in
the order they happened. The current balances are not stored anywhere: hydration replays the log from offset 0
and folds the events into state. A snapshot stores that state together with the offset it covers, per partition;
a restart loads the snapshot and replays only the events after it, and ends with the same balances.

Run it (an embedded broker, in a few seconds):

    python examples/event_sourcing.py
    python examples/event_sourcing.py --broker 127.0.0.1:7420     # against a running `millpond serve`
"""
from __future__ import annotations

import argparse
import json
import secrets
from dataclasses import dataclass
from typing import Any, Callable

import trio

from millpond import connect

from examplekit import broker_address, run_example  # examples/examplekit.py

PARTITIONS = 3


# -- the domain: events and how they fold into state ----------------------------------------------------------------
def apply(balances: dict[str, int], event: dict[str, Any]) -> None:
    """Fold one event into the state (the only place that knows what an event means)."""
    account = event["account"]
    if event["type"] == "AccountCreated":
        balances[account] = 0
    elif event["type"] == "Deposited":
        balances[account] += event["amount"]
    elif event["type"] == "Withdrew":
        balances[account] -= event["amount"]
    else:
        raise ValueError(f"unknown event type {event['type']!r}")


def describe(event: dict[str, Any]) -> str:
    return event["type"] + (f" {event['amount']}" if "amount" in event else "")


HISTORY = [  # (account, event type, amount)
    ("alice", "AccountCreated", None), ("bob", "AccountCreated", None),
    ("alice", "Deposited", 50), ("bob", "Deposited", 80),
    ("alice", "Withdrew", 10), ("carol", "AccountCreated", None),
    ("alice", "Deposited", 60), ("bob", "Withdrew", 25), ("carol", "Deposited", 5),
]
LATER = [("alice", "Withdrew", 30), ("bob", "Deposited", 100), ("dave", "AccountCreated", None),
         ("dave", "Deposited", 7)]


@dataclass(frozen=True)
class Result:
    balances: dict[str, int]  # hydrated from offset 0 after the first history
    partition_of: dict[str, int]  # account -> the one partition holding its events
    in_order: bool  # each account's events came back in the order they were appended
    snapshot_offsets: dict[int, int]  # partition -> next offset the snapshot does not cover
    replayed_full: int  # events a replay from offset 0 read at the end
    replayed_after_snapshot: int  # events the replay from the snapshot read
    balances_full: dict[str, int]  # final balances, replayed from offset 0
    balances_from_snapshot: dict[str, int]  # final balances, snapshot plus the events after it


async def append(producer: Any, topic: str, history: list[tuple[str, str, int | None]]) -> list[tuple[str, int]]:
    """The write side: append each event, keyed by account. Returns (account, partition) per event."""
    handles = []
    for account, kind, amount in history:
        event = {"type": kind, "account": account} | ({"amount": amount} if amount is not None else {})
        handles.append((account, producer.send(topic, json.dumps(event).encode(), key=account.encode())))
    await producer.flush()
    return [(account, (await h).partition) for account, h in handles]


async def replay(client: Any, topic: str, start: dict[int, int], balances: dict[str, int],
                 seen: list[tuple[str, int, int, dict[str, Any]]] | None = None) -> tuple[int, dict[int, int]]:
    """Read every partition from ``start[p]`` to its end, folding each event into ``balances``. Returns the
    number of events read and the end offsets reached (the offsets a snapshot of this state covers)."""
    ends = {p.partition: p.high_watermark for p in (await client.describe_topic(topic)).partitions}
    left = {p: ends[p] - start.get(p, 0) for p in ends}
    count = 0
    async with client.consumer(None) as consumer:
        consumer.assign([(topic, p) for p in ends if left[p] > 0])
        for p in ends:
            if left[p] > 0:
                consumer.seek(topic, p, start.get(p, 0))
        while any(left.values()):
            for record in await consumer.getmany(timeout_s=5):
                event = json.loads(record.value)
                apply(balances, event)
                left[record.partition] -= 1
                count += 1
                if seen is not None:
                    seen.append((event["account"], record.partition, record.offset, event))
    return count, ends


async def run(address: str | None = None, *, say: Callable[[str], Any] = print) -> Result:
    async with broker_address(address, fsync="never") as where, connect(where, client_id="bank") as client:
        suffix = "" if address is None else "-" + secrets.token_hex(3)  # a shared broker: fresh names per run
        topic, snapshots = "bank-events" + suffix, "bank-snapshots" + suffix
        await client.create_topic(topic, partitions=PARTITIONS)
        await client.create_topic(snapshots)
        say(f"topic {topic}: {PARTITIONS} partitions, events keyed by account id")

        async with client.producer() as producer:
            placed = await append(producer, topic, HISTORY)
        partition_of: dict[str, set[int]] = {}
        for account, partition in placed:
            partition_of.setdefault(account, set()).add(partition)
        for account, parts in sorted(partition_of.items()):
            say(f"  {account}'s events -> partition {', '.join(map(str, sorted(parts)))}")

        say("\nhydration: replay every partition from offset 0")
        balances: dict[str, int] = {}
        seen: list[tuple[str, int, int, dict[str, Any]]] = []
        count, ends = await replay(client, topic, {}, balances, seen)
        for account in sorted(partition_of):
            steps = [f"{describe(e)} @{p}:{o}" for a, p, o, e in seen if a == account]
            say(f"  {account:6} {' -> '.join(steps)}")
        in_order = all(
            [describe(e) for a, _, _, e in seen if a == account]
            == [kind + (f" {amount}" if amount is not None else "") for a2, kind, amount in HISTORY if a2 == account]
            for account in partition_of)
        say(f"  {count} events replayed; balances: {fmt(balances)}")

        snapshot = {"balances": balances, "offsets": {str(p): o for p, o in ends.items()}}
        async with client.producer() as producer:
            await producer.send(snapshots, json.dumps(snapshot).encode(), key=b"bank")
        say(f"\nsnapshot saved to {snapshots}: state plus the offsets it covers "
            + ", ".join(f"partition {p} up to {o}" for p, o in sorted(ends.items())))

        async with client.producer() as producer:
            await append(producer, topic, LATER)
        say(f"{len(LATER)} more events appended: " + ", ".join(f"{a} {k}" + (f" {n}" if n else "")
                                                                for a, k, n in LATER))

        say("\nrestart: load the latest snapshot, replay only what came after it")
        [part] = (await client.describe_topic(snapshots)).partitions
        async with client.consumer(None) as consumer:
            consumer.assign([(snapshots, 0)])
            consumer.seek(snapshots, 0, part.high_watermark - 1)  # the newest snapshot is the last record
            [latest] = await consumer.getmany(timeout_s=5)
        loaded = json.loads(latest.value)
        from_snapshot = dict(loaded["balances"])
        start = {int(p): o for p, o in loaded["offsets"].items()}
        after, _ = await replay(client, topic, start, from_snapshot)
        say(f"  from the snapshot: {after} events replayed; balances: {fmt(from_snapshot)}")
        full: dict[str, int] = {}
        total, _ = await replay(client, topic, {}, full)
        say(f"  from offset 0:     {total} events replayed; balances: {fmt(full)}")
        say("  the same state" if full == from_snapshot else "  MISMATCH")
        return Result(balances=balances, partition_of={a: min(p) for a, p in partition_of.items()},
                      in_order=in_order and all(len(p) == 1 for p in partition_of.values()),
                      snapshot_offsets=ends, replayed_full=total, replayed_after_snapshot=after,
                      balances_full=full, balances_from_snapshot=from_snapshot)


def fmt(mapping: dict[Any, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(mapping.items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Event sourcing: bank accounts as events, hydration, snapshots.")
    parser.add_argument("--broker", metavar="HOST:PORT", help="a running broker (default: an embedded one)")
    args = parser.parse_args(argv)
    run_example("event_sourcing", lambda: trio.run(run, args.broker))


if __name__ == "__main__":
    main()
