# Consumer groups end to end over TCP with real processes: member processes killed with SIGKILL, a broker
# restarted, the asyncio and blocking clients. Waits are bounded polls of the broker (describe_group), never sleeps.
from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from millpond.client import connect
from millpond.client.errors import UnknownGroupError
from millpond.client.sync import connect as sync_connect

from tests.daemonproc import start_daemon, stop_daemon

pytestmark = pytest.mark.slow
SESSION_S = 2.0
TOPIC = "orders"

# One member process: logs every event as a line "<monotonic s> <kind> ...", line-buffered so a SIGKILL loses
# nothing written: A/V partitions (assigned/revoked), R partition offset key seq (processed), C partition offset
# (committed). Commits what it processed after each batch and, in on_revoked, before the revoke is reported.
MEMBER = r"""
import sys, time, trio
from millpond.client import connect
from millpond.client.errors import NotPartitionOwnerError, StaleMemberEpochError, UnknownMemberIdError
REFUSED = (NotPartitionOwnerError, StaleMemberEpochError, UnknownMemberIdError)
address, group, topic, path, session = sys.argv[1:6]
out = open(path, "a", buffering=1)
def log(*fields):
    out.write(" ".join(map(str, (time.monotonic(),) + fields)) + "\n")
async def main():
    printed = {}
    async with connect(address, client_id="member") as c:
        async def commit(offsets):
            try:
                await cons.commit(offsets)
            except REFUSED:
                return
            for (t, p), off in sorted(offsets.items()):
                log("C", p, off)
        async def on_revoked(parts):
            await commit({tp: printed.pop(tp) for tp in parts if tp in printed})
            log("V", ",".join(str(p) for _, p in sorted(parts)))
        def on_assigned(parts):
            log("A", ",".join(str(p) for _, p in sorted(parts)))
        async with c.consumer(topic, group=group, auto_offset_reset="earliest", enable_auto_commit=False,
                              session_timeout_s=float(session), on_assigned=on_assigned,
                              on_revoked=on_revoked) as cons:
            async with trio.open_nursery() as n:
                async def stop_at_eof():
                    await trio.to_thread.run_sync(sys.stdin.read)
                    n.cancel_scope.cancel()
                n.start_soon(stop_at_eof)
                while True:
                    batch = await cons.getmany(max_records=200)
                    done = {}
                    for r in batch:
                        key, seq = r.value.split(b":")
                        log("R", r.partition, r.offset, key.decode(), int(seq))
                        done[(r.topic, r.partition)] = r.offset + 1
                    printed.update(done)
                    await commit({tp: off for tp, off in done.items() if tp in cons.assignment()})
trio.run(main)
"""


def spawn(address: str, group: str, path: Path) -> subprocess.Popen:
    with open(path.with_suffix(".err"), "w") as err:
        return subprocess.Popen([sys.executable, "-c", MEMBER, address, group, TOPIC, str(path), str(SESSION_S)],
                                stdin=subprocess.PIPE, stderr=err)


def wait_for(c, group: str, members: int, partitions: int, timeout_s: float):
    """Poll describe_group until stable with ``members`` members owning ``partitions`` partitions."""
    give_up = time.monotonic() + timeout_s
    d = None  # the group may never have been seen
    while time.monotonic() < give_up:
        try:
            d = c.describe_group(group)
        except UnknownGroupError:
            continue
        if d.settled and len(d.members) == members and len(d.owners()) == partitions:
            return d
    raise AssertionError(f"group {group} did not settle with {members} members in {timeout_s} s: {d}")


