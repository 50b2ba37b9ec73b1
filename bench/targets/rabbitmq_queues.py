# The RabbitMQ side of `millpond bench queues`: a durable classic queue, persistent messages (delivery_mode 2),
# publisher confirms and manual acks, driven by pika's SelectConnection like the topic workloads
# (bench.targets.rabbitmq, whose server, sessions and confirm bookkeeping this reuses). AMQP has no batch verbs, so
# "batch N" means: publish N, and keep at most ``in_flight`` such groups unconfirmed; receive with a consumer whose
# basic.qos prefetch is ``in_flight`` x N and ack every Nth delivery with multiple=True (RabbitMQ's way to settle a
# batch). Push: prefetch N, one basic.ack per message. Acks have no answer in AMQP, so a receive run ends at the
# CancelOk of its consumer, which the broker sends after handling every ack before it on the channel. The wake-up
# receiver is a consumer with prefetch 1 (RabbitMQ's way to wait for a message; basic.get does not wait).
# Must not know how figures are summarised.
from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Iterator

from millpond.bench import stats
from millpond.bench.targets import Tick, peerproc
from millpond.bench.targets import rabbitmq as topic_target
from millpond.bench.targets.queue_kit import Bodies, Claims, QueueOutcome, QueuePlan, Seen, Ticker, wake_body, \
    wake_latency_us

QUEUE_ARGS = topic_target.QUEUE_ARGS


class RabbitMQQueues:
    name = "rabbitmq"

    def missing(self) -> str | None:
        return topic_target.TARGET.missing()

    def describe(self) -> dict[str, str]:
        about = topic_target.TARGET.describe()
        about["client"] = (f"pika {peerproc.package_version('pika')} SelectConnection, publisher confirms, manual "
                           "acks (a batch: N publishes / an ack with multiple=True every N deliveries), basic.qos "
                           "prefetch")
        return about

    def server(self, fsync: str, address: str | None) -> Any:
        return topic_target.TARGET.server(fsync, address)

    def create(self, address: str, queue: str) -> None:
        topic_target.TARGET.create_topic(address, queue, 1)

    def depth(self, address: str, queue: str) -> int:
        return topic_target.TARGET.topic_records(address, queue)[0][1]

    def send(self, address: str, queue: str, plan: QueuePlan, tick: Tick) -> QueueOutcome:
        return _Sender(queue, plan, tick).run(address)

    def receive_delete(self, address: str, queue: str, plan: QueuePlan, tick: Tick) -> QueueOutcome:
        return _Receiver(queue, plan, tick, prefetch=plan.in_flight * plan.batch, ack_every=plan.batch).run(address)

    def push(self, address: str, queue: str, plan: QueuePlan, tick: Tick) -> QueueOutcome:
        return _Receiver(queue, plan, tick, prefetch=plan.prefetch, ack_every=1).run(address)

    def wake_receive(self, address: str, queue: str, ready: Callable[[], None],
                     report: Callable[[float], None]) -> str:
        return _WakeReceiver(queue, ready, report).run(address)

    def wake_send(self, address: str, queue: str, rounds: Iterator[int], body_bytes: int, gap_s: float,
                  received: Callable[[], None]) -> str:
        """Per round: wait ``gap_s``, publish one stamped persistent message and wait for its confirm (pika's
        BlockingConnection with confirms), wait for the receiver's report; at the end the message numbered -1."""
        import pika

        props = pika.BasicProperties(delivery_mode=2)
        conn = topic_target._blocking(address)
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            for seq in rounds:
                time.sleep(gap_s)
                ch.basic_publish("", queue, wake_body(seq, body_bytes), props)
                received()
            ch.basic_publish("", queue, wake_body(-1, body_bytes), props)
        finally:
            conn.close()
        return ""


QUEUE_TARGET = RabbitMQQueues()


