# The Redis side of `millpond bench queues`: a list as a reliable queue, the pattern Redis documents for it (the
# LMOVE page): LPUSH to send (a batch is one LPUSH of several values); to receive, move a message atomically into a
# processing list (BLMOVE ... RIGHT LEFT, or LMOVE when pipelined), and LREM it from there once handled, so a worker
# that dies leaves it in the processing list instead of losing it. Driven by redis-py with hiredis, pipelining
# ``in_flight`` requests per round trip (Redis has no request concurrency on one connection but pipelining). Lists
# have no push delivery: that row is skipped with a line. The servers are bench.targets.redis_streams' (same
# variants: no AOF, AOF everysec, AOF always). Must not know how figures are summarised.
from __future__ import annotations

import time
from typing import Any, Callable, Iterator

from millpond.bench import stats
from millpond.bench.targets import Tick, peerproc, redis_streams
from millpond.bench.targets.queue_kit import Bodies, Claims, QueueOutcome, QueuePlan, Seen, Ticker, wake_body, \
    wake_latency_us

PROCESSING = ":processing"  # the processing list of queue Q is Q + this
WAKE_WAIT_S = 20


class RedisQueues:
    no_push = "Redis lists have no push delivery (a worker pulls with BLMOVE: the receive rows)"

    def __init__(self, streams: redis_streams.RedisStreams) -> None:
        self.streams = streams
        self.name = streams.name

    def missing(self) -> str | None:
        return self.streams.missing()

    def describe(self) -> dict[str, str]:
        about = self.streams.describe()
        about["client"] = (f"redis-py {peerproc.package_version('redis')} + hiredis "
                           f"{peerproc.package_version('hiredis')}, a list as a reliable queue: LPUSH, BLMOVE/LMOVE "
                           "into a processing list, LREM; requests pipelined")
        return about

    def server(self, fsync: str, address: str | None) -> Any:
        return self.streams.server(fsync, address)

    def create(self, address: str, queue: str) -> None:
        r = redis_streams._client(address)
        if r.exists(queue, queue + PROCESSING):
            raise RuntimeError(f"list {queue!r} exists already")

    def depth(self, address: str, queue: str) -> int:
        r = redis_streams._client(address)
        return r.llen(queue) + r.llen(queue + PROCESSING)

    def send(self, address: str, queue: str, plan: QueuePlan, tick: Tick) -> QueueOutcome:
        """``in_flight`` LPUSHes of ``batch`` values each per pipelined round trip, each round trip timed."""
        r = redis_streams._client(address)
        pipe = r.pipeline(transaction=False)
        bodies, claims, ticker = Bodies(plan.body_bytes), Claims(plan), Ticker(tick)
        hist = stats.new_histogram()
        perf_ns = time.perf_counter_ns
        sent = 0
        error = ""
        last = time.perf_counter()
        while True:
            claimed = [c for c in (claims.claim(plan.batch) for _ in range(plan.in_flight)) if c]
            if not claimed:
                break
            for seqs in claimed:
                pipe.lpush(queue, *(bodies.body(s) for s in seqs))
            t0 = perf_ns()
            try:
                pipe.execute()
            except Exception as exc:  # the workload aborts on any failure
                error = repr(exc)
                break
            stats.record_us(hist, (perf_ns() - t0) / 1000)
            n = sum(len(c) for c in claimed)
            sent += n
            last = time.perf_counter()
            ticker(n)
        ticker.flush()
        return QueueOutcome(sent, claims.first, last, stats.encode(hist), error)

    def receive_delete(self, address: str, queue: str, plan: QueuePlan, tick: Tick) -> QueueOutcome:
        """Per cycle: ``in_flight`` x ``batch`` LMOVEs pipelined (Redis moves one element per command), then one
        LREM per message received, pipelined; each cycle timed."""
        r = redis_streams._client(address)
        pipe = r.pipeline(transaction=False)
        processing = queue + PROCESSING
        expected = plan.count or 0
        seen, ticker = Seen(expected), Ticker(tick)
        hist = stats.new_histogram()
        perf, perf_ns = time.perf_counter, time.perf_counter_ns
        done = 0
        first = perf()
        try:
            while done < expected:
                t0 = perf_ns()
                for _ in range(min(plan.in_flight * plan.batch, expected - done)):
                    pipe.lmove(queue, processing, "RIGHT", "LEFT")
                got = [b for b in pipe.execute() if b is not None]
                for body in got:
                    problem = seen.add(body)
                    if problem:
                        return QueueOutcome(done, first, perf(), error=problem)
                    pipe.lrem(processing, 1, body)
                if got:
                    if any(n != 1 for n in pipe.execute()):
                        return QueueOutcome(done, first, perf(), error="an LREM found nothing to remove")
                    stats.record_us(hist, (perf_ns() - t0) / 1000)
                    done += len(got)
                    ticker(len(got))
                else:  # it was filled before the run: a message is missing
                    return QueueOutcome(done, first, perf(), error=f"the list ran dry at {done} of {expected}")
        except Exception as exc:  # the workload aborts on any failure
            return QueueOutcome(done, first, perf(), error=repr(exc))
        ticker.flush()
        return QueueOutcome(done, first, perf(), stats.encode(hist))

    def wake_receive(self, address: str, queue: str, ready: Callable[[], None],
                     report: Callable[[float], None]) -> str:
        """BLMOVE one message into the processing list, report it, LREM it; until the message numbered -1."""
        r = redis_streams._client(address)
        processing = queue + PROCESSING
        r.ping()
        ready()
        while True:
            body = r.blmove(queue, processing, WAKE_WAIT_S, "RIGHT", "LEFT")
            if body is None:
                return f"no message within the {WAKE_WAIT_S} s BLMOVE"
            latency_us, seq = wake_latency_us(body)
            if seq >= 0:
                report(latency_us)
            r.lrem(processing, 1, body)
            if seq < 0:
                return ""

    def wake_send(self, address: str, queue: str, rounds: Iterator[int], body_bytes: int, gap_s: float,
                  received: Callable[[], None]) -> str:
        """Per round: wait ``gap_s``, LPUSH one stamped message (its reply awaited), wait for the receiver's report;
        at the end the message numbered -1."""
        r = redis_streams._client(address)
        for seq in rounds:
            time.sleep(gap_s)
            r.lpush(queue, wake_body(seq, body_bytes))
            received()
        r.lpush(queue, wake_body(-1, body_bytes))
        return ""


DEFAULT = RedisQueues(redis_streams.DEFAULT)
AOF = RedisQueues(redis_streams.AOF)
AOF_ALWAYS = RedisQueues(redis_streams.AOF_ALWAYS)
