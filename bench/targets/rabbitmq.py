# The RabbitMQ peer: `rabbitmq-server` (Debian package) started as a plain process of ours (not the system service)
# with its own node name, ports, epmd and data directory under a temporary directory; driven by pika's
# SelectConnection as bench/peers/README.md describes: a durable classic queue, persistent messages, publisher confirms
# awaited per 1000; basic_consume with prefetch 1000 and a multiple-ack every 500; for e2e one ack per message and a
# producer paced by ioloop timers. Start-up takes seconds and is bounded: a node that does not come up is skipped
# with a message. A topic is one queue; one partition only. Must not know how figures are summarised.
from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from millpond.bench import payload
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
from millpond.bench.targets import LocalServer, Tick, e2e, peerproc

START_TIMEOUT_S = 90
FSYNC_LABEL = "durable queue, persistent, confirms"
PREFETCH = 1000
ACK_EVERY = 500
QUEUE_ARGS = {"x-queue-type": "classic"}
LIB_BIN = "/usr/lib/rabbitmq/bin"


class RabbitMQ:
    name = "rabbitmq"

    def missing(self) -> str | None:
        return peerproc.missing([("rabbitmq-server", "rabbitmq-server"), ("epmd", "erlang-base")],
                                [("pika", "pika")])

    def unsupported(self, params: Params) -> str | None:
        if params.partitions != 1:
            return "RabbitMQ runs with 1 partition (one queue) only"
        return None

    def describe(self) -> dict[str, str]:
        pkg = peerproc.version_of(["dpkg-query", "-W", "-f", "${Version}", "rabbitmq-server"])
        return {
            "server": f"RabbitMQ {pkg} (Debian package), classic queue",
            "client": f"pika {peerproc.package_version('pika')} SelectConnection, confirms awaited per "
                      f"{peerproc.BATCH_RECORDS}, prefetch {PREFETCH}, ack every {ACK_EVERY} (e2e: every message)",
            "durability": "durable classic queue, persistent messages, publisher confirms: a confirm follows the "
                          "write to disk (57 fsyncs seen for 20k records, bench/peers/README.md)",
        }

    @contextmanager
    def server(self, fsync: str, address: str | None) -> Iterator[LocalServer]:
        tmp = Path(tempfile.mkdtemp(prefix="millpond-bench-rabbitmq-"))
        port, dist_port, epmd_port = peerproc.free_port(), peerproc.free_port(), peerproc.free_port()
        (tmp / "enabled_plugins").write_text("[].\n")
        env = {**os.environ, "HOME": str(tmp), "RABBITMQ_NODE_PORT": str(port),
               "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_DIST_PORT": str(dist_port),
               "ERL_EPMD_PORT": str(epmd_port), "ERL_EPMD_ADDRESS": "127.0.0.1",
               "RABBITMQ_NODENAME": f"millpond-bench-{port}@localhost", "RABBITMQ_MNESIA_BASE": str(tmp / "mnesia"),
               "RABBITMQ_LOG_BASE": str(tmp / "log"), "RABBITMQ_ENABLED_PLUGINS_FILE": str(tmp / "enabled_plugins"),
               "RABBITMQ_CONFIG_FILE": str(tmp / "rabbitmq"), "RABBITMQ_ADVANCED_CONFIG_FILE": str(tmp / "advanced"),
               "RABBITMQ_CONF_ENV_FILE": str(tmp / "rabbitmq-env.conf"), "RABBITMQ_PID_FILE": str(tmp / "pid"),
               "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}"}
        epmd = rabbit = None
        try:
            # our own epmd on our own port (Erlang would otherwise start a shared daemon and leave it running)
            epmd = peerproc.start("epmd", [peerproc.find_binary("epmd") or "epmd", "-port", str(epmd_port),
                                           "-address", "127.0.0.1"], log_path=tmp / "epmd.log", timeout_s=10,
                                  ready=lambda: peerproc.port_open(epmd_port), env=env)
            rabbit = peerproc.start(self.name, [_server_script()],
                                    log_path=tmp / "server.log", timeout_s=START_TIMEOUT_S, env=env, cwd=str(tmp),
                                    ready=lambda: _blocking(f"127.0.0.1:{port}").close() is None)
            beam = peerproc.child_pid(rabbit.pid, "beam.smp") or rabbit.pid
            yield LocalServer(f"127.0.0.1:{port}", FSYNC_LABEL, beam)
        finally:
            if rabbit is not None:
                peerproc.stop(rabbit, timeout_s=30)
            if epmd is not None:
                peerproc.stop(epmd)
            shutil.rmtree(tmp, ignore_errors=True)

    def create_topic(self, address: str, topic: str, partitions: int) -> None:
        conn = _blocking(address)
        try:
            conn.channel().queue_declare(topic, durable=True, arguments=QUEUE_ARGS)
        finally:
            conn.close()

    def topic_records(self, address: str, topic: str) -> dict[int, tuple[int, int]]:
        conn = _blocking(address)
        try:
            ok = conn.channel().queue_declare(topic, passive=True, durable=True, arguments=QUEUE_ARGS)
            return {0: (0, ok.method.message_count)}
        finally:
            conn.close()

    def produce(self, address: str, topic: str, plan: ProducePlan, tick: Tick) -> ProduceOutcome:
        return _Publisher(topic, plan, tick).run(address)

    def consume(self, address: str, topic: str, plan: ConsumePlan, tick: Tick) -> ConsumeOutcome:
        return _Consumer(topic, plan, tick).run(address)

    def e2e_produce(self, address: str, topic: str, plan: E2EPlan, tick: Tick) -> E2EProduceOutcome:
        return _E2EPublisher(topic, plan, tick).run(address)

    def e2e_consume(self, address: str, topic: str, plan: E2EPlan, ready: Callable[[], None]) -> E2EConsumeOutcome:
        return _E2EConsumer(topic, plan, ready).run(address)