class _Sender(topic_target._Session):
    """Publish ``batch`` persistent messages at a time, at most ``in_flight`` batches unconfirmed; a batch is
    timed from its first publish to the confirm that covers its last."""

    def __init__(self, queue: str, plan: QueuePlan, tick: Tick) -> None:
        super().__init__()
        import pika

        self.props = pika.BasicProperties(delivery_mode=2)
        self.queue, self.plan = queue, plan
        self.bodies, self.claims, self.ticker = Bodies(plan.body_bytes), Claims(plan), Ticker(tick)
        self.confirms = topic_target._Confirms()
        self.hist = stats.new_histogram()
        self.batches: deque[tuple[int, int, int]] = deque()  # (last delivery tag, messages, perf_counter_ns)
        self.published = self.confirmed = 0
        self.last = 0.0
        self.drained = False
        self.timeout_s = (plan.duration_s or 0) + 120

    def run(self, address: str) -> QueueOutcome:
        self.open_and_run(address)
        self.ticker.flush()
        return QueueOutcome(self.confirmed, self.claims.first, self.last or time.perf_counter(),
                            stats.encode(self.hist), self.error)

    def opened(self, ch: Any) -> None:
        ch.confirm_delivery(self._on_confirm, callback=lambda _: self._fill())

    def _fill(self) -> None:
        while not self.drained and len(self.batches) < self.plan.in_flight:
            seqs = self.claims.claim(self.plan.batch)
            if not seqs:
                self.drained = True
                break
            t0 = time.perf_counter_ns()
            publish, body = self.ch.basic_publish, self.bodies.body
            for s in seqs:
                publish("", self.queue, body(s), self.props)
            self.published += len(seqs)
            self.batches.append((self.published, len(seqs), t0))
        if self.drained and not self.batches:
            self.finish()

    def _on_confirm(self, frame: Any) -> None:
        self.confirms.on_confirm(frame)
        if self.confirms.nacked:
            self.fail(f"{self.confirms.nacked} publish(es) nacked by the broker")
            return
        now = time.perf_counter_ns()
        while self.batches and self.batches[0][0] <= self.confirms.floor:
            _, n, t0 = self.batches.popleft()
            stats.record_us(self.hist, (now - t0) / 1000)
            self.confirmed += n
            self.ticker(n)
        self.last = time.perf_counter()
        self._fill()


class _Receiver(topic_target._Session):
    """A consumer with basic.qos ``prefetch``, acking every ``ack_every``-th delivery with multiple=True, until
    ``plan.count`` messages; ends at its consumer's CancelOk (every ack before it handled)."""

    def __init__(self, queue: str, plan: QueuePlan, tick: Tick, *, prefetch: int, ack_every: int) -> None:
        super().__init__()
        self.queue, self.plan, self.prefetch, self.ack_every = queue, plan, prefetch, ack_every
        self.expected = plan.count or 0
        self.seen, self.ticker = Seen(self.expected), Ticker(tick)
        self.timeout_s = plan.timeout_s
        self.n = 0
        self.first = self.last = 0.0
        self.tag = ""

    def run(self, address: str) -> QueueOutcome:
        self.open_and_run(address)
        self.ticker.flush()
        return QueueOutcome(self.n, self.first, self.last or time.perf_counter(), b"", self.error)

    def opened(self, ch: Any) -> None:
        self.first = time.perf_counter()
        ch.basic_qos(prefetch_count=self.prefetch, callback=lambda _: self._consume())

    def _consume(self) -> None:
        self.tag = self.ch.basic_consume(self.queue, self._on_message)

    def _on_message(self, ch: Any, method: Any, props: Any, body: bytes) -> None:
        if self.n >= self.expected:
            self.fail(f"more than the {self.expected} messages sent")
            return
        problem = self.seen.add(body)
        if problem:
            self.fail(problem)
            return
        self.n += 1
        self.ticker(1)
        if self.n % self.ack_every == 0 or self.n == self.expected:
            ch.basic_ack(method.delivery_tag, multiple=self.ack_every > 1)
        if self.n == self.expected:
            ch.basic_cancel(self.tag, callback=lambda _: self._done())

    def _done(self) -> None:
        self.last = time.perf_counter()
        self.finish()


class _WakeReceiver(topic_target._Session):
    """A consumer with prefetch 1: report each message's µs since its send call, ack it; until the message
    numbered -1."""

    timeout_s = 3600.0  # the sender decides when the rounds end

    def __init__(self, queue: str, ready: Callable[[], None], report: Callable[[float], None]) -> None:
        super().__init__()
        self.queue, self.ready, self.report = queue, ready, report

    def run(self, address: str) -> str:
        self.open_and_run(address)
        return self.error

    def opened(self, ch: Any) -> None:
        ch.basic_qos(prefetch_count=1, callback=lambda _: ch.basic_consume(
            self.queue, self._on_message, callback=lambda _: self.ready()))

    def _on_message(self, ch: Any, method: Any, props: Any, body: bytes) -> None:
        latency_us, seq = wake_latency_us(body)
        ch.basic_ack(method.delivery_tag)
        if seq < 0:
            self.finish()
        else:
            self.report(latency_us)
