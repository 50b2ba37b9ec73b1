# The millpond target: `millpond serve` as a subprocess (its own core and GIL, a temporary data directory removed
# afterwards) driven through the public async client under Trio. Owns the client-side loops of each workload and
# their cheap per-record checks; must not know the broker's internals or how figures are summarised.
from __future__ import annotations

import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import trio

from millpond.bench import payload, stats
from millpond.bench.plans import (
    ConsumeOutcome,
    ConsumePlan,
    E2EConsumeOutcome,
    E2EPlan,
    E2EProduceOutcome,
    ProduceOutcome,
    ProducePlan,
)
from millpond.bench.targets import LocalServer, Tick, awaited, e2e

START_TIMEOUT_S = 20
STOP_TIMEOUT_S = 10
BUFFERED_BATCHES = 3  # records buffered ahead of the acks, in batches per partition: keeps the pipe full, no deeper


class _External:
    """A broker someone else runs (``--broker``): its fsync mode is whatever it was started with."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.fsync = "external"

    def cpu_s(self) -> float | None:
        return None

    def rss_bytes(self) -> int | None:
        return None


class Millpond:
    name = "millpond"

    def missing(self) -> str | None:
        return None  # the broker and its client are this package

    @contextmanager
    def server(self, fsync: str, address: str | None) -> Iterator[Any]:
        if address:
            yield _External(address)
            return
        tmp = Path(tempfile.mkdtemp(prefix="millpond-bench-"))
        log_path = tmp / "broker.log"
        try:
            # stderr to a file: a pipe nobody reads would fill up and stall the broker's logging.
            with open(log_path, "w") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "millpond.broker.cli", "serve", "--data-dir", str(tmp / "data"), "--host",
                     "127.0.0.1", "--port", "0", "--fsync", fsync, "--log-level", "WARNING"],
                    stdout=subprocess.PIPE, stderr=log, text=True)
            try:
                port = _read_port(proc, log_path)
                yield LocalServer(f"127.0.0.1:{port}", fsync, proc.pid)
            finally:
                _stop(proc)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def create_topic(self, address: str, topic: str, partitions: int) -> None:
        from millpond.client import connect

        async def go() -> None:
            async with connect(address, client_id="bench-admin") as c:
                await c.create_topic(topic, partitions=partitions)

        trio.run(go)

    def topic_records(self, address: str, topic: str) -> dict[int, tuple[int, int]]:
        """``{partition: (log_start_offset, log_end_offset)}``: what the broker holds, to check counts against."""
        from millpond.client import connect

        async def go() -> dict[int, tuple[int, int]]:
            async with connect(address, client_id="bench-admin") as c:
                d = await c.describe_topic(topic)
                return {p.partition: (p.log_start_offset, p.log_end_offset) for p in d.partitions}

        return trio.run(go)

    def produce(self, address: str, topic: str, plan: ProducePlan, tick: Tick) -> ProduceOutcome:
        return trio.run(_produce, address, topic, plan, tick)

    def consume(self, address: str, topic: str, plan: ConsumePlan, tick: Tick) -> ConsumeOutcome:
        return trio.run(_consume, address, topic, plan, tick)

    def e2e_produce(self, address: str, topic: str, plan: E2EPlan, tick: Tick) -> E2EProduceOutcome:
        return trio.run(_e2e_produce, address, topic, plan, tick)

    def e2e_consume(self, address: str, topic: str, plan: E2EPlan, ready: Callable[[], None]) -> E2EConsumeOutcome:
        return trio.run(_e2e_consume, address, topic, plan, ready)

    def send_await(self, address: str, topic: str, plan: ProducePlan, tick: Tick) -> ProduceOutcome:
        return trio.run(_send_await, address, topic, plan, tick)


TARGET = Millpond()


def _producer_options(batch_bytes: int | None, linger_s: float | None) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if batch_bytes is not None:
        opts["batch_bytes"] = batch_bytes
    if linger_s is not None:
        opts["linger_s"] = linger_s
    return opts


async def _produce(address: str, topic: str, plan: ProducePlan, tick: Tick) -> ProduceOutcome:
    """Send as fast as the client takes records, never more than a few batches ahead of the acks.

    Ack latency is sampled: the first record of every ``sample_every`` is timed from its ``send()`` until the
    loop sees it acknowledged (the loop yields after each group, so this is when the application could know).
    The first record of a group waited longest in it, so the sample leans slow, never fast.
    """
    from millpond.client import connect

    values, nv = plan.values, len(plan.values)
    hist = stats.new_histogram()
    perf, perf_ns = time.perf_counter, time.perf_counter_ns
    every = max(1, plan.sample_every)
    async with connect(address, client_id="bench-producer") as c:
        async with c.producer(**_producer_options(plan.batch_bytes, plan.linger_s)) as p:
            batch_records = (plan.batch_bytes or 262144) // (payload.mean_bytes(values) + 30) + 1
            buffered_max = max(1000, int(BUFFERED_BATCHES * batch_records * plan.partitions))
            send = p.send
            samples: deque[tuple[int, Any]] = deque()
            if plan.start_at:
                await trio.sleep(max(0.0, plan.start_at - perf()))
            keys = tuple(b"key-%d" % k for k in range(getattr(plan, "keys", 0)))
            nk = len(keys)
            first = perf()
            i = 0
            while n := plan.next_batch(i, every, perf() - first):
                if nk:
                    samples.append((perf_ns(), send(topic, values[i % nv], key=keys[i % nk])))
                    for j in range(i + 1, i + n):
                        send(topic, values[j % nv], key=keys[j % nk])
                else:
                    samples.append((perf_ns(), send(topic, values[i % nv])))
                    for j in range(i + 1, i + n):
                        send(topic, values[j % nv])
                i += n
                _drain(samples, hist)
                if p.statistics().records_buffered > buffered_max:
                    try:
                        await samples[0][1]
                    except Exception:
                        break  # counted from statistics() below; the workload aborts on any failure
                    _drain(samples, hist)
                else:
                    await trio.sleep(0)  # let the sender and the reader run
                tick(n)
            await p.flush()
            last = perf()
            _drain(samples, hist, final=True)
            st = p.statistics()
    return ProduceOutcome(records=st.records_sent, payload_bytes=payload.cycled_bytes(values, i), first_send=first,
                          last_ack=last, latency_hdr=stats.encode(hist), failed=i - st.records_sent,
                          error=repr(st.last_error) if st.last_error else "")


async def _send_await(address: str, topic: str, plan: ProducePlan, tick: Tick) -> ProduceOutcome:
    """``await producer.send(topic, value)``, one record at a time, every send timed (bench.targets.awaited); the
    producer has the client's default settings unless the plan sets ``batch_bytes``/``linger_s``."""
    from millpond.client import connect

    hist = stats.new_histogram()
    async with connect(address, client_id="bench-send-await") as c:
        async with c.producer(**_producer_options(plan.batch_bytes, plan.linger_s)) as p:
            out = await awaited.send_loop(p.send, topic, plan.values, plan.count, plan.duration_s,
                                          lambda ns: stats.record_us(hist, ns / 1000), tick)
    return ProduceOutcome(latency_hdr=stats.encode(hist), **out)


