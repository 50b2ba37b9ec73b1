# A hypothesis stateful model of a queue (standard and FIFO) against a plain reference: after any sequence of sends,
# receives, deletes (newest and stale handles), visibility changes, time passing and restarts (the journal's records
# replayed into a new manager), no message is lost, none is delivered while invisible, none survives its delete,
# a FIFO group delivers in order and never while it has a message in flight, and the counts are exact.
from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from millpond.broker.core.queues import QueueAttributes, QueueManager
from millpond.broker.core.queues.journal import _from_record, _to_record
from millpond.broker.wire.errors import InvalidParameterValueError

from queuekit import ms

VISIBILITY_S = 10.0


@dataclass
class Ref:
    seq: int
    body: bytes
    group: str
    visible_at: float
    receive_count: int = 0
    deleted: bool = False


class QueueModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.records: list[bytes] = []
        self.refs: dict[str, Ref] = {}  # message id -> reference
        self.handles: list[tuple[str, int, str]] = []  # (message id, receive number, handle)
        self.sent = 0

    @initialize(fifo=st.booleans())
    def start(self, fifo: bool) -> None:
        self.name = "q.fifo" if fifo else "q"
        self.fifo = fifo
        self.m = QueueManager()
        self.m.create(self.name, QueueAttributes(visibility_timeout_s=VISIBILITY_S, fifo=fifo), 0.0, ms(0.0))
        self.journal()

    # -- helpers --------------------------------------------------------------------------------------------------
    def journal(self) -> None:
        self.records += [_to_record(e, self.now, ms(self.now)) for e in self.m.take_events()]

    def in_flight(self, r: Ref) -> bool:
        return not r.deleted and r.receive_count > 0 and r.visible_at > self.now

    def live(self) -> list[Ref]:
        return sorted((r for r in self.refs.values() if not r.deleted), key=lambda r: r.seq)

    def deliverable(self) -> list[Ref]:
        live = [r for r in self.live() if r.visible_at <= self.now]
        if not self.fifo:
            return live
        out = []
        for group in {r.group for r in self.live()}:
            members = [r for r in self.live() if r.group == group]
            if not any(self.in_flight(r) for r in members) and members[0].visible_at <= self.now:
                out.append(members[0])
        return out

    # -- rules ----------------------------------------------------------------------------------------------------
    @rule(group=st.sampled_from(["a", "b", "c"]), delay=st.sampled_from([None, 0.0, 3.0]))
    def send(self, group: str, delay: float | None) -> None:
        body = b"m%d" % self.sent
        self.sent += 1
        kw = {"group_id": group, "dedup_id": body.decode()} if self.fifo else {"delay_s": delay}
        mid, _ = self.m.send(self.name, body, self.now, ms(self.now), **kw)
        d = 0.0 if self.fifo or delay is None else delay
        self.refs[mid] = Ref(self.m.queues[self.name].next_seq - 1, body, group, self.now + d)
        self.journal()

    @rule(n=st.integers(1, 4), vt=st.sampled_from([None, 0.0, 5.0]))
    def receive(self, n: int, vt: float | None) -> None:
        expected_some = bool(self.deliverable())
        got = self.m.receive(self.name, n, self.now, ms(self.now), visibility_timeout_s=vt)
        self.journal()
        assert len(got) <= n and (len(got) > 0) == expected_some
        delivered: set[int] = set()
        for d in got:
            r = self.refs[d.message_id]
            assert not r.deleted and r.visible_at <= self.now and d.body == r.body
            assert d.receive_count == r.receive_count + 1
            if self.fifo:  # strict order: every older message of the group came just before, in this receive
                assert all(x.seq in delivered for x in self.live() if x.group == r.group and x.seq < r.seq)
                assert not any(self.in_flight(x) for x in self.live() if x.group == r.group)
            delivered.add(r.seq)
            self.handles.append((d.message_id, d.receive_count, d.receipt_handle))
        for d in got:
            r = self.refs[d.message_id]
            r.receive_count += 1
            r.visible_at = self.now + (VISIBILITY_S if vt is None else vt)

    @precondition(lambda self: self.handles)
    @rule(i=st.integers(0, 1000))
    def delete(self, i: int) -> None:
        mid, n, handle = self.handles[i % len(self.handles)]
        r = self.refs[mid]
        newest = n == r.receive_count
        if self.fifo and newest and not r.deleted and not self.in_flight(r):
            try:
                self.m.delete_message(self.name, handle, self.now)
                raise AssertionError("a FIFO delete with an expired handle succeeded")
            except InvalidParameterValueError:
                return
        self.m.delete_message(self.name, handle, self.now)
        self.journal()
        if newest:
            r.deleted = True

    @precondition(lambda self: self.handles)
    @rule(i=st.integers(0, 1000), t=st.sampled_from([0.0, 2.0, 20.0]))
    def change_visibility(self, i: int, t: float) -> None:
        mid, n, handle = self.handles[i % len(self.handles)]
        r = self.refs[mid]
        if r.deleted:
            try:
                self.m.change_visibility(self.name, handle, t, self.now)
                raise AssertionError("changed the visibility of a deleted message")
            except InvalidParameterValueError:
                return
        self.m.change_visibility(self.name, handle, t, self.now)
        self.journal()
        if n == r.receive_count and self.in_flight(r):
            r.visible_at = self.now + t

    @rule(dt=st.sampled_from([0.5, 1.0, 3.0, 10.0]))
    def advance(self, dt: float) -> None:
        self.now += dt
        self.m.tick(self.now)

    @rule()
    def restart(self) -> None:
        self.m = QueueManager()
        for record in self.records:
            self.m.apply(_from_record(record, self.now, ms(self.now)), self.now)
        self.m.take_events()
        self.m.tick(self.now)

    # -- invariants -----------------------------------------------------------------------------------------------
    @invariant()
    def counts_are_exact(self) -> None:
        if not hasattr(self, "m"):
            return
        live = self.live()
        visible = sum(1 for r in live if r.visible_at <= self.now)
        in_flight = sum(1 for r in live if self.in_flight(r))
        delayed = len(live) - visible - in_flight
        assert self.m.counts(self.name, self.now) == (visible, in_flight, delayed)
        assert set(self.m.queues[self.name].messages) == {r.seq for r in live}


TestQueueModel = QueueModel.TestCase
TestQueueModel.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
