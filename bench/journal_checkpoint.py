# The cost of a checkpoint of the queues' journal (broker/core/log/internal.py, broker/core/queues/checkpoint.py):
# a queue of N small messages (a third received, so in flight), its state written as a checkpoint to a memory log
# (the log's append is the normal path; its fsync is a worker thread's wait, not the event loop's) one step of
# --step-bytes at a time (default: the most a request's append carries). Figures: CPU time of the whole checkpoint,
# of the longest and the median step (the event loop's stall), the checkpoint's bytes, and the replay of the
# compacted topic. Imports the core directly; must not know about the server or the client.
# Run: python -m millpond.bench.journal_checkpoint [--messages N] [--step-bytes B] [--json]
"""Queues' journal checkpoint: CPU time in total and per step, and the replay after it."""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

from millpond.broker.config import TopicDefaults
from millpond.broker.core.log import LogManager
from millpond.broker.core.log.internal import CHECKPOINT_STEP_BYTES
from millpond.broker.core.queues import QueueAttributes, QueueManager
from millpond.broker.core.queues.journal import QueueJournal

T0_MS = 1_700_000_000_000


def run(messages: int, step_bytes: int) -> dict[str, float]:
    log = LogManager(None, defaults=TopicDefaults(), batch_bytes_max=1 << 20, partitions_max=8, fsync_mode="never",
                     storage="memory")
    log.open(T0_MS)
    m = QueueManager(messages_max=messages)
    # never due by itself: the run starts the one checkpoint measured, in background steps of step_bytes each
    journal = QueueJournal(log, checkpoint={"bytes_min": 1 << 60, "step_bytes": step_bytes,
                                            "background_bytes": step_bytes})
    journal.open(m, 0.0, T0_MS)
    m.create("q", QueueAttributes(), 0.0, T0_MS)
    for i in range(messages):
        m.send("q", b"message %09d" % i, 0.0, T0_MS)
        if i % 1000 == 999:
            journal.append(m.take_events(), 0.0, T0_MS)
    while m.receive("q", 1000, 1.0, T0_MS + 1000) and m.queues["q"].counts[2] < messages // 3:
        journal.append(m.take_events(), 1.0, T0_MS + 1000)
    journal.append(m.take_events(), 1.0, T0_MS + 1000)
    cps = journal.checkpoints
    assert cps is not None
    cps.bytes_min = 0  # due now
    before = journal.plog.size_bytes  # type: ignore[union-attr]
    steps: list[float] = []
    gc.collect()
    gc.disable()
    try:
        cps.step(T0_MS + 2000, 2.0)  # starts it (the append before it grew the topic)
        while True:
            t = time.process_time()
            cps.step(T0_MS + 2000, 2.0, background=True)
            steps.append(time.process_time() - t)
            if not cps.writing:
                break
    finally:
        gc.enable()
    written = journal.plog.size_bytes - before  # type: ignore[union-attr]
    cps.step(T0_MS + 2000, 2.0)  # the segments before it go
    replayed = QueueManager(messages_max=messages)
    t = time.process_time()
    QueueJournal(log).open(replayed, 3.0, T0_MS + 3000)
    replay_s = time.process_time() - t
    assert replayed.counts("q", 3.0) == m.counts("q", 3.0)
    return {"messages": messages, "step_bytes": step_bytes, "steps": len(steps), "total_s": sum(steps),
            "step_max_s": max(steps), "step_max_index": steps.index(max(steps)),
            "step_median_s": statistics.median(steps),
            "checkpoint_bytes": written, "deleted_segments": cps.deleted,
            "replay_s": replay_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--step-bytes", type=int, default=CHECKPOINT_STEP_BYTES)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = run(args.messages, args.step_bytes)
    if args.json:
        print(json.dumps(figures))
        return
    print(f"checkpoint of {figures['messages']:,} messages ({figures['checkpoint_bytes'] / 2**20:.1f} MiB) in "
          f"{figures['steps']} steps of {figures['step_bytes'] // 1024} KiB: CPU {figures['total_s'] * 1000:.0f} ms "
          f"in all, longest step {figures['step_max_s'] * 1000:.1f} ms (step {figures['step_max_index']}), median "
          f"{figures['step_median_s'] * 1000:.1f} ms; replay of the compacted topic {figures['replay_s']:.2f} s")


if __name__ == "__main__":
    main()
