# The Redis side of `millpond bench fanout`: one stream with N consumer groups (Redis Streams' fan-out: each group
# gets every entry), published by the topic workloads' producer (bench.targets.redis_streams: XADD pipelined 1000
# at a time) while one reader per group, each a thread with its own connection, takes the entries with XREADGROUP
# COUNT 1000 BLOCK 100 (no XACK: the group's pending list is its copy, as a queue's messages are). The row ends when
# every group's reader has read every entry; the check reads XINFO GROUPS (entries-read, lag, pending). The latency
# receiver blocks in XREADGROUP on one group; the sender XADDs one entry and waits for its reply. The servers are
# bench.targets.redis_streams' (no AOF, AOF everysec, AOF always). Must not know how figures are summarised.
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator

from millpond.bench.targets import Tick, peerproc, redis_streams
from millpond.bench.targets.fanout_kit import BoundedPlan, FanoutOutcome
from millpond.bench.targets.queue_kit import wake_body, wake_latency_us

FIELD = redis_streams.FIELD
BLOCK_MS = redis_streams.BLOCK_MS
WAKE_BLOCK_MS = 20_000


class RedisFanout:
    def __init__(self, streams: redis_streams.RedisStreams) -> None:
        self.streams = streams
        self.name = streams.name

    def missing(self) -> str | None:
        return self.streams.missing()

    def describe(self) -> dict[str, str]:
        about = self.streams.describe()
        about["client"] = (f"redis-py {peerproc.package_version('redis')} + hiredis "
                           f"{peerproc.package_version('hiredis')}: XADD pipelined {peerproc.BATCH_RECORDS} to one "
                           f"stream, one reader thread per consumer group in XREADGROUP COUNT "
                           f"{peerproc.BATCH_RECORDS} BLOCK {BLOCK_MS}")
        return about

    def server(self, fsync: str, address: str | None) -> Any:
        return self.streams.server(fsync, address)

    def setup(self, address: str, name: str, n: int) -> dict[str, Any]:
        """Stream ``name`` with groups ``g0`` .. ``g{n-1}`` reading from its end."""
        r = redis_streams._client(address)
        if r.exists(name):
            raise RuntimeError(f"stream {name!r} exists already")
        groups = [f"g{i}" for i in range(n)]
        for g in groups:
            r.xgroup_create(name, g, id="$", mkstream=True)
        return {"stream": name, "queues": groups}

    def fan_out(self, address: str, fan: dict[str, Any], plan: BoundedPlan, tick: Tick,
                timeout_s: float) -> FanoutOutcome:
        readers = [_Reader(address, fan["stream"], g) for g in fan["queues"]]
        for reader in readers:
            reader.start()
        out = self.streams.produce(address, fan["stream"], plan, tick)
        error = out.error or (f"{out.failed} publishes failed" if out.failed else "")
        deadline = time.perf_counter() + timeout_s
        for reader in readers:
            reader.expect(0 if error else out.records, deadline)
        for reader in readers:
            reader.join()
        error = error or next((r.error for r in readers if r.error), "")
        all_in = max((r.reached for r in readers), default=out.last_ack)
        return FanoutOutcome(out.records, out.first_send, out.last_ack, max(all_in, out.last_ack),
                             [r.read for r in readers], error)

    def check(self, address: str, fan: dict[str, Any], records: int) -> str:
        """'' when the stream holds ``records`` entries and every group has read each (entries-read), none behind
        (lag) and each pending once; else what is wrong."""
        r = redis_streams._client(address)
        if r.xlen(fan["stream"]) != records:
            return f"the stream holds {r.xlen(fan['stream'])} entries, {records} were published"
        for g in r.xinfo_groups(fan["stream"]):
            got = (g["entries-read"], g["lag"], g["pending"])
            if got != (records, 0, records):
                return f"group {g['name']!r}: entries-read, lag, pending {got}, {records} were published"
        return ""

    def latency_receive(self, address: str, fan: dict[str, Any], ready: Callable[[], None],
                        report: Callable[[float], None]) -> str:
        """XREADGROUP COUNT 1 BLOCK on the first group, report the µs since the entry's XADD was called, XACK it;
        until the entry numbered -1."""
        r = redis_streams._client(address)
        stream, group = fan["stream"], fan["queues"][0]
        r.ping()
        ready()
        while True:
            got = r.xreadgroup(group, "latency", {stream: ">"}, count=1, block=WAKE_BLOCK_MS)
            if not got or not got[0][1]:
                return f"no entry within the {WAKE_BLOCK_MS / 1000:g} s XREADGROUP"
            entry_id, fields = got[0][1][0]
            latency_us, seq = wake_latency_us(fields[FIELD])
            if seq >= 0:
                report(latency_us)
            r.xack(stream, group, entry_id)
            if seq < 0:
                return ""

    def latency_send(self, address: str, fan: dict[str, Any], rounds: Iterator[int], body_bytes: int, gap_s: float,
                     received: Callable[[], None]) -> str:
        """Per round: wait ``gap_s``, XADD one stamped entry (its reply awaited), wait for the receiver's report; at
        the end the entry numbered -1."""
        r = redis_streams._client(address)
        for seq in rounds:
            time.sleep(gap_s)
            r.xadd(fan["stream"], {FIELD: wake_body(seq, body_bytes)})
            received()
        r.xadd(fan["stream"], {FIELD: wake_body(-1, body_bytes)})
        return ""


class _Reader(threading.Thread):
    """One consumer group's reader: XREADGROUP until it has read ``expect``'s count (known once the publisher is
    done), or the deadline passes. ``reached``: ``perf_counter()`` after the read that completed it."""

    def __init__(self, address: str, stream: str, group: str) -> None:
        super().__init__(daemon=True, name=f"bench-fanout-{group}")
        self.r = redis_streams._client(address)
        self.stream, self.group = stream, group
        self.read = 0
        self.reached = 0.0
        self.error = ""
        self.target: int | None = None
        self.deadline = float("inf")

    def expect(self, records: int, deadline: float) -> None:
        self.deadline = deadline
        self.target = records

    def run(self) -> None:
        perf = time.perf_counter
        try:
            while self.target is None or self.read < self.target:
                got = self.r.xreadgroup(self.group, "c", {self.stream: ">"}, count=peerproc.BATCH_RECORDS,
                                        block=BLOCK_MS)
                if got and got[0][1]:
                    self.read += len(got[0][1])
                    self.reached = perf()
                elif perf() > self.deadline:
                    self.error = f"group {self.group}: {self.read} of {self.target} entries read in time"
                    return
            if self.read > self.target:
                self.error = f"group {self.group}: {self.read} entries read, {self.target} were published"
        except Exception as exc:  # the workload aborts on any failure
            self.error = f"group {self.group}: {exc!r}"


DEFAULT = RedisFanout(redis_streams.DEFAULT)
AOF = RedisFanout(redis_streams.AOF)
AOF_ALWAYS = RedisFanout(redis_streams.AOF_ALWAYS)
