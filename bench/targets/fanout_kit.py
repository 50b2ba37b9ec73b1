# What every target of `millpond bench fanout` shares: the publish plan of one row (a duration bounded by a record
# count too, so a long row cannot fill a queue), the row's outcome, and the registry of fan-out targets. Pure
# bookkeeping: must not know a client library, an event loop or how figures are summarised.
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from millpond.bench.plans import ProducePlan

# fan-out target name -> module defining FANOUT_TARGET (or "module:ATTRIBUTE"), imported when asked for, so a peer's
# client library is only needed when that peer runs. The names are those of bench.targets.TARGETS: the same server
# is started the same way.
FANOUT_TARGETS = {
    "millpond": "millpond.bench.targets.millpond_fanout",
    "redis": "millpond.bench.targets.redis_fanout:DEFAULT",
    "redis-aof": "millpond.bench.targets.redis_fanout:AOF",
    "redis-aof-always": "millpond.bench.targets.redis_fanout:AOF_ALWAYS",
    "rabbitmq": "millpond.bench.targets.rabbitmq_fanout",
}
POLL_S = 0.002  # between two looks at the queues' depths while the fan-out catches up


def get(name: str) -> Any:
    """The fan-out target ``name`` (KeyError if there is none)."""
    module, _, attr = FANOUT_TARGETS[name].partition(":")
    return getattr(importlib.import_module(module), attr or "FANOUT_TARGET")


@dataclass(frozen=True)
class BoundedPlan(ProducePlan):
    """A ProducePlan whose time-bounded run also stops at ``count_max`` records (each of up to 10 queues holds
    every record: millpond's default queue bound is 1,000,000 messages)."""

    count_max: int = 200_000

    def next_batch(self, sent: int, size: int, elapsed_s: float) -> int:
        return min(super().next_batch(sent, size, elapsed_s), max(0, self.count_max - sent))


@dataclass
class FanoutOutcome:
    """One row: ``records`` published and acknowledged; ``first``/``last_ack``: ``perf_counter()`` at the first
    publish and the last acknowledgement; ``all_in``: when every queue was seen holding every record (or every
    group's reader had read them all); ``held``: what each queue holds (each group read) at the end, in queue
    order; ``error``: the first failure (the workload then aborts)."""

    records: int
    first: float
    last_ack: float
    all_in: float
    held: list[int]
    error: str = ""