TARGET = RabbitMQ()


def _server_script() -> str:
    """The script itself, not Debian's /usr/sbin wrapper, which switches to the rabbitmq user (who cannot write to
    our temporary directory) and to its system-wide configuration."""
    direct = Path(LIB_BIN) / "rabbitmq-server"
    return str(direct) if direct.exists() else peerproc.find_binary("rabbitmq-server") or "rabbitmq-server"


def _params(address: str) -> Any:
    import pika

    host, port = address.rsplit(":", 1)
    return pika.ConnectionParameters(host=host, port=int(port), connection_attempts=1, socket_timeout=5,
                                     credentials=pika.PlainCredentials("guest", "guest"))


def _blocking(address: str) -> Any:
    import pika

    return pika.BlockingConnection(_params(address))


class _Session:
    """One SelectConnection and one channel, driven by callbacks until ``finish()``; ``run()`` blocks till then.
    Subclasses start their work in ``opened(channel)``; ``fail()`` records the first error and closes."""

    timeout_s = 60.0

    def __init__(self) -> None:
        self.error = ""
        self.conn: Any = None
        self.ch: Any = None
        self._closing = False

    def open_and_run(self, address: str) -> None:
        import pika

        def on_open_error(conn: Any, exc: Any) -> None:
            self.error = self.error or f"connection failed: {exc!r}"
            conn.ioloop.stop()

        self.conn = pika.SelectConnection(
            _params(address), on_open_callback=lambda c: c.channel(on_open_callback=self._channel_open),
            on_open_error_callback=on_open_error, on_close_callback=lambda c, reason: c.ioloop.stop())
        self.conn.ioloop.call_later(self.timeout_s, lambda: self.fail(f"timed out after {self.timeout_s:g} s"))
        self.conn.ioloop.start()
        self.conn.ioloop.close()  # its wake-up socket pair; pika leaves it open otherwise

    def _channel_open(self, ch: Any) -> None:
        self.ch = ch
        ch.add_on_close_callback(lambda c, reason: self.fail(f"channel closed: {reason!r}") if not self._closing
                                 else None)
        self.opened(ch)

    def opened(self, ch: Any) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        if not self._closing:
            self._closing = True
            if self.conn.is_open:
                self.conn.close()
            else:
                self.conn.ioloop.stop()

    def fail(self, message: str) -> None:
        self.error = self.error or message
        self.finish()