def produce(c, first: int, count: int, keys: int = 100) -> None:
    with c.producer(linger_s=0.002) as p:
        for i in range(first, first + count):
            p.send(TOPIC, b"k%d:%d" % (i % keys, i // keys), key=b"k%d" % (i % keys))


def parse(path: Path) -> list[tuple[float, str, list[str]]]:
    rows = []
    for line in path.read_text().splitlines():
        t, kind, *rest = line.split(" ")
        rows.append((float(t), kind, rest))
    return rows


def stints(rows, member: int):
    """Per partition, this member's ownership stints: (member, records [(time, offset)]) in order."""
    out, live = [], {}
    for t, kind, rest in rows:
        if kind == "A":
            for p in map(int, rest[0].split(",")):
                live[p] = (member, p, [])
                out.append(live[p])
        elif kind == "V":
            for p in map(int, rest[0].split(",")):
                live.pop(p, None)
        elif kind == "R":
            live[int(rest[0])][2].append((t, int(rest[1])))
    return out


def test_30k_keyed_records_while_a_member_is_killed_and_another_added(daemon, tmp_path):
    paths = [tmp_path / f"member{i}.log" for i in range(4)]
    procs: list[subprocess.Popen] = []
    with sync_connect(daemon) as c:
        c.create_topic(TOPIC, partitions=6)
        try:
            procs += [spawn(daemon, "g", paths[i]) for i in range(3)]
            d = wait_for(c, "g", 3, 6, 20)
            assert sorted(len(m.assignment) for m in d.members) == [2, 2, 2]
            produce(c, 0, 10_000)
            killed_at = time.monotonic()
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(10)
            d = wait_for(c, "g", 2, 6, SESSION_S + 2)  # survivors own everything within session timeout + 2 s
            assert time.monotonic() - killed_at <= SESSION_S + 2
            produce(c, 10_000, 10_000)
            procs.append(spawn(daemon, "g", paths[3]))
            wait_for(c, "g", 3, 6, 20)
            produce(c, 20_000, 10_000)
            ends = {p.partition: p.high_watermark for p in c.describe_topic(TOPIC).partitions}
            assert sum(ends.values()) == 30_000
            give_up = time.monotonic() + 30
            while c.describe_group("g").lag and time.monotonic() < give_up:
                pass
            assert c.describe_group("g").lag == 0
        finally:
            for proc in procs[1:]:
                if proc.poll() is None:
                    proc.stdin.close()  # EOF: leave the group gracefully
            for proc in procs:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                proc.stdin.close()
        assert [proc.returncode for proc in procs] == [-signal.SIGKILL, 0, 0, 0]
        assert c.describe_group("g").state == "empty"

    logs = [parse(p) for p in paths]
    per_part: dict[int, list] = defaultdict(list)
    for i, rows in enumerate(logs):
        for member, p, recs in stints(rows, i):
            if recs:
                per_part[p].append((member, recs))
        seqs: dict[str, list[int]] = defaultdict(list)  # per-key order within each owner
        for _, kind, rest in rows:
            if kind == "R":
                seqs[rest[2]].append(int(rest[3]))
        assert all(s == sorted(set(s)) for s in seqs.values()), f"member {i} saw a key out of order"
    commits = defaultdict(list)  # partition -> [(time, offset)] logged by any member
    for rows in logs:
        for t, kind, rest in rows:
            if kind == "C":
                commits[int(rest[0])].append((t, int(rest[1])))
    duplicates = 0
    for p, owners in per_part.items():
        owners.sort(key=lambda o: o[1][0][0])
        offsets = [off for _, recs in owners for _, off in recs]
        assert set(offsets) == set(range(ends[p])), f"partition {p}: records missing"
        for (prev_m, prev), (next_m, nxt) in zip(owners, owners[1:]):
            assert [o for _, o in nxt] == list(range(nxt[0][1], nxt[-1][1] + 1))  # dense within an owner
            start, prev_last = nxt[0][1], prev[-1][1]
            last_commit = max((off for t, off in commits[p] if t < nxt[0][0]), default=0)
            assert last_commit <= start <= prev_last + 1, f"partition {p}: gap or re-read before the commit"
            if prev_m != 0:
                assert start == prev_last + 1, f"partition {p}: a graceful revoke repeated records"
            duplicates += prev_last + 1 - start
    assert sum(len(o) for owners in per_part.values() for _, o in owners) == 30_000 + duplicates


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(data: Path, port: int, log: Path) -> subprocess.Popen:
    return start_daemon(data, log, port=port, log_mode="a")[0]


def test_broker_restart_keeps_commits_members_rejoin_and_a_deleted_group_stays_deleted(tmp_path):
    port = _free_port()
    address = f"127.0.0.1:{port}"
    broker = _serve(tmp_path / "data", port, tmp_path / "broker.log")
    try:
        with sync_connect(address) as c:
            c.create_topic(TOPIC, partitions=2)
            produce(c, 0, 100, keys=10)
            with c.consumer(TOPIC, group="gone", auto_offset_reset="earliest") as cons:
                assert len([r for _, r in zip(range(100), cons)]) == 100
            c.delete_group("gone")
            with c.consumer(TOPIC, group="g", auto_offset_reset="earliest", session_timeout_s=SESSION_S) as cons:
                it = iter(cons)
                assert len([next(it) for _ in range(100)]) == 100
                cons.commit()
                broker.send_signal(signal.SIGKILL)
                broker.wait(10)
                broker.stdout.close()
                broker = _serve(tmp_path / "data", port, tmp_path / "broker.log")
                d = c.describe_group("g")  # the member is gone with the old process; the commits are not
                assert (d.state, [o.committed_offset for o in d.offsets]) == ("empty", [o.end_offset for o in d.offsets])
                assert [g.group for g in c.list_groups()] == ["g"]
                with pytest.raises(UnknownGroupError):
                    c.describe_group("gone")
                produce(c, 100, 10, keys=10)
                assert sorted(int(next(it).value.split(b":")[1]) for _ in range(10)) == [10] * 10  # rejoined
                wait_for(c, "g", 1, 2, 10)
    finally:
        stop_daemon(broker)


def test_asyncio_and_blocking_members_share_a_group(daemon):
    with sync_connect(daemon) as c:
        c.create_topic(TOPIC, partitions=2)
        produce(c, 0, 200, keys=20)
        ends = {p.partition: p.high_watermark for p in c.describe_topic(TOPIC).partitions}

    async def aio_member() -> tuple[frozenset, list]:
        got: list = []
        async with connect(daemon, client_id="aio") as ac:
            async with ac.consumer(TOPIC, group="mixed", auto_offset_reset="earliest") as cons:
                async with asyncio.timeout(20):
                    while len(cons.assignment()) != 1 or len(got) < ends[next(iter(cons.assignment()))[1]]:
                        got += await cons.getmany(timeout_s=0.1)
                return cons.assignment(), got

    with sync_connect(daemon, client_id="blocking") as c:
        with c.consumer(TOPIC, group="mixed", auto_offset_reset="earliest") as sync_cons:
            wait_for(c, "mixed", 1, 2, 10)
            (mine,), got = asyncio.run(aio_member())  # the blocking member gives it one partition meanwhile
            assert sorted(r.offset for r in got) == list(range(ends[mine[1]])) and {r.partition for r in got} == {mine[1]}
            other = 1 - mine[1]
            d = wait_for(c, "mixed", 1, 2, 10)  # the asyncio member left on exit, committing what it read
            assert [m.client_id for m in d.members] == ["blocking"]
            assert [o.committed_offset for o in d.offsets if o.partition == mine[1]] == [ends[mine[1]]]
            seen = []
            for r in sync_cons:
                seen.append(r)
                if len(seen) == ends[other]:
                    break
            assert {r.partition for r in seen} == {other} and sync_cons.getmany(timeout_s=0.5) == []
