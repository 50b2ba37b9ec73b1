# The NATS JetStream peer: `nats-server -js` (Debian package) on a free 127.0.0.1 port with a temporary store
# directory, file storage, one replica; driven by nats-py as bench/peers/README.md describes: publish_async with the
# acks awaited per 1000 (send_await: one publish awaited at a time), a durable pull consumer fetching 1000 at a time
# with one ack per message, and for e2e a durable push consumer (a pull fetch of more than one lingers until its
# batch fills, which would measure that timeout, not the broker). A topic is one stream with one subject; one
# partition only. Must not know how figures are summarised.
from __future__ import annotations

import asyncio
import shutil
import socket
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
FSYNC_LABEL = "file store, no fsync before ack"
ACK_SETTLE_S = 10  # how long the consume check waits for the server to apply the last acks


class NatsJetStream:
    name = "nats"

    def missing(self) -> str | None:
        return peerproc.missing([("nats-server", "nats-server")], [("nats", "nats-py")])

    def unsupported(self, params: Params) -> str | None:
        if params.partitions != 1:
            return "NATS JetStream runs with 1 partition (one stream, one subject) only"
        return None

    def describe(self) -> dict[str, str]:
        return {
            "server": peerproc.version_of([peerproc.find_binary("nats-server") or "nats-server", "--version"])
            .replace(": v", " "),
            "client": f"nats-py {peerproc.package_version('nats-py')}, publish_async with acks awaited per "
                      f"{peerproc.BATCH_RECORDS} (send_await: one publish awaited at a time), pull fetch "
                      f"{peerproc.BATCH_RECORDS}; e2e: push consumer",
            "durability": "JetStream file storage, R1: the server syncs its files on a timer (every 2 min by "
                          "default), not before the ack; no fsync seen in a 30k-record run (bench/peers/README.md)",
        }

    @contextmanager
    def server(self, fsync: str, address: str | None) -> Iterator[LocalServer]:
        tmp = Path(tempfile.mkdtemp(prefix="millpond-bench-nats-"))
        port = peerproc.free_port()
        argv = [peerproc.find_binary("nats-server") or "nats-server", "-js", "-sd", str(tmp / "store"),
                "-a", "127.0.0.1", "-p", str(port)]
        try:
            proc = peerproc.start(self.name, argv, log_path=tmp / "server.log", timeout_s=START_TIMEOUT_S,
                                  ready=lambda: _answers(port))
            try:
                yield LocalServer(f"127.0.0.1:{port}", FSYNC_LABEL, proc.pid)
            finally:
                peerproc.stop(proc)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def create_topic(self, address: str, topic: str, partitions: int) -> None:
        async def go(js: Any) -> None:
            from nats.js.api import StorageType

            await js.add_stream(name=topic, subjects=[topic], storage=StorageType.FILE, num_replicas=1)

        _run(address, go)

    def topic_records(self, address: str, topic: str) -> dict[int, tuple[int, int]]:
        async def go(js: Any) -> dict[int, tuple[int, int]]:
            st = (await js.stream_info(topic)).state
            return {0: (st.first_seq - 1 if st.messages else st.last_seq, st.last_seq)}

        return _run(address, go)

    def produce(self, address: str, topic: str, plan: ProducePlan, tick: Tick) -> ProduceOutcome:
        return _run(address, lambda js: _produce(js, topic, plan, tick))

    def consume(self, address: str, topic: str, plan: ConsumePlan, tick: Tick) -> ConsumeOutcome:
        return _run(address, lambda js: _consume(js, topic, plan, tick))

    def e2e_produce(self, address: str, topic: str, plan: E2EPlan, tick: Tick) -> E2EProduceOutcome:
        return _run(address, lambda js: _e2e_produce(js, topic, plan, tick))

    def e2e_consume(self, address: str, topic: str, plan: E2EPlan, ready: Callable[[], None]) -> E2EConsumeOutcome:
        return _run(address, lambda js: _e2e_consume(js, topic, plan, ready))

    def send_await(self, address: str, topic: str, plan: ProducePlan, tick: Tick) -> ProduceOutcome:
        """``await js.publish(subject, value)`` one at a time: each waits for the stream's PubAck."""
        async def go(js: Any) -> ProduceOutcome:
            hist = stats.new_histogram()
            out = await awaited.send_loop(js.publish, topic, plan.values, plan.count, plan.duration_s,
                                          lambda ns: stats.record_us(hist, ns / 1000), tick)
            return ProduceOutcome(latency_hdr=stats.encode(hist), **out)

        return _run(address, go)


TARGET = NatsJetStream()


