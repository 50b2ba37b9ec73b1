# The Redis Streams peer: `redis-server` (Debian package) started on a free 127.0.0.1 port with a temporary
# directory, driven by redis-py with hiredis as bench/peers/README.md describes: XADD pipelined 1000 at a time,
# XREADGROUP COUNT 1000 with the XACK of the previous batch pipelined with the next read; send_await: one XADD
# round trip at a time. Three durability variants: the default configuration (no AOF, RDB snapshots, nothing
# fsynced before the ack), `appendonly yes, appendfsync everysec` (fsync once a second on a timer, not before the
# ack) and, opt-in, `appendfsync always` (fsync before the reply, what millpond's fsync=always is compared with).
# A topic is one stream; one partition only. Must not know how figures are summarised.
from __future__ import annotations

import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from millpond.bench.plans import (
    ConsumeOutcome,
    ConsumePlan,
    E2EConsumeOutcome,
    E2EPlan,
    E2EProduceOutcome,
    Params,
    ProduceOutcome,
    ProducePlan,
)
from millpond.bench import stats
from millpond.bench.targets import LocalServer, Tick, awaited, e2e, peerproc

START_TIMEOUT_S = 20
FIELD = b"v"
RDB_SAVE = "3600 1 300 100 60 10000"  # Redis 7's (and Debian's) default snapshot schedule
BLOCK_MS = 100
AOF_MEANING = {
    "everysec": "appendonly yes, appendfsync everysec: fsync once a second on a timer, not before the ack",
    "always": "appendonly yes, appendfsync always: the AOF is fsynced before the reply (Redis groups the writes "
              "of one event-loop turn)",
}