class _Confirms:
    """How many publishes the broker confirmed: delivery tags count from 1, an ack may cover all tags up to its
    own (``multiple``)."""

    def __init__(self) -> None:
        self.floor = 0
        self.above: set[int] = set()
        self.nacked = 0

    def on_confirm(self, frame: Any) -> None:
        m = frame.method
        if m.NAME == "Basic.Nack":
            self.nacked += 1 if not m.multiple else max(1, m.delivery_tag - self.floor - len(self.above))
        if m.multiple:
            self.floor = max(self.floor, m.delivery_tag)
            self.above = {t for t in self.above if t > self.floor}
        elif m.delivery_tag == self.floor + 1:
            self.floor += 1
        else:
            self.above.add(m.delivery_tag)
        while self.above and self.floor + 1 in self.above:
            self.floor += 1
            self.above.discard(self.floor)

    @property
    def count(self) -> int:
        return self.floor + len(self.above)


class _Publisher(_Session):
    def __init__(self, queue: str, plan: ProducePlan, tick: Tick) -> None:
        super().__init__()
        import pika

        self.props = pika.BasicProperties(delivery_mode=2)  # persistent
        self.queue, self.plan, self.tick = queue, plan, tick
        self.sampler = peerproc.Sampler(plan.sample_every)
        self.confirms = _Confirms()
        self.sent = self.batch = self.payload = 0
        self.first = self.last = 0.0
        self.timeout_s = (plan.duration_s or 0) + 120

    def run(self, address: str) -> ProduceOutcome:
        self.open_and_run(address)
        failed = self.sent - self.confirms.count + self.confirms.nacked
        return ProduceOutcome(records=self.confirms.count - self.confirms.nacked, payload_bytes=self.payload,
                              first_send=self.first, last_ack=self.last or time.perf_counter(),
                              latency_hdr=self.sampler.encoded(), failed=failed, error=self.error)

    def opened(self, ch: Any) -> None:
        ch.confirm_delivery(self._on_confirm, callback=lambda _: self._start())

    def _start(self) -> None:
        self.conn.ioloop.call_later(max(0.0, self.plan.start_at - time.perf_counter()), self._begin)

    def _begin(self) -> None:
        self.first = time.perf_counter()
        self._publish_batch()

    def _publish_batch(self) -> None:
        plan = self.plan
        n = plan.next_batch(self.sent, peerproc.BATCH_RECORDS, time.perf_counter() - self.first)
        if not n:
            self.last = time.perf_counter()
            self.finish()
            return
        values, nv, publish, props, q = plan.values, len(plan.values), self.ch.basic_publish, self.props, self.queue
        for chunk in self.sampler.chunks(self.sent, self.sent + n):
            for j in chunk:
                v = values[j % nv]
                publish("", q, v, props)
                self.payload += len(v)
        self.sent += n
        self.batch = n

    def _on_confirm(self, frame: Any) -> None:
        self.confirms.on_confirm(frame)
        if self.confirms.nacked:
            self.fail(f"{self.confirms.nacked} publish(es) nacked by the broker")
        elif self.confirms.count == self.sent:
            self.sampler.acked()
            self.tick(self.batch)
            self._publish_batch()


class _Consumer(_Session):
    def __init__(self, queue: str, plan: ConsumePlan, tick: Tick) -> None:
        super().__init__()
        self.queue, self.plan, self.tick = queue, plan, tick
        self.timeout_s = plan.timeout_s
        self.n = self.extra = 0
        self.first = self.last = 0.0
        self.tag = ""

    def run(self, address: str) -> ConsumeOutcome:
        self.open_and_run(address)
        if not self.error and self.extra:
            self.error = f"{self.extra} record(s) beyond the {self.plan.expected} expected"
        return ConsumeOutcome(self.n, self.first, self.last or time.perf_counter(), self.error)

    def opened(self, ch: Any) -> None:
        ch.basic_qos(prefetch_count=PREFETCH, callback=lambda _: self._consume())

    def _consume(self) -> None:
        self.first = time.perf_counter()
        self.tag = self.ch.basic_consume(self.queue, self._on_message)

    def _on_message(self, ch: Any, method: Any, props: Any, body: bytes) -> None:
        self.n += 1
        if self.n > self.plan.expected:
            self.extra += 1
            return
        if self.n % ACK_EVERY == 0 or self.n == self.plan.expected:
            ch.basic_ack(method.delivery_tag, multiple=True)
            self.tick(ACK_EVERY if self.n % ACK_EVERY == 0 else self.n % ACK_EVERY)
        if self.n == self.plan.expected:
            self.last = time.perf_counter()
            ch.basic_cancel(self.tag, callback=lambda _: self._check_empty())

    def _check_empty(self) -> None:
        def counted(frame: Any) -> None:
            self.extra += frame.method.message_count
            self.finish()

        self.ch.queue_declare(self.queue, passive=True, durable=True, arguments=QUEUE_ARGS, callback=counted)