def _drain(samples: deque, hist: Any, final: bool = False) -> None:
    now = time.perf_counter_ns()
    while samples and (final or samples[0][1].done()):
        sent, _ = samples.popleft()
        stats.record_us(hist, (now - sent) / 1000)


async def _consume(address: str, topic: str, plan: ConsumePlan, tick: Tick) -> ConsumeOutcome:
    """Read the topic from offset 0 until ``plan.expected`` records; check offsets are dense per partition."""
    from millpond.client import connect

    perf = time.perf_counter
    async with connect(address, client_id="bench-consumer") as c:
        parts = (await c.metadata([topic])).get(topic)
        if parts is None:
            return ConsumeOutcome(0, 0.0, 0.0, f"topic {topic!r} does not exist")
        async with c.consumer(None, auto_offset_reset="earliest") as cons:
            cons.assign([(topic, p) for p in range(parts)])
            nxt = [0] * parts
            n = 0
            first = perf()
            give_up = first + plan.timeout_s
            while n < plan.expected:
                got = await cons.getmany(timeout_s=max(0.0, give_up - perf()))
                if not got:
                    return ConsumeOutcome(n, first, perf(), f"timed out after {plan.timeout_s:g} s with {n} of "
                                                           f"{plan.expected} records")
                err = _check_dense(got, nxt, parts)
                if err:
                    return ConsumeOutcome(n, first, perf(), err)
                n += len(got)
                tick(len(got))
            last = perf()
            extra = await cons.getmany(timeout_s=0.05)
            if extra:
                return ConsumeOutcome(n + len(extra), first, last, f"{len(extra)} record(s) beyond the "
                                                                   f"{plan.expected} expected")
    return ConsumeOutcome(n, first, last)


