# Driving the queues' journal with checkpoints on a LogManager, with literal times: two journals take the same
# events, one checkpointing after every few bytes (its old segments deleted), one never, and a restart replays each
# into a new manager; `dump` is a manager's whole state in plain values, for comparing them.
from __future__ import annotations

from pathlib import Path
from typing import Any

from millpond.broker.config import TopicDefaults
from millpond.broker.core.log import LogManager, PartitionLog
from millpond.broker.core.queues import QueueManager
from millpond.broker.core.queues.journal import QueueJournal

from queuekit import ms

NEVER = {"bytes_min": 1 << 60}  # a journal that never checkpoints: its replay is the full history's


def log_manager(data_dir: Path | None = None) -> LogManager:
    log = LogManager(data_dir, defaults=TopicDefaults(), batch_bytes_max=1 << 20, partitions_max=8,
                     fsync_mode="never", storage="memory" if data_dir is None else "file")
    log.open(ms(0.0))
    return log


class Journaled:
    """A live manager whose events go to ``journal`` (checkpointing as ``checkpoint`` says) and to a second
    journal that never checkpoints; ``restart(now)`` replays the first into a new live manager."""

    def __init__(self, checkpoint: dict[str, Any], log: LogManager | None = None,
                 full: LogManager | None = None) -> None:
        self.log = log or log_manager()
        self.full = full or log_manager()
        self.checkpoint = checkpoint
        self.m = self.replayed(0.0)
        self.reference = QueueJournal(self.full, checkpoint=NEVER)
        self.reference.open(QueueManager(), 0.0, ms(0.0))

    @property
    def plog(self) -> PartitionLog:
        return self.journal.plog  # type: ignore[return-value]

    def replayed(self, now: float) -> QueueManager:
        m = QueueManager()
        self.journal = QueueJournal(self.log, checkpoint=self.checkpoint)
        self.journal.open(m, now, ms(now))
        return m

    def reference_replayed(self, now: float) -> QueueManager:
        m = QueueManager()
        QueueJournal(self.full, checkpoint=NEVER).open(m, now, ms(now))
        return m

    def write(self, now: float) -> None:
        events = self.m.take_events()
        self.journal.append(events, now, ms(now))
        self.reference.append(events, now, ms(now))
        # fsync="always" holds the records for the next sync plan, whose making writes them: one per write here
        self.journal.write_pending()
        self.reference.write_pending()

    def restart(self, now: float) -> None:
        self.m = self.replayed(now)


def dump(m: QueueManager, now: float) -> dict[str, Any]:
    """Everything a manager holds that a restart must keep, times as wall-clock ms."""
    m.tick(now)

    def t(x: float) -> int:
        return ms(x) if x >= 0 else -1

    out: dict[str, Any] = {"origins": {s: dict(p) for s, p in m.origins.items() if p}}
    for name, q in sorted(m.queues.items()):
        m.queue(name, now)
        running = m.tasks.running.get(name)
        out[name] = {
            "attrs": q.attrs.to_record(), "incarnation": q.incarnation, "created_ms": q.created_ms,
            "modified_ms": q.modified_ms, "next_seq": q.next_seq, "counts": list(q.counts),
            "messages": {seq: (x.message_id, x.body, x.attributes, x.sent_ms, t(x.enqueued_at), t(x.visible_at),
                               x.group_id, x.dedup_id, x.source, x.receive_count, x.first_receive_ms,
                               t(x.received_at) if x.receive_count else -1, x.state)
                         for seq, x in q.messages.items()},
            "order": [x.seq for x in q.deliverable()],
            "dedup": {d: (t(e[0]), e[1], e[2]) for d, e in q._dedup.items()},
            "tasks": [(x.handle, x.destination, x.rate_given, x.started_ms, x.to_move, x.moved, x.status,
                       x.failure_reason, x.bound) for x in m.tasks.recent.get(name, ())],
            "running": None if running is None else (running.handle, [s for s in running.pending[running.head:]
                                                                      if s in q.messages]),
            "deadline": q.next_deadline(),
        }
    return out