class _E2EPublisher(_Session):
    """Open loop (bench.targets.e2e.Schedule) paced by ioloop timers: whatever is due is published at once,
    confirms kept outstanding."""

    def __init__(self, queue: str, plan: E2EPlan, tick: Tick) -> None:
        super().__init__()
        import pika

        self.props = pika.BasicProperties(delivery_mode=2)
        self.queue, self.plan, self.tick = queue, plan, tick
        self.timeout_s = plan.timeout_s
        self.confirms = _Confirms()
        self.sched: e2e.Schedule | None = None  # made when the channel is ready: its t0 is the first send
        self.last_send = self.last_ack = 0.0

    def run(self, address: str) -> E2EProduceOutcome:
        self.open_and_run(address)
        sched = self.sched
        return E2EProduceOutcome(records=self.confirms.count - self.confirms.nacked,
                                 payload_bytes=payload.cycled_bytes(self.plan.values, self.plan.count),
                                 first_send=sched.t0 if sched else 0.0, last_send=self.last_send,
                                 last_ack=self.last_ack or time.perf_counter(),
                                 lag_max_s=sched.lag_max_s if sched else 0.0,
                                 failed=self.plan.count - self.confirms.count + self.confirms.nacked, error=self.error)

    def opened(self, ch: Any) -> None:
        ch.confirm_delivery(self._on_confirm, callback=lambda _: self._begin())

    def _begin(self) -> None:
        self.sched = e2e.Schedule(self.plan)
        self._send_due()

    def _send_due(self) -> None:
        sched = self.sched
        todo = sched.due()
        if todo:
            publish, value = self.ch.basic_publish, sched.value
            for j in todo:
                publish("", self.queue, value(j), self.props)
            self.tick(len(todo))
            sched.sent = todo.stop
        if sched.sent < self.plan.count:
            self.conn.ioloop.call_later(sched.wait_s(), self._send_due)
        else:
            self.last_send = time.perf_counter()
            self._maybe_done()

    def _on_confirm(self, frame: Any) -> None:
        self.confirms.on_confirm(frame)
        if self.confirms.nacked:
            self.fail(f"{self.confirms.nacked} publish(es) nacked by the broker")
        else:
            self._maybe_done()

    def _maybe_done(self) -> None:
        if self.sched and self.sched.sent == self.plan.count and self.confirms.count == self.sched.sent:
            self.last_ack = time.perf_counter()
            self.finish()


class _E2EConsumer(_Session):
    def __init__(self, queue: str, plan: E2EPlan, ready: Callable[[], None]) -> None:
        super().__init__()
        self.queue, self.plan, self.ready = queue, plan, ready
        self.timeout_s = plan.timeout_s + 30  # the producer has not started yet
        self.arrivals = e2e.Arrivals(plan)
        self.n = 0

    def run(self, address: str) -> E2EConsumeOutcome:
        self.open_and_run(address)
        if not self.error and self.n != self.plan.count:
            self.error = f"stopped with {self.n} of {self.plan.count} records"
        return self.arrivals.outcome(self.n, self.error)

    def opened(self, ch: Any) -> None:
        ch.basic_qos(prefetch_count=PREFETCH, callback=lambda _: ch.basic_consume(
            self.queue, self._on_message, callback=lambda _: self.ready()))

    def _on_message(self, ch: Any, method: Any, props: Any, body: bytes) -> None:
        err = self.arrivals.check(body, time.monotonic_ns())
        if err:
            self.fail(err)
            return
        ch.basic_ack(method.delivery_tag)
        self.n += 1
        if self.n == self.plan.count:
            self.finish()
