# Checkpoints of the committed offsets' and the subscriptions' journals (broker/core/log/internal.py): random
# commits, group and topic tombstones, subscribes, cursor saves and unsubscribes go through a journal checkpointing
# every few hundred bytes in small chunks, after appends and between them (its old segments deleted), and one that
# never does; a restart of either gives the same state as the live one, and the topic holds about the live state
# however long the history.
from __future__ import annotations

import logging

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from millpond.broker.config import TopicDefaults
from millpond.broker.core.fanout.journal import SubscriptionJournal
from millpond.broker.core.fanout.subscriptions import Subscriptions, Target
from millpond.broker.core.groups import Committed, OffsetStore, TopicPartition
from millpond.broker.core.log import LogManager
from millpond.broker.core.log.internal import (CHECKPOINT_BACKGROUND_BYTES, CHECKPOINT_STEP_RATIO, Checkpoints,
                                               open_internal)
from millpond.broker.wire.batch import encode_batch, read_header

MS = 1_700_000_000_000
SMALL = {"bytes_min": 400, "factor": 1, "step_bytes": 90, "background_bytes": 90}
NEVER = {"bytes_min": 1 << 60}


def memory_log() -> LogManager:
    log = LogManager(None, defaults=TopicDefaults(), batch_bytes_max=1 << 20, partitions_max=8, fsync_mode="never",
                     storage="memory")
    log.open(MS)
    return log


def offsets(store: OffsetStore) -> dict:
    return {g: store.committed(g) for g in store.groups()}


GROUPS = st.sampled_from(["g1", "g2", "g3"])
TOPICS = st.sampled_from(["t", "u"])
OFFSET_OPS = st.lists(st.one_of(
    st.tuples(st.just("commit"), GROUPS, TOPICS, st.integers(0, 3), st.integers(0, 10**6)),
    st.tuples(st.just("delete_group"), GROUPS),
    st.tuples(st.just("delete_topic"), TOPICS),
    st.tuples(st.just("between_requests")),
    st.tuples(st.just("restart")),
), max_size=120)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OFFSET_OPS)
def test_committed_offsets_replay_the_same_with_checkpoints(ops):
    log, full = memory_log(), memory_log()
    store, reference = OffsetStore(log, checkpoint=SMALL), OffsetStore(full, checkpoint=NEVER)
    store.open(MS)
    reference.open(MS)
    for op in ops:
        if op[0] == "commit":
            _, group, topic, partition, offset = op
            for s in (store, reference):
                s.commit(group, {TopicPartition(topic, partition): Committed(offset, "m%d" % offset)}, MS)
        elif op[0] == "delete_group":
            for s in (store, reference):
                s.delete_group(op[1], MS)
        elif op[0] == "delete_topic":
            for s in (store, reference):
                s.delete_topic(op[1], MS)
        elif op[0] == "between_requests":
            store.background_step(MS, 0.0)  # the engine's timer: a step with no append
        else:
            live = offsets(store)
            store = OffsetStore(log, checkpoint=SMALL)
            store.open(MS)
            again = OffsetStore(full, checkpoint=NEVER)
            again.open(MS)
            assert offsets(store) == offsets(again) == live
    assert offsets(store) == offsets(reference)


def test_committed_offsets_topic_holds_the_live_table_not_every_commit():
    """5,000 commits of 8 keys: the topic keeps a few dozen records, and a restart has the last of each key."""
    log = memory_log()
    store = OffsetStore(log, checkpoint={"bytes_min": 4096, "factor": 2, "step_bytes": 1024})
    store.open(MS)
    for i in range(5000):
        store.commit("g%d" % (i % 2), {TopicPartition("t", i % 4): Committed(i)}, MS)
    plog = store.partition_log
    assert store.checkpoints.written >= 10 and plog.log_start_offset > 0
    assert plog.log_end_offset - plog.log_start_offset < 200
    again = OffsetStore(log)
    again.open(MS)
    assert {g: {tp.partition: c.offset for tp, c in again.committed(g).items()} for g in again.groups()} == {
        "g0": {0: 4996, 2: 4998}, "g1": {1: 4997, 3: 4999}}


def subscriptions(subs: Subscriptions) -> dict:
    return {s.id: (s.to_record(), s.cursors, s.saved, s.counters(), subs.policy_bytes) for s in subs.by_id.values()}


