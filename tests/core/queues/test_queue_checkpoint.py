# Checkpoints of the queues' journal (broker/core/log/internal.py, broker/core/queues/checkpoint.py): a hypothesis
# stateful test drives standard and FIFO queues with dead-letter queues, redrive tasks, delays, purges, retention
# changes and fan-out marks through a journal that checkpoints every few hundred bytes in chunks of two messages
# (so other events land inside checkpoints, and its old segments are deleted), after appends and between them,
# beside one that never does; at every restart both replays hold the same state, and the same as the live manager.
# Receipt handles minted before a restart are used after it.
from __future__ import annotations

import logging

import msgpack

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from millpond.broker.core.queues import QueueAttributes
from millpond.broker.core.queues.checkpoint import ROWS_PER_RECORD, QueueStateWriter
from millpond.broker.core.queues.journal import QueueJournal
from millpond.broker.wire.errors import MillpondError, StorageError

from checkpointkit import Journaled, dump
from queuekit import ms

QUEUES = ["src", "dlq", "f.fifo", "fdlq.fifo"]


class CheckpointedQueues(RuleBasedStateMachine):
    @initialize(step=st.sampled_from([60, 150, 400]), floor=st.sampled_from([0, 300, 2000]))
    def start(self, step: int, floor: int) -> None:
        self.now = 0.0
        self.j = Journaled({"bytes_min": floor, "factor": 1, "step_bytes": step, "background_bytes": step})
        self.j.journal._rows = 2
        m = self.j.m
        m.create("dlq", QueueAttributes(visibility_timeout_s=5.0), 0.0, ms(0.0))
        m.create("src", QueueAttributes(visibility_timeout_s=5.0, dead_letter_queue="dlq", max_receive_count=2),
                 0.0, ms(0.0))
        m.create("fdlq.fifo", QueueAttributes(fifo=True, content_based_deduplication=True), 0.0, ms(0.0))
        m.create("f.fifo", QueueAttributes(fifo=True, visibility_timeout_s=5.0, dead_letter_queue="fdlq.fifo",
                                           max_receive_count=2), 0.0, ms(0.0))
        self.handles: list[tuple[str, str]] = []
        self.sent = 0
        self.restarts = 0
        self.write()

    def write(self) -> None:
        self.j.write(self.now)

    def attempt(self, call, *args, **kw):
        try:
            return call(*args, **kw)
        except MillpondError:
            return None
        finally:
            self.write()

    @rule(q=st.sampled_from(QUEUES), group=st.sampled_from(["a", "b"]), delay=st.sampled_from([None, 0.0, 2.5]),
          dup=st.booleans(), fanout=st.booleans())
    def send(self, q: str, group: str, delay: float | None, dup: bool, fanout: bool) -> None:
        body = b"m%d" % (0 if dup else self.sent)
        self.sent += 1
        kw: dict = {"group_id": group, "dedup_id": body.decode()} if q.endswith(".fifo") else {"delay_s": delay}
        if fanout:
            kw["origin"] = ("sub-1", self.sent % 2, self.sent)
        self.attempt(self.j.m.send, q, body, self.now, ms(self.now), attributes={"n": self.sent}, **kw)

    @rule(q=st.sampled_from(QUEUES), n=st.integers(1, 3), vt=st.sampled_from([None, 0.0, 2.5]))
    def receive(self, q: str, n: int, vt: float | None) -> None:
        got = self.attempt(self.j.m.receive, q, n, self.now, ms(self.now), visibility_timeout_s=vt) or []
        self.handles += [(q, d.receipt_handle) for d in got]

    @precondition(lambda self: self.handles)
    @rule(i=st.integers(0, 1000))
    def delete(self, i: int) -> None:
        q, handle = self.handles[i % len(self.handles)]
        self.attempt(self.j.m.delete_message, q, handle, self.now)

    @precondition(lambda self: self.handles)
    @rule(i=st.integers(0, 1000), t=st.sampled_from([0.0, 1.5, 20.0]))
    def change_visibility(self, i: int, t: float) -> None:
        q, handle = self.handles[i % len(self.handles)]
        self.attempt(self.j.m.change_visibility, q, handle, t, self.now)

    @rule(q=st.sampled_from(["dlq", "fdlq.fifo"]), rate=st.sampled_from([1, 2, None]))
    def redrive(self, q: str, rate: int | None) -> None:
        self.attempt(self.j.m.tasks.start, q, None, rate, self.now, ms(self.now))

    @rule(q=st.sampled_from(QUEUES))
    def purge(self, q: str) -> None:
        self.attempt(self.j.m.purge, q, self.now)

    @rule(q=st.sampled_from(QUEUES), retention=st.sampled_from([60.0, 90.0, 345_600.0]))
    def set_retention(self, q: str, retention: float) -> None:
        self.attempt(self.j.m.set_attributes, q, {"retention_s": retention}, self.now, ms(self.now))

    @rule()
    def recreate(self) -> None:
        self.attempt(self.j.m.delete, "dlq" if self.sent % 2 else "fdlq.fifo", self.now)
        q = "dlq" if self.sent % 2 else "fdlq.fifo"
        self.attempt(self.j.m.create, q, QueueAttributes(fifo=q.endswith(".fifo"), content_based_deduplication=
                                                         q.endswith(".fifo")), self.now, ms(self.now))

    @rule(dt=st.sampled_from([0.25, 1.0, 2.5, 6.0, 70.0, 301.0]))
    def advance(self, dt: float) -> None:
        self.now += dt
        self.j.m.tick(self.now)
        self.write()

    @rule()
    def between_requests(self) -> None:
        self.j.journal.background_step(ms(self.now), self.now)  # the engine's timer: a step with no append

    @rule()
    def restart(self) -> None:
        self.j.m.tick(self.now)  # what is due now is journaled before the crash (dump's tick would not write it)
        self.write()
        live = dump(self.j.m, self.now)
        self.j.restart(self.now)
        self.restarts += 1
        replayed = dump(self.j.m, self.now)
        assert replayed == dump(self.j.reference_replayed(self.now), self.now)
        assert replayed == live
        self.write()

    @invariant()
    def checkpoints_delete_what_they_replace(self) -> None:
        if not hasattr(self, "j"):
            return
        cps = self.j.journal.checkpoints
        if cps.written:  # the log holds at most the last checkpoint's segment and those after it
            assert self.j.plog.log_start_offset > 0 or cps.deleted == 0