def _answers(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
        return s.recv(4).startswith(b"INFO")


def _run(address: str, job: Callable[[Any], Any]) -> Any:
    """Connect, run ``job(jetstream context)`` on a fresh asyncio loop, drain and close."""
    import nats

    async def main() -> Any:
        nc = await nats.connect(f"nats://{address}", allow_reconnect=False, connect_timeout=5)
        try:
            return await job(nc.jetstream(timeout=30))
        finally:
            await nc.drain()

    return asyncio.run(main())


async def _produce(js: Any, topic: str, plan: ProducePlan, tick: Tick) -> ProduceOutcome:
    values, nv = plan.values, len(plan.values)
    sampler = peerproc.Sampler(plan.sample_every)
    publish = js.publish_async
    perf = time.perf_counter
    if plan.start_at:
        await asyncio.sleep(max(0.0, plan.start_at - perf()))
    first = perf()
    i = payload = failed = 0
    error = ""
    while n := plan.next_batch(i, peerproc.BATCH_RECORDS, perf() - first):
        futures = []
        for chunk in sampler.chunks(i, i + n):
            for j in chunk:
                v = values[j % nv]
                futures.append(await publish(topic, v))
                payload += len(v)
        results = await asyncio.gather(*futures, return_exceptions=True)
        bad = [r for r in results if isinstance(r, BaseException)]
        if bad:
            failed, error = len(bad), repr(bad[0])
            i += n - len(bad)
            break
        sampler.acked()
        i += n
        tick(n)
    return ProduceOutcome(records=i, payload_bytes=payload, first_send=first, last_ack=perf(),
                          latency_hdr=sampler.encoded(), failed=failed, error=error)


async def _consume(js: Any, topic: str, plan: ConsumePlan, tick: Tick) -> ConsumeOutcome:
    """Durable pull consumer, AckExplicit, one ack per message; stream sequences must be dense from 1."""
    perf = time.perf_counter
    first = perf()
    sub = await js.pull_subscribe(topic, durable="bench-consume", stream=topic)
    n = 0
    give_up = first + plan.timeout_s
    while n < plan.expected:
        try:  # never ask for more than is left: a fetch of more lingers until its timeout
            msgs = await sub.fetch(min(peerproc.BATCH_RECORDS, plan.expected - n),
                                   timeout=max(0.1, give_up - perf()))
        except asyncio.TimeoutError:
            return ConsumeOutcome(n, first, perf(), f"timed out with {n} of {plan.expected} records")
        if msgs[0].metadata.sequence.stream != n + 1 or msgs[-1].metadata.sequence.stream != n + len(msgs):
            return ConsumeOutcome(n, first, perf(), f"stream sequences not dense after {n}")
        for m in msgs:
            await m.ack()
        n += len(msgs)
        tick(len(msgs))
    last = perf()
    # Acks are fire-and-forget and JetStream applies them asynchronously: wait (bounded, not timed) for the ack
    # floor to reach the last record. Anything still pending delivery is a record beyond the expected.
    await js._nc.flush()
    settle_by = perf() + ACK_SETTLE_S
    while True:
        info = await sub.consumer_info()
        if info.num_pending or info.ack_floor.stream_seq == plan.expected or perf() > settle_by:
            break
        await asyncio.sleep(0.05)
    if info.num_pending or info.ack_floor.stream_seq != plan.expected:
        return ConsumeOutcome(n, first, last, f"after the run: {info.num_pending} pending, ack floor "
                                              f"{info.ack_floor.stream_seq} (expected {plan.expected})")
    return ConsumeOutcome(n, first, last)


async def _e2e_produce(js: Any, topic: str, plan: E2EPlan, tick: Tick) -> E2EProduceOutcome:
    """Open loop (bench.targets.e2e.Schedule): whatever is due is published at once (acks not awaited in the
    loop, checked at the end)."""
    futures = []
    sched = e2e.Schedule(plan)
    while sched.sent < plan.count:
        todo = sched.due()
        if todo:
            for j in todo:
                futures.append(await js.publish_async(topic, sched.value(j)))
            tick(len(todo))
            sched.sent = todo.stop
        await asyncio.sleep(sched.wait_s())
    last_send = time.perf_counter()
    results = await asyncio.gather(*futures, return_exceptions=True)
    last_ack = time.perf_counter()
    bad = [r for r in results if isinstance(r, BaseException)]
    return E2EProduceOutcome(records=plan.count - len(bad), payload_bytes=sched.payload_bytes, first_send=sched.t0,
                             last_send=last_send, last_ack=last_ack, lag_max_s=sched.lag_max_s, failed=len(bad),
                             error=repr(bad[0]) if bad else "")


async def _e2e_consume(js: Any, topic: str, plan: E2EPlan, ready: Callable[[], None]) -> E2EConsumeOutcome:
    arrivals = e2e.Arrivals(plan)
    state = {"n": 0, "error": ""}
    done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        err = arrivals.check(msg.data, time.monotonic_ns())
        if err:
            state["error"] = err
            done.set()
            return
        await msg.ack()
        state["n"] += 1
        if state["n"] == plan.count:
            done.set()

    sub = await js.subscribe(topic, durable="bench-e2e", stream=topic, cb=on_msg, manual_ack=True)
    ready()
    try:
        await asyncio.wait_for(done.wait(), plan.timeout_s)
    except asyncio.TimeoutError:
        state["error"] = f"timed out with {state['n']} of {plan.count} records"
    await sub.unsubscribe()
    return arrivals.outcome(state["n"], state["error"])