SUB_OPS = st.lists(st.one_of(
    st.tuples(st.just("sub"), st.integers(0, 5), st.sampled_from([None, '{"k": ["v"]}'])),
    st.tuples(st.just("unsub"), st.integers(0, 5)),
    st.tuples(st.just("save"), st.integers(0, 5), st.integers(0, 2), st.integers(0, 1000)),
    st.tuples(st.just("between_requests")),
    st.tuples(st.just("restart")),
), max_size=80)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=SUB_OPS)
def test_subscriptions_replay_the_same_with_checkpoints(ops):
    log, full = memory_log(), memory_log()

    def opened(on: LogManager, checkpoint: dict) -> tuple[Subscriptions, SubscriptionJournal]:
        subs, journal = Subscriptions(), SubscriptionJournal(on, checkpoint=checkpoint)
        journal.open(subs, MS)
        return subs, journal

    subs, journal = opened(log, SMALL)
    reference = opened(full, NEVER)[1]
    now = 0.0
    for op in ops:
        if op[0] == "sub" and "s%d" % op[1] not in subs.by_id:
            subs.subscribe("s%d" % op[1], "t", Target("queue", "q%d" % op[1]), op[2], "MessageAttributes", False,
                           None, {0: op[1]}, MS)
        elif op[0] == "unsub" and "s%d" % op[1] in subs.by_id:
            subs.unsubscribe("s%d" % op[1])
        elif op[0] == "save" and "s%d" % op[1] in subs.by_id:
            s = subs.by_id["s%d" % op[1]]
            s.cursors[op[2]] = s.cursors.get(op[2], 0) + op[3]
            s.delivered += op[3]
            subs.progressed(s, needs=0)
            now += 2.0
            subs.save(durable=0, now=now)
            s.delivered += 1  # counted after the save: a restart goes back to the saved counters
        elif op[0] == "between_requests":
            journal.background_step(MS, now)  # the engine's timer: a step with no append
            continue
        elif op[0] == "restart":
            subs, journal = opened(log, SMALL)
            assert subscriptions(subs) == subscriptions(opened(full, NEVER)[0])
            continue
        events = subs.take_events()
        journal.append(events, MS)
        reference.append(events, MS)
    assert subscriptions(opened(log, SMALL)[0]) == subscriptions(opened(full, NEVER)[0])


def test_subscription_cursor_saves_do_not_pile_up():
    log = memory_log()
    subs, journal = Subscriptions(), SubscriptionJournal(log, checkpoint={"bytes_min": 2048, "factor": 2})
    journal.open(subs, MS)
    subs.subscribe("s1", "t", Target("queue", "q"), None, "MessageAttributes", False, None, {0: 0}, MS)
    journal.append(subs.take_events(), MS)
    s = subs.by_id["s1"]
    for i in range(3000):
        s.cursors[0] = i + 1
        subs.progressed(s, needs=0)
        subs.save(durable=0, now=float(i * 2))
        journal.append(subs.take_events(), MS)
    plog = journal.plog
    assert journal.checkpoints.written >= 10 and plog.log_end_offset - plog.log_start_offset < 100
    again = Subscriptions()
    SubscriptionJournal(log).open(again, MS)
    assert again.by_id["s1"].saved == {0: 3000}


class BudgetRecorder:
    """A StateWriter of 1 KiB records that notes the budget each step asked for; done after ``parts`` steps."""

    def __init__(self, parts: int) -> None:
        self.budgets: list[int] = []
        self.parts = parts

    def chunk(self, now_ms, now, budget_bytes):
        if len(self.budgets) == self.parts:
            return None
        self.budgets.append(budget_bytes)
        return [(None, b"s" * 1024)]


def test_a_step_writes_in_proportion_to_what_the_topic_grew_by_within_its_bounds():
    # A small request's append carries a small step (a receive must not wait behind 256 KiB of state), a large one a
    # step twice the growth, never more than step_bytes; appends between two steps add up; the checkpoint's own
    # records do not count as growth, and a step after no growth writes nothing; a background step (between
    # requests) writes its own budget
    log = memory_log()
    plog = open_internal(log, "__journal_test", {"retention_ms": -1, "retention_bytes": -1}, MS)
    writer = BudgetRecorder(parts=6)
    cps = Checkpoints(plog, lambda: writer, logger=logging.getLogger("test"), bytes_min=0, factor=0,
                      step_bytes=256 * 1024)

    def append(*value_bytes: int) -> int:
        """Events of these value sizes, one batch each; the bytes the topic grew by."""
        before = plog.size_bytes
        for n in value_bytes:
            event = encode_batch([(MS, None, b"e" * n, None)])
            plog.append(event, read_header(event), MS)
        return plog.size_bytes - before

    grown = []
    for sizes in ((100,), (), (20_000,), (200_000,), (3_000, 3_000)):
        grown.append(append(*sizes))
        cps.step(MS)
    assert grown[1] == 0 and 0 < grown[0] < 1024
    assert CHECKPOINT_STEP_RATIO * grown[2] < 256 * 1024 < CHECKPOINT_STEP_RATIO * grown[3]
    assert writer.budgets == [CHECKPOINT_STEP_RATIO * grown[0], CHECKPOINT_STEP_RATIO * grown[2], 256 * 1024,
                              CHECKPOINT_STEP_RATIO * grown[4]]
    cps.step(MS)  # no growth: nothing written, still writing
    assert len(writer.budgets) == 4 and cps.writing
    cps.step(MS, background=True)
    assert writer.budgets[4:] == [CHECKPOINT_BACKGROUND_BYTES]
    cps.step(MS, background=True)
    cps.step(MS, background=True)  # the writer is done: the end marker
    assert cps.written == 1 and not cps.writing