TestCheckpointedQueues = CheckpointedQueues.TestCase
TestCheckpointedQueues.settings = settings(
    max_examples=120, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_a_journal_holds_the_live_state_not_its_history():
    """10,000 messages sent, received and deleted through a checkpointing journal: the topic ends holding a few
    hundred records (the last checkpoint and what came after it), and its replay holds the 10 messages left."""
    j = Journaled({"bytes_min": 64 * 1024, "factor": 2, "step_bytes": 16 * 1024})
    m = j.m
    m.create("q", QueueAttributes(), 0.0, ms(0.0))
    j.write(0.0)
    for i in range(10_000):
        now = i * 0.001
        m.send("q", b"x" * 50, now, ms(now))
        j.write(now)
        [d] = m.receive("q", 1, now, ms(now))
        j.write(now)
        if i < 9_990:
            m.delete_message("q", d.receipt_handle, now)
            j.write(now)
    plog, full = j.plog, j.reference.plog
    assert j.journal.checkpoints.written >= 5
    assert full.log_end_offset - full.log_start_offset == 1 + 3 * 10_000 - 10
    kept = plog.log_end_offset - plog.log_start_offset
    assert kept < 1500  # the bound: about (2 + factor) x 64 KiB of events, a few hundred bytes each
    assert plog.size_bytes < 5 * 64 * 1024
    j.restart(10.0)
    assert j.m.counts("q", 10.0) == (0, 10, 0)
    assert dump(j.m, 10.0) == dump(j.reference_replayed(10.0), 10.0)


def test_a_checkpoint_of_an_idle_journal_is_not_written_again():
    """Nothing new since the last checkpoint: steps write nothing, after an append or between requests (a
    checkpoint is due only after its size plus the floor of new bytes)."""
    j = Journaled({"bytes_min": 0, "factor": 1, "step_bytes": 1 << 20})
    j.m.create("q", QueueAttributes(), 0.0, ms(0.0))
    j.write(0.0)
    assert j.journal.checkpoints.writing
    for _ in range(3):
        j.journal.background_step(ms(0.0), 0.0)
    assert j.journal.checkpoints.written == 1 and not j.journal.checkpoints.writing
    end = j.plog.log_end_offset
    for _ in range(5):
        j.write(0.0)
        j.journal.background_step(ms(0.0), 0.0)
    assert (j.journal.checkpoints.written, j.plog.log_end_offset) == (1, end)


def test_a_small_step_writes_a_small_record():
    """A record of messages holds what the step's budget has room for (at least one message, at most the rows per
    record): a request's small step stays small however large the queue."""
    j = Journaled({"bytes_min": 1 << 60})
    j.m.create("q", QueueAttributes(), 0.0, ms(0.0))
    for i in range(600):
        j.m.send("q", b"x" * 100, 0.0, ms(0.0))
    writer = QueueStateWriter(j.m)
    first = writer.chunk(ms(0.0), 0.0, 1)
    assert len(first) == 1 and msgpack.unpackb(first[0][1])[0] == "queue"
    sizes = []
    for budget in (1, 1000, 4000, 1 << 20):
        chunk = writer.chunk(ms(0.0), 0.0, budget)
        records = [msgpack.unpackb(v) for _, v in chunk]
        sizes.append([len(r[3]) for r in records if r[0] == "messages"])
    assert sizes[0] == [1]  # one message, however small the budget
    assert 4 <= sum(sizes[1]) <= 8 and 20 <= sum(sizes[2]) <= 32  # a row packs to about 130 bytes
    assert max(sizes[3]) == ROWS_PER_RECORD and sum(s for sz in sizes for s in sz) == 600


def test_memory_only_journal_needs_no_checkpoints():
    journal = QueueJournal(None)
    assert journal.append([("purge", "q")], 0.0, ms(0.0)) == 0 and journal.checkpoints is None


def test_a_storage_failure_abandons_the_checkpoint_not_the_request(caplog):
    """A roll or append of a checkpoint that fails leaves the request's own events appended, logs one line, and a
    later step writes the checkpoint afresh; the replay holds every message."""
    j = Journaled({"bytes_min": 500, "factor": 1, "step_bytes": 200})
    j.journal._rows = 2
    j.m.create("q", QueueAttributes(), 0.0, ms(0.0))
    j.write(0.0)
    plog, real = j.plog, j.plog.append
    failing = {"left": 3}

    def append(blob, header, now_ms, **kw):
        if b"millpond.checkpoint" in blob and failing["left"] > 0:
            failing["left"] -= 1
            raise StorageError("disk full")
        return real(blob, header, now_ms, **kw)

    plog.append = append  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        for i in range(40):
            j.m.send("q", b"message %d" % i, 0.0, ms(0.0))
            j.write(0.0)
    assert failing["left"] == 0 and j.journal.checkpoints.written >= 1 and plog.log_start_offset > 0
    assert caplog.text.count("checkpoint abandoned") == 1
    j.restart(1.0)
    assert j.m.counts("q", 1.0) == (40, 0, 0)
    assert dump(j.m, 1.0) == dump(j.reference_replayed(1.0), 1.0)
