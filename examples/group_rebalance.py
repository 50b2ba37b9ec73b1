"""Consumer group auto-balancing: three workers share a 6-partition topic, one is killed, nothing is lost.

What it shows: the workers join one consumer group; the broker assigns each two of the topic's six partitions
(each partition is read by one member at a time) and each worker commits what it processed. Then one worker dies
abruptly: its connection drops and it never says goodbye. The broker notices when the worker's session times
out, hands its partitions to the two survivors (which keep their own, as the sticky assignor does) and they go on
from the dead worker's last committed offsets. The example prints the assignment before and after and checks
that every record produced was processed (a record the dead worker processed but had not committed is processed
again: at-least-once, counted as a redelivery).

Run it (an embedded broker on Trio's virtual clock, so the 10 s session timeout takes no real time):

    python examples/group_rebalance.py
    python examples/group_rebalance.py --broker 127.0.0.1:7420     # a running `millpond serve`, in real time
"""
from __future__ import annotations

import argparse
import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import trio
import trio.testing

from millpond import connect

from examplekit import broker_address, run_example  # examples/examplekit.py
from millpond.client.errors import (
    ConnectionClosedError,
    NotPartitionOwnerError,
    StaleMemberEpochError,
    UnknownGroupError,
    UnknownMemberIdError,
)

PARTITIONS = 6
WORKERS = ("worker-1", "worker-2", "worker-3")
VICTIM = "worker-2"
SESSION_TIMEOUT_S = 10.0
USERS = 50  # record keys: one user's clicks stay in order in one partition
BEFORE, DURING, AFTER = 300, 150, 300  # records produced before the kill, while the group is one short, after


@dataclass
class Worker:
    name: str
    processed: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset) in processing order
    client: Any = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    killed: bool = False

    async def kill(self) -> None:
        """Die abruptly: the connection drops (as when a process is killed), no commit, no leaving the group."""
        self.killed = True
        self.scope.cancel()
        await self.client.aclose()


@dataclass(frozen=True)
class Result:
    before: dict[str, list[int]]  # worker -> partitions, three workers
    after: dict[str, list[int]]  # worker -> partitions, after the kill
    produced: int
    processed_unique: int  # distinct (partition, offset) processed by anyone
    redelivered: int  # records processed twice (the dead worker's uncommitted ones)
    lost: int  # produced but never processed
    per_worker: dict[str, int]
    lag: int  # the group's total lag at the end
    rebalance_s: float  # from the kill until the survivors owned all partitions


async def run_worker(address: Any, topic: str, group: str, worker: Worker, task_status: Any) -> None:
    with worker.scope:
        try:
            async with connect(address, client_id=worker.name) as client:
                worker.client = client
                async with client.consumer(topic, group=group, auto_offset_reset="earliest",
                                           enable_auto_commit=False,
                                           session_timeout_s=SESSION_TIMEOUT_S) as consumer:
                    task_status.started()
                    while True:
                        batch = await consumer.getmany(max_records=20)
                        worker.processed += [(r.partition, r.offset) for r in batch]
                        try:
                            await consumer.commit()  # what it processed; the next owner starts there
                        except (NotPartitionOwnerError, StaleMemberEpochError, UnknownMemberIdError):
                            pass  # a partition moved meanwhile: its new owner goes on from the last commit
        except ConnectionClosedError:
            if not worker.killed:
                raise


async def assignment(client: Any, group: str, members: int) -> dict[str, list[int]]:
    """Wait until the group is stable with ``members`` members owning every partition; the assignment by worker."""
    with trio.fail_after(120):
        while True:
            try:
                d = await client.describe_group(group)
            except UnknownGroupError:  # nobody has joined yet
                d = None
            if d is not None and d.settled and len(d.members) == members and len(d.owners()) == PARTITIONS:
                return {m.client_id: sorted(p for _, p in m.assignment) for m in d.members}
            await trio.sleep(0.1)


async def produce(client: Any, topic: str, first: int, count: int) -> None:
    async with client.producer() as producer:
        for i in range(first, first + count):
            producer.send(topic, b"click %d" % i, key=b"user-%d" % (i % USERS))