def _check_dense(got: list, nxt: list[int], parts: int) -> str:
    """Offsets must continue each partition's run exactly: no gap, no repeat. '' if they do."""
    if parts == 1:
        start = nxt[0]
        offsets = [r[2] for r in got]
        if offsets != list(range(start, start + len(offsets))):
            return f"partition 0: offsets not dense from {start}: {_first_mismatch(offsets, start)}"
        nxt[0] = start + len(offsets)
        return ""
    for r in got:
        p, off = r[1], r[2]
        if off != nxt[p]:
            return f"partition {p}: expected offset {nxt[p]}, got {off}"
        nxt[p] = off + 1
    return ""


def _first_mismatch(offsets: list[int], start: int) -> str:
    for k, off in enumerate(offsets):
        if off != start + k:
            return f"expected {start + k}, got {off}"
    return "?"


async def _e2e_produce(address: str, topic: str, plan: E2EPlan, tick: Tick) -> E2EProduceOutcome:
    """Open loop (bench.targets.e2e.Schedule): whatever is due is sent at once, stamped at its ``send()``.
    ``send()`` never waits for the broker, so a slow broker cannot slow the schedule; ``lag_max_s`` shows how far
    the sender itself ever fell behind."""
    from millpond.client import connect

    linger = 0.0 if plan.linger_s is None else plan.linger_s
    async with connect(address, client_id="bench-e2e-producer") as c:
        async with c.producer(**_producer_options(plan.batch_bytes, linger)) as p:
            send = p.send
            sched = e2e.Schedule(plan)
            value = sched.value
            while sched.sent < plan.count:
                todo = sched.due()
                if todo:
                    for j in todo:
                        send(topic, value(j))
                    tick(len(todo))
                    sched.sent = todo.stop
                await trio.sleep(sched.wait_s())
            last_send = time.perf_counter()
            await p.flush()
            last_ack = time.perf_counter()
            st = p.statistics()
    return E2EProduceOutcome(records=st.records_sent, payload_bytes=sched.payload_bytes, first_send=sched.t0,
                             last_send=last_send, last_ack=last_ack, lag_max_s=sched.lag_max_s,
                             failed=st.records_failed, error=repr(st.last_error) if st.last_error else "")


async def _e2e_consume(address: str, topic: str, plan: E2EPlan, ready: Callable[[], None]) -> E2EConsumeOutcome:
    """Consume ``plan.count`` records, each exactly once (by offset and by sequence number), recording
    ``monotonic_ns() - stamp`` for all but the first ``plan.warmup``."""
    from millpond.client import connect

    arrivals = e2e.Arrivals(plan)
    check, mono = arrivals.check, time.monotonic_ns
    n = 0
    async with connect(address, client_id="bench-e2e-consumer") as c:
        parts = (await c.metadata([topic])).get(topic)
        if parts is None:
            return arrivals.outcome(0, f"topic {topic!r} does not exist")
        async with c.consumer(None, auto_offset_reset="earliest", max_wait_s=1.0) as cons:
            cons.assign([(topic, p) for p in range(parts)])
            for p in range(parts):
                await cons.position(topic, p)  # resolved before the producer starts: nothing is missed
            ready()
            nxt = [0] * parts
            give_up = time.perf_counter() + plan.timeout_s
            while n < plan.count:
                got = await cons.getmany(timeout_s=max(0.0, give_up - time.perf_counter()))
                now = mono()
                if not got:
                    return arrivals.outcome(n, f"timed out with {n} of {plan.count} records")
                err = _check_dense(got, nxt, parts)
                if err:
                    return arrivals.outcome(n, err)
                for r in got:
                    err = check(r.value, now)
                    if err:
                        return arrivals.outcome(n, err)
                n += len(got)
    return arrivals.outcome(n)


def _read_port(proc: subprocess.Popen, log_path: Path) -> int:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        line = proc.stdout.readline() if sel.select(START_TIMEOUT_S) else ""
    if not line.startswith("millpond listening on "):
        _stop(proc)
        raise RuntimeError(f"the broker did not start: {line.strip()!r}; its log: {log_path.read_text()[-2000:]}")
    return int(line.rsplit(":", 1)[1])


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM (graceful: fsync, close), SIGKILL if it has not exited within STOP_TIMEOUT_S."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
