# The RabbitMQ side of `millpond bench fanout`: a durable fanout exchange bound to N durable classic queues,
# persistent messages (delivery_mode 2) and publisher confirms (RabbitMQ confirms a persistent message once every
# queue it was routed to has it on disk), published by pika's SelectConnection as the topic workloads' producer
# (bench.targets.rabbitmq: 1000 publishes, then their confirms awaited). The row ends when every queue's depth
# (a passive queue.declare's message count) counts every record. The latency receiver is a consumer with prefetch 1
# on one of the queues (bench.targets.rabbitmq_queues); the sender publishes one message to the exchange and awaits
# its confirm. Must not know how figures are summarised.
from __future__ import annotations

import time
from typing import Any, Callable, Iterator

from millpond.bench.targets import Tick, peerproc
from millpond.bench.targets import rabbitmq as topic_target
from millpond.bench.targets import rabbitmq_queues
from millpond.bench.targets.fanout_kit import POLL_S, BoundedPlan, FanoutOutcome
from millpond.bench.targets.queue_kit import wake_body

QUEUE_ARGS = topic_target.QUEUE_ARGS


class RabbitMQFanout:
    name = "rabbitmq"

    def missing(self) -> str | None:
        return topic_target.TARGET.missing()

    def describe(self) -> dict[str, str]:
        about = topic_target.TARGET.describe()
        about["client"] = (f"pika {peerproc.package_version('pika')} SelectConnection: publishes to a durable "
                           f"fanout exchange, confirms awaited per {peerproc.BATCH_RECORDS}; queue depths by a "
                           "passive queue.declare")
        about["durability"] = ("durable fanout exchange to durable classic queues, persistent messages, publisher "
                               "confirms (a confirm follows the write to disk of every queue routed to)")
        return about

    def server(self, fsync: str, address: str | None) -> Any:
        return topic_target.TARGET.server(fsync, address)

    def setup(self, address: str, name: str, n: int) -> dict[str, Any]:
        queues = [f"{name}-q{i}" for i in range(n)]
        conn = topic_target._blocking(address)
        try:
            ch = conn.channel()
            ch.exchange_declare(name, exchange_type="fanout", durable=True)
            for q in queues:
                ch.queue_declare(q, durable=True, arguments=QUEUE_ARGS)
                ch.queue_bind(q, name)
        finally:
            conn.close()
        return {"exchange": name, "queues": queues}

    def fan_out(self, address: str, fan: dict[str, Any], plan: BoundedPlan, tick: Tick,
                timeout_s: float) -> FanoutOutcome:
        out = _ExchangePublisher(fan["exchange"], plan, tick).run(address)
        error = out.error or (f"{out.failed} publishes failed" if out.failed else "")
        if error:
            return FanoutOutcome(out.records, out.first_send, out.last_ack, out.last_ack, [], error)
        conn = topic_target._blocking(address)
        try:
            ch = conn.channel()
            deadline = time.perf_counter() + timeout_s
            for q in fan["queues"]:  # one at a time: a queue that holds every record keeps them
                while _depths(ch, [q])[0] < out.records:
                    if time.perf_counter() > deadline:
                        held = _depths(ch, fan["queues"])
                        return FanoutOutcome(out.records, out.first_send, out.last_ack, time.perf_counter(), held,
                                             f"after {timeout_s:g} s the queues hold {held} of {out.records} each")
                    time.sleep(POLL_S)
            all_in = time.perf_counter()
            return FanoutOutcome(out.records, out.first_send, out.last_ack, all_in, _depths(ch, fan["queues"]))
        finally:
            conn.close()

    def check(self, address: str, fan: dict[str, Any], records: int) -> str:
        conn = topic_target._blocking(address)
        try:
            held = _depths(conn.channel(), fan["queues"])
        finally:
            conn.close()
        return "" if held == [records] * len(held) else \
            f"the queues hold {held} messages, {records} records were published"

    def latency_receive(self, address: str, fan: dict[str, Any], ready: Callable[[], None],
                        report: Callable[[float], None]) -> str:
        return rabbitmq_queues._WakeReceiver(fan["queues"][0], ready, report).run(address)

    def latency_send(self, address: str, fan: dict[str, Any], rounds: Iterator[int], body_bytes: int, gap_s: float,
                     received: Callable[[], None]) -> str:
        """Per round: wait ``gap_s``, publish one stamped persistent message to the exchange and await its confirm
        (pika's BlockingConnection with confirms), wait for the receiver's report; at the end the message -1."""
        import pika

        props = pika.BasicProperties(delivery_mode=2)
        conn = topic_target._blocking(address)
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            for seq in rounds:
                time.sleep(gap_s)
                ch.basic_publish(fan["exchange"], "", wake_body(seq, body_bytes), props)
                received()
            ch.basic_publish(fan["exchange"], "", wake_body(-1, body_bytes), props)
        finally:
            conn.close()
        return ""


FANOUT_TARGET = RabbitMQFanout()


def _depths(ch: Any, queues: list[str]) -> list[int]:
    return [ch.queue_declare(q, passive=True, durable=True, arguments=QUEUE_ARGS).method.message_count
            for q in queues]


class _ExchangePublisher(topic_target._Publisher):
    """The topic workloads' publisher (batches of BATCH_RECORDS, their confirms awaited), to the fanout exchange
    named ``exchange`` instead of a queue."""

    def _publish_batch(self) -> None:
        plan = self.plan
        n = plan.next_batch(self.sent, peerproc.BATCH_RECORDS, time.perf_counter() - self.first)
        if not n:
            self.last = time.perf_counter()
            self.finish()
            return
        values, nv, publish, props, x = plan.values, len(plan.values), self.ch.basic_publish, self.props, self.queue
        for chunk in self.sampler.chunks(self.sent, self.sent + n):
            for j in chunk:
                v = values[j % nv]
                publish(x, "", v, props)
                self.payload += len(v)
        self.sent += n
        self.batch = n