async def caught_up(client: Any, group: str, topic: str) -> int:
    """Wait until the group's committed offsets reach the end of every partition; returns the total lag (0)."""
    with trio.fail_after(120):
        while True:
            d = await client.describe_group(group)
            lag = sum(o.lag or 0 for o in d.offsets if o.topic == topic)
            if len([o for o in d.offsets if o.topic == topic]) == PARTITIONS and lag == 0:
                return lag
            await trio.sleep(0.1)


def show(say: Callable[[str], Any], title: str, owners: dict[str, list[int]]) -> None:
    say(title)
    for name in sorted(owners):
        say(f"  {name}: partitions {', '.join(map(str, owners[name]))}")


async def run(address: str | None = None, *, say: Callable[[str], Any] = print) -> Result:
    async with broker_address(address, fsync="never") as where, connect(where, client_id="admin") as client:
        suffix = "" if address is None else "-" + secrets.token_hex(3)  # a shared broker: fresh names per run
        topic, group = "clicks" + suffix, "click-counters" + suffix
        await client.create_topic(topic, partitions=PARTITIONS)
        workers = {name: Worker(name) for name in WORKERS}
        async with trio.open_nursery() as nursery:
            for w in workers.values():
                await nursery.start(run_worker, where, topic, group, w)
            before = await assignment(client, group, len(WORKERS))
            show(say, f"group {group} on {topic} ({PARTITIONS} partitions), three workers:", before)

            await produce(client, topic, 0, BEFORE)
            await caught_up(client, group, topic)
            say(f"{BEFORE} records produced and processed: "
                + ", ".join(f"{w.name} {len(w.processed)}" for w in workers.values()))

            victim = workers[VICTIM]
            killed_at = trio.current_time()
            await victim.kill()
            say(f"\n{VICTIM} killed: connection dropped, no commit, no goodbye "
                f"(it had processed {len(victim.processed)} records)")
            await produce(client, topic, BEFORE, DURING)
            say(f"{DURING} more records produced while the broker still waits for {VICTIM}'s session to time out")
            after = await assignment(client, group, len(WORKERS) - 1)
            rebalance_s = trio.current_time() - killed_at
            show(say, f"after {rebalance_s:.1f} s (session timeout {SESSION_TIMEOUT_S:g} s) the survivors own "
                      "every partition:", after)

            await produce(client, topic, BEFORE + DURING, AFTER)
            lag = await caught_up(client, group, topic)
            nursery.cancel_scope.cancel()

        produced = BEFORE + DURING + AFTER
        counts = Counter(rec for w in workers.values() for rec in w.processed)
        ends = {p.partition: p.high_watermark for p in (await client.describe_topic(topic)).partitions}
        expected = {(p, o) for p, end in ends.items() for o in range(end)}
        lost = len(expected - set(counts))
        redelivered = sum(n - 1 for n in counts.values())
        say(f"\nproduced {produced}, in the log {len(expected)}, processed {len(counts)} distinct records "
            f"({redelivered} processed twice), lost {lost}; group lag {lag}")
        per_worker = {w.name: len(w.processed) for w in workers.values()}
        say("per worker: " + ", ".join(f"{n} {c}" for n, c in per_worker.items()))
        return Result(before=before, after=after, produced=produced, processed_unique=len(counts),
                      redelivered=redelivered, lost=lost, per_worker=per_worker, lag=lag, rebalance_s=rebalance_s)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Consumer group auto-balancing: a worker dies, nothing is lost.")
    parser.add_argument("--broker", metavar="HOST:PORT", help="a running broker (default: an embedded one)")
    args = parser.parse_args(argv)
    # embedded: the broker and the workers share Trio's virtual clock, which skips ahead whenever all wait
    clock = None if args.broker else trio.testing.MockClock(autojump_threshold=0)
    run_example("group_rebalance", lambda: trio.run(run, args.broker, clock=clock))


if __name__ == "__main__":
    main()