class RedisStreams:
    def __init__(self, name: str, aof: bool, appendfsync: str = "everysec") -> None:
        self.name = name
        self.aof = aof
        self.appendfsync = appendfsync
        self.fsync_label = f"aof {appendfsync}" if aof else "rdb, no fsync"

    def missing(self) -> str | None:
        return peerproc.missing([("redis-server", "redis-server")], [("redis", "redis[hiredis]"),
                                                                     ("hiredis", "hiredis")])

    def unsupported(self, params: Params) -> str | None:
        if params.partitions != 1:
            return "Redis Streams runs with 1 partition (one stream) only"
        return None

    def describe(self) -> dict[str, str]:
        return {
            "server": "Redis " + _version(peerproc.version_of([peerproc.find_binary("redis-server") or "redis-server",
                                                               "--version"])),
            "client": f"redis-py {peerproc.package_version('redis')} + hiredis {peerproc.package_version('hiredis')}"
                      f", XADD pipelined {peerproc.BATCH_RECORDS} (send_await: one XADD at a time), XREADGROUP COUNT "
                      f"{peerproc.BATCH_RECORDS}",
            "durability": (AOF_MEANING[self.appendfsync] if self.aof
                           else f"appendonly no, RDB snapshots (save '{RDB_SAVE}'): nothing fsynced before the ack"),
        }

    @contextmanager
    def server(self, fsync: str, address: str | None) -> Iterator[LocalServer]:
        tmp = Path(tempfile.mkdtemp(prefix=f"millpond-bench-{self.name}-"))
        port = peerproc.free_port()
        argv = [peerproc.find_binary("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                "--dir", str(tmp), "--daemonize", "no", "--save", RDB_SAVE, "--appendonly",
                "yes" if self.aof else "no", "--appendfsync", self.appendfsync, "--logfile", "", "--protected-mode",
                "yes"]
        try:
            proc = peerproc.start(self.name, argv, log_path=tmp / "server.log", timeout_s=START_TIMEOUT_S,
                                  ready=lambda: _client(f"127.0.0.1:{port}").ping())
            try:
                yield LocalServer(f"127.0.0.1:{port}", self.fsync_label, proc.pid)
            finally:
                peerproc.stop(proc)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def create_topic(self, address: str, topic: str, partitions: int) -> None:
        r = _client(address)
        if r.exists(topic):
            raise RuntimeError(f"stream {topic!r} exists already")
        r.xgroup_create(topic, "bench-created", id="$", mkstream=True)  # the stream exists, empty

    def topic_records(self, address: str, topic: str) -> dict[int, tuple[int, int]]:
        return {0: (0, _client(address).xlen(topic))}

    def produce(self, address: str, topic: str, plan: ProducePlan, tick: Tick) -> ProduceOutcome:
        r = _client(address)
        pipe = r.pipeline(transaction=False)
        xadd = pipe.xadd
        values, nv = plan.values, len(plan.values)
        sampler = peerproc.Sampler(plan.sample_every)
        perf = time.perf_counter
        if plan.start_at:
            time.sleep(max(0.0, plan.start_at - perf()))
        first = perf()
        i = payload = failed = 0
        error = ""
        while n := plan.next_batch(i, peerproc.BATCH_RECORDS, perf() - first):
            for chunk in sampler.chunks(i, i + n):
                for j in chunk:
                    v = values[j % nv]
                    xadd(topic, {FIELD: v})
                    payload += len(v)
            try:
                pipe.execute()
            except Exception as exc:  # the workload aborts on any failure
                failed, error = n, repr(exc)
                break
            sampler.acked()
            i += n
            tick(n)
        return ProduceOutcome(records=i, payload_bytes=payload, first_send=first, last_ack=perf(),
                              latency_hdr=sampler.encoded(), failed=failed, error=error)

    def send_await(self, address: str, topic: str, plan: ProducePlan, tick: Tick) -> ProduceOutcome:
        """One XADD at a time, each a round trip timed from the call to its reply (redis-py blocks until Redis
        answers): the peer's counterpart of ``await producer.send(...)``."""
        r = _client(address)
        values, nv = plan.values, len(plan.values)
        hist = stats.new_histogram()
        perf, perf_ns = time.perf_counter, time.perf_counter_ns
        i = payload = failed = 0
        error = ""
        first = perf()
        stop_at = None if plan.count is not None or plan.duration_s is None else first + plan.duration_s
        while (i < plan.count) if plan.count is not None else (stop_at is None or perf() < stop_at):
            v = values[i % nv]
            t0 = perf_ns()
            try:
                r.xadd(topic, {FIELD: v})
            except Exception as exc:  # the workload aborts on any failure
                failed, error = 1, repr(exc)
                break
            stats.record_us(hist, (perf_ns() - t0) / 1000)
            i += 1
            payload += len(v)
            if i % awaited.TICK_EVERY == 0:
                tick(awaited.TICK_EVERY)
        return ProduceOutcome(records=i, payload_bytes=payload, first_send=first, last_ack=perf(),
                              latency_hdr=stats.encode(hist), failed=failed, error=error)

    def consume(self, address: str, topic: str, plan: ConsumePlan, tick: Tick) -> ConsumeOutcome:
        """XREADGROUP from the start of the stream; stream ids must only increase; nothing beyond ``expected``."""
        r = _client(address)
        group = "bench-consume"
        r.xgroup_create(topic, group, id="0")
        pipe = r.pipeline(transaction=False)
        perf = time.perf_counter
        n = 0
        last_id = (0, 0)
        ids: list[bytes] = []
        first = perf()
        give_up = first + plan.timeout_s
        while n < plan.expected:
            if ids:
                pipe.xack(topic, group, *ids)
            pipe.xreadgroup(group, "c1", {topic: ">"}, count=min(peerproc.BATCH_RECORDS, plan.expected - n),
                            block=BLOCK_MS)
            got = pipe.execute()[-1]
            entries = got[0][1] if got else []
            if not entries:
                if perf() > give_up:
                    return ConsumeOutcome(n, first, perf(), f"timed out with {n} of {plan.expected} records")
                ids = []
                continue
            ids = [e[0] for e in entries]
            lo, hi = _id(ids[0]), _id(ids[-1])
            if not last_id < lo <= hi:
                return ConsumeOutcome(n, first, perf(), f"stream ids went backwards after {last_id}")
            last_id = hi
            n += len(entries)
            tick(len(entries))
        last = perf()
        r.xack(topic, group, *ids)
        extra = r.xreadgroup(group, "c1", {topic: ">"}, count=10)
        if extra and extra[0][1]:
            return ConsumeOutcome(n + len(extra[0][1]), first, last, "records beyond the expected")
        return ConsumeOutcome(n, first, last)

    def e2e_produce(self, address: str, topic: str, plan: E2EPlan, tick: Tick) -> E2EProduceOutcome:
        """Open loop (bench.targets.e2e.Schedule): the records due are pipelined in one round trip, each stamped
        as it is handed to the client. The call blocks until Redis answers, so a slow answer delays the next
        records: ``lag_max_s`` shows by how much."""
        r = _client(address)
        pipe = r.pipeline(transaction=False)
        failed, error = 0, ""
        sched = e2e.Schedule(plan)
        while sched.sent < plan.count:
            todo = sched.due()
            if todo:
                for j in todo:
                    pipe.xadd(topic, {FIELD: sched.value(j)})
                try:
                    pipe.execute()
                except Exception as exc:
                    failed, error = plan.count - sched.sent, repr(exc)
                    break
                tick(len(todo))
                sched.sent = todo.stop
            time.sleep(sched.wait_s())
        last = time.perf_counter()
        return E2EProduceOutcome(records=sched.sent, payload_bytes=sched.payload_bytes, first_send=sched.t0,
                                 last_send=last, last_ack=last, lag_max_s=sched.lag_max_s, failed=failed,
                                 error=error)

    def e2e_consume(self, address: str, topic: str, plan: E2EPlan, ready: Callable[[], None]) -> E2EConsumeOutcome:
        """XREADGROUP BLOCK 100 ms COUNT 1000 and one XACK per batch (bench/peers/README.md)."""
        r = _client(address)
        group = "bench-e2e"
        r.xgroup_create(topic, group, id="$", mkstream=True)
        arrivals = e2e.Arrivals(plan)
        n = 0
        ready()
        give_up = time.perf_counter() + plan.timeout_s
        while n < plan.count:
            got = r.xreadgroup(group, "c1", {topic: ">"}, count=peerproc.BATCH_RECORDS, block=BLOCK_MS)
            now = time.monotonic_ns()
            entries = got[0][1] if got else []
            if not entries:
                if time.perf_counter() > give_up:
                    return arrivals.outcome(n, f"timed out with {n} of {plan.count} records")
                continue
            for _, fields in entries:
                err = arrivals.check(fields[FIELD], now)
                if err:
                    return arrivals.outcome(n, err)
            r.xack(topic, group, *(e[0] for e in entries))
            n += len(entries)
        return arrivals.outcome(n)


def _client(address: str) -> Any:
    import redis

    host, port = address.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), protocol=2, socket_timeout=60)


def _version(line: str) -> str:
    """'Redis server v=7.0.15 sha=...' -> '7.0.15'."""
    return next((w[2:] for w in line.split() if w.startswith("v=")), line)


def _id(stream_id: bytes) -> tuple[int, int]:
    ms, seq = stream_id.split(b"-")
    return int(ms), int(seq)


DEFAULT = RedisStreams("redis", aof=False)
AOF = RedisStreams("redis-aof", aof=True)
AOF_ALWAYS = RedisStreams("redis-aof-always", aof=True, appendfsync="always")
