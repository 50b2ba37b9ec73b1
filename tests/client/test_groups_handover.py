# The hand-over of issue 10 finding 5, as a user met it: three member processes of a new group on a 6-partition
# topic, reading from the end (auto_offset_reset="latest"), records going to one partition only; one member is
# killed with SIGKILL; records then go to every partition. Every record produced after the members started is
# read, the orphaned partitions' ones included (488 of 3,000 were skipped when the start was resolved again by the
# next owner), whichever state the dead member left each of its partitions in. Waits are bounded polls.
from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from millpond.client.errors import UnknownGroupError
from millpond.client.sync import connect as sync_connect

pytestmark = pytest.mark.slow
SESSION_S = 2.0
TOPIC = "orders"

# A member: logs "A parts" when it takes partitions and "R partition offset" per record read, line-buffered so a
# SIGKILL loses nothing written; commits what it read after each batch, except on the partition given as argv[5]
# (left read but uncommitted: the dead member's mid-fetch partition).
MEMBER = r"""
import sys, trio
from millpond.client import connect
from millpond.client.errors import NotPartitionOwnerError, UnknownMemberIdError
address, group, topic, path, uncommitted = sys.argv[1:6]
out = open(path, "a", buffering=1)
async def main():
    async with connect(address, client_id="member") as c:
        def on_assigned(parts):
            out.write("A " + ",".join(str(p) for _, p in sorted(parts)) + "\n")
        async with c.consumer(topic, group=group, auto_offset_reset="latest", enable_auto_commit=False,
                              session_timeout_s=2.0, on_assigned=on_assigned) as cons:
            while True:
                done = {}
                for r in await cons.getmany(max_records=200):
                    out.write(f"R {r.partition} {r.offset}\n")
                    done[(r.topic, r.partition)] = r.offset + 1
                done = {tp: off for tp, off in done.items() if tp in cons.assignment() and tp[1] != int(uncommitted)}
                try:
                    await cons.commit(done)
                except (NotPartitionOwnerError, UnknownMemberIdError):
                    pass
trio.run(main)
"""


def wait_until(what, timeout_s: float = 30.0, *, must: bool = True):
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        value = what()
        if value:
            return value
        time.sleep(0.05)
    assert not must, f"not reached in {timeout_s} s: {what}"
    return None


def reads(path: Path) -> list[tuple[int, int]]:
    return [(int(p), int(o)) for kind, p, o in (line.split() for line in path.read_text().splitlines()
                                                 if line.startswith("R "))]


def owned(path: Path) -> set[int]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("A ")]
    return {int(p) for line in lines for p in line[2:].split(",") if p}


def test_records_produced_while_a_dead_members_partitions_are_orphaned_are_all_read(daemon, tmp_path):
    c = sync_connect(daemon, client_id="admin")
    c.create_topic(TOPIC, partitions=6)
    paths = [tmp_path / f"m{i}.log" for i in range(3)]
    procs = []
    try:
        for i, path in enumerate(paths):
            path.touch()
            with open(path.with_suffix(".err"), "w") as err:
                procs.append(subprocess.Popen([sys.executable, "-c", MEMBER, daemon, "g", TOPIC, str(path), "-1"],
                                              stdin=subprocess.DEVNULL, stderr=err))

        def settled():
            try:
                d = c.describe_group("g")
            except UnknownGroupError:
                return None
            return d.settled and len(d.members) == 3 and len(d.owners()) == 6 and all(len(owned(p)) for p in paths)
        wait_until(settled)
        victim = next(i for i, p in enumerate(paths) if 0 not in owned(p))
        theirs = sorted(owned(paths[victim]))
        with c.producer() as p:  # before the kill: partition 0 only, as in the report
            for i in range(100):
                p.send(TOPIC, b"early-%d" % i, partition=0)
        wait_until(lambda: len(reads(tmp_path / "m0.log") + reads(tmp_path / "m1.log") + reads(tmp_path / "m2.log"))
                   >= 100)
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait()
        with c.producer() as p:  # the victim's partitions are orphaned until its session ends
            for i in range(50):
                for part in range(6):
                    p.send(TOPIC, b"late-%d" % i, partition=part)
        survivors = [p for i, p in enumerate(paths) if i != victim]
        want = {(0, o) for o in range(150)} | {(part, o) for part in range(1, 6) for o in range(50)}
        wait_until(lambda: {r for s in survivors for r in reads(s)} | set(reads(paths[victim])) >= want, 30, must=False)
        got = [r for s in survivors for r in reads(s)] + reads(paths[victim])
        assert sorted(want - set(got)) == []  # skipped records
        assert set(got) == want  # every record, the orphaned partitions' too, nothing from outside the log
        assert {part for s in survivors for part in owned(s)} >= set(theirs)
        assert all(n == 1 for n in Counter(got).values())  # and each once
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        c.close()
