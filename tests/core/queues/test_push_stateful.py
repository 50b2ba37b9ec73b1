# A hypothesis stateful model of push delivery: two subscriptions with small windows on one queue (standard or FIFO)
# under any sequence of sends, pushes, acks, nacks (at once or delayed), time passing (visibility timeouts ending),
# unsubscribes and closed connections. Whatever happens, no subscription truly holds more than its prefetch (a
# delivery in flight under the receive count it was pushed with), the broker's count covers what it holds, what a
# closed or cancelled subscription held is visible at once, and a FIFO group is pushed oldest first, only while
# nothing of it is in flight, so one subscription at most holds it.
from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from millpond.broker.core.outcomes import Answer, Context, Wait
from millpond.broker.core.queues.api import CreateQueue, QueueApi, SendMessage
from millpond.broker.core.queues.push import (
    PushApi,
    QueueAck,
    QueueDeliver,
    QueueNack,
    QueueSubscribe,
    QueueUnsubscribe,
)
from millpond.broker.core.queues.queue import IN_FLIGHT, VISIBLE

from queuekit import ms

VISIBILITY_S = 10.0
PREFETCH = (2, 3)


def ctx(now: float) -> Context:
    return Context(ms(now), now, "model", "127.0.0.1")


def seq_of(handle: str) -> tuple[int, int]:
    _, seq, count = handle.split(":")
    return int(seq), int(count)


class PushModel(RuleBasedStateMachine):
    @initialize(fifo=st.booleans())
    def start(self, fifo: bool) -> None:
        self.now = 0.0
        self.fifo = fifo
        self.name = "q.fifo" if fifo else "q"
        self.api = QueueApi(None, wake=lambda key: None, when_durable=lambda plog, end, answer: answer())
        self.push = PushApi(self.api, wake=lambda key: None)
        self.api.handlers()[CreateQueue](CreateQueue(self.name, visibility_timeout_s=VISIBILITY_S,
                                                     content_based_deduplication=fifo or None), ctx(0.0))
        self.sent = 0
        self.holders: list[Wait | None] = [None, None]
        self.holding: list[dict[int, tuple[str, int]]] = [{}, {}]  # per subscriber: seq -> (handle, count)
        for i in range(2):
            self.subscribe(i)

    # -- helpers --------------------------------------------------------------------------------------------------
    def queue(self):
        return self.api.manager.queue(self.name, self.now)

    def subscribe(self, i: int) -> None:
        holder = self.push.subscribe(QueueSubscribe(self.name, 1, PREFETCH[i], connection=i + 1), ctx(self.now))
        assert isinstance(holder, Wait)
        self.holders[i] = holder
        self.holding[i] = {}

    def truly_held(self, i: int) -> set[int]:
        q = self.queue()
        return {seq for seq, (_, count) in self.holding[i].items()
                if seq in q.messages and q.messages[seq].receive_count == count and q.messages[seq].state == IN_FLIGHT}

    # -- rules ----------------------------------------------------------------------------------------------------
    @rule(group=st.sampled_from(["a", "b"]))
    def send(self, group: str) -> None:
        self.sent += 1
        body = b"m%d" % self.sent
        req = SendMessage(self.name, body, group_id=group) if self.fifo else SendMessage(self.name, body)
        assert isinstance(self.api.send(req, ctx(self.now)), Answer)

    @rule(i=st.sampled_from([0, 1]))
    def deliver(self, i: int) -> None:
        q = self.queue()
        blocked = {m.group_id for m in q.messages.values() if m.state == IN_FLIGHT}
        remaining = {g: sorted(s for s, m in q.messages.items() if m.group_id == g) for g in ("a", "b")}
        out = self.push.deliver(QueueDeliver(1, wait_s=0.0, connection=i + 1), ctx(self.now))
        assert isinstance(out, Answer)
        for d in out.value.messages:
            self.holding[i][seq_of(d.receipt_handle)[0]] = (d.receipt_handle, d.receive_count)
        assert out.value.unacked <= PREFETCH[i]
        if self.fifo:  # a group with a message in flight delivers nothing; the others, oldest first
            for g in ("a", "b"):
                pushed = [d.sequence_number for d in out.value.messages if d.group_id == g]
                assert not pushed or (g not in blocked and pushed == remaining[g][:len(pushed)])

    @precondition(lambda self: any(self.holding))
    @rule(i=st.sampled_from([0, 1]), pick=st.integers(0, 10), nack=st.sampled_from([None, 0.0, 5.0]))
    def settle(self, i: int, pick: int, nack: float | None) -> None:
        if not self.holding[i]:
            return
        seq = sorted(self.holding[i])[pick % len(self.holding[i])]
        held = seq in self.truly_held(i)
        handle, _ = self.holding[i].pop(seq)
        if nack is None:
            out = self.push.ack(QueueAck(self.name, 1, (handle,), connection=i + 1), ctx(self.now))
        else:
            out = self.push.nack(QueueNack(self.name, 1, (handle,), delay_s=nack, connection=i + 1), ctx(self.now))
        assert isinstance(out, Answer)
        if held:  # the delivery it held is settled: deleted, or visible (or hidden) again, and out of the window
            assert not out.value.failed and seq not in set(self.push.subscriptions[(i + 1, 1)].held)
            m = self.queue().messages.get(seq)
            if nack is None:
                assert m is None
            else:  # hidden until the delay ends (SQS counts it not visible), then receivable again
                assert (m.state, m.visible_at) == ((VISIBLE, self.now) if nack == 0.0 else (IN_FLIGHT, self.now + nack))

    @rule(dt=st.sampled_from([1.0, 5.0, 10.0]))
    def advance(self, dt: float) -> None:
        self.now += dt
        self.api.tick(ctx(self.now))

    @rule(i=st.sampled_from([0, 1]), closed=st.booleans())
    def end(self, i: int, closed: bool) -> None:
        held = self.truly_held(i)
        if closed:
            self.holders[i].abandon(ctx(self.now))
        else:
            assert self.push.unsubscribe(QueueUnsubscribe(1, connection=i + 1), ctx(self.now)).value.released == len(
                held)
        q = self.queue()
        assert all(q.messages[seq].state == VISIBLE for seq in held)  # at once
        self.subscribe(i)

    # -- invariants -----------------------------------------------------------------------------------------------
    @invariant()
    def windows_hold(self) -> None:
        for i in range(2):
            held = self.truly_held(i)
            sub = self.push.subscriptions[(i + 1, 1)]
            assert len(held) <= PREFETCH[i] and len(sub.held) <= PREFETCH[i]
            assert held <= set(sub.held)

    @invariant()
    def a_fifo_group_is_held_by_one_subscription_at_most(self) -> None:
        if not self.fifo:
            return
        q = self.queue()
        held = [self.truly_held(0), self.truly_held(1)]
        for group in ("a", "b"):
            owners = {i for i in range(2) for s in held[i] if q.messages[s].group_id == group}
            assert len(owners) <= 1


TestPushModel = PushModel.TestCase
TestPushModel.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
