# The broker's internal topics (__millpond_offsets, __millpond_queues, __millpond_subscriptions): created on first
# open and replayed record by record into the core that owns them, around damage (docs/data-safety.md). One
# partition each; what a record means is the owner's. Its only I/O is through the LogManager's partition reads.
from __future__ import annotations

import logging
from typing import Any, Callable

from millpond.broker.core.log.manager import LogManager
from millpond.broker.core.log.partition import PartitionLog
from millpond.broker.wire.batch import Record, decode_records
from millpond.broker.wire.errors import MillpondError

REPLAY_CHUNK_BYTES = 1 << 20


def open_internal(logman: LogManager, name: str, config: dict[str, Any], now_ms: int) -> PartitionLog:
    """Internal topic ``name``'s one partition, the topic created with ``config`` if missing (blocking file work:
    call before serving). Raises ``StorageError``."""
    topic = logman.topics.get(name)
    if topic is None:
        topic = logman.create_topic(name, 1, dict(config), now_ms, internal=True)
    return topic.partitions[0]


def replay(plog: PartitionLog, apply: Callable[[Record], None], log: logging.Logger) -> int:
    """Hand every stored record of ``plog`` to ``apply``, in offset order; returns how many. A damaged range is
    logged and skipped (only the records stored there are lost; those after it still count); a read that fails
    otherwise stops the replay there, logged, rather than the broker."""
    name = plog.topic
    offset, applied = plog.log_start_offset, 0
    while offset < plog.log_end_offset:
        try:
            data, damaged = plog.read_intact(offset, REPLAY_CHUNK_BYTES)
            records = decode_records(data, name, 0, offset)
        except MillpondError as exc:
            log.error("replay of %s stopped at offset %d: %s", name, offset, exc)
            break
        for rec in records:
            apply(rec)
        applied += len(records)
        if damaged is not None:
            log.error("replay of %s skipped a damaged range: %s", name, damaged.message)
            offset = damaged.details["next_offset"]
        elif not records:
            break
        else:
            offset = records[-1].offset + 1
    return applied


__all__ = ["REPLAY_CHUNK_BYTES", "open_internal", "replay"]
