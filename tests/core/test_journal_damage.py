# The broker's own journals (committed offsets, queues, subscriptions) replay around a damaged range of their
# internal topic (docs/data-safety.md): what was stored before and after it is back after a restart, only the
# damaged batch's events are lost, and the skip is logged. Before, a replay stopped at the first bad batch and every
# later commit, queue or subscription was lost.
from __future__ import annotations

import logging
from pathlib import Path

from millpond.broker.config import TopicDefaults
from millpond.broker.core.fanout.api import ListSubscriptions, Subscribe
from millpond.broker.core.fanout.journal import SUBSCRIPTIONS_TOPIC
from millpond.broker.core.groups import OFFSETS_TOPIC, Committed, OffsetStore, TopicPartition
from millpond.broker.core.log import LogManager
from millpond.broker.core.log.api import CreateTopic
from millpond.broker.core.queues.api import CreateQueue, ListQueues
from millpond.broker.core.queues.journal import QUEUES_TOPIC
from millpond.broker.wire.batch import iter_batches
from enginekit import T0_MS, answer, make_engine

NAMES = ["a", "b", "c"]


def damage_batch_holding(data_dir: Path, topic: str, needle: bytes) -> None:
    """Flip a byte at the end of the (only) batch of ``topic`` whose bytes hold ``needle``."""
    [segment] = sorted((data_dir / "topics" / topic / "0").glob("*.log"))
    raw = bytearray(segment.read_bytes())
    [(pos, h)] = [(pos, h) for pos, h in iter_batches(bytes(raw)) if needle in raw[pos : pos + h.size]]
    raw[pos + h.size - 2] ^= 0x20
    segment.write_bytes(bytes(raw))


def test_committed_offsets_replay_around_a_damaged_commit(tmp_path, caplog):
    def open_log() -> LogManager:
        log = LogManager(tmp_path, defaults=TopicDefaults(), batch_bytes_max=1 << 20, partitions_max=64,
                         fsync_mode="never")
        log.open(T0_MS)
        return log

    log = open_log()
    store = OffsetStore(log)
    store.open(T0_MS)
    for name in NAMES:
        store.commit(f"group-{name}", {TopicPartition("t", 0): Committed(7)}, T0_MS)
    log.close()
    damage_batch_holding(tmp_path, OFFSETS_TOPIC, b"group-b")
    with caplog.at_level(logging.ERROR):
        log = open_log()
        store = OffsetStore(log)
        store.open(T0_MS)
    assert {g: {p: c.offset for p, c in store.committed(g).items()} for g in ("group-a", "group-b", "group-c")} == {
        "group-a": {("t", 0): 7}, "group-b": {}, "group-c": {("t", 0): 7}}
    assert f"replay of {OFFSETS_TOPIC} skipped a damaged range" in caplog.text
    log.close()


def test_queues_and_subscriptions_replay_around_a_damaged_event(tmp_path, caplog):
    engine = make_engine(tmp_path, fsync="never")
    answer(engine, CreateTopic("t", 1))
    for name in NAMES:
        answer(engine, CreateQueue(f"queue-{name}"))
    for name in NAMES:
        answer(engine, Subscribe("t", f"queue-{name}"))
    engine.close()
    damage_batch_holding(tmp_path, QUEUES_TOPIC, b"queue-b")
    damage_batch_holding(tmp_path, SUBSCRIPTIONS_TOPIC, b"queue-b")
    with caplog.at_level(logging.ERROR):
        again = make_engine(tmp_path, fsync="never")
    assert answer(again, ListQueues()).queues == ("queue-a", "queue-c")
    assert sorted(s.queue for s in answer(again, ListSubscriptions("t")).subscriptions) == ["queue-a", "queue-c"]
    assert f"replay of {QUEUES_TOPIC} skipped a damaged range" in caplog.text
    assert f"replay of {SUBSCRIPTIONS_TOPIC} skipped a damaged range" in caplog.text
    again.close()
