# Targets: a broker plus the Python client a developer would use with it, behind one interface, so every workload
# runs unchanged against each: millpond, millpond at another git revision (`millpond@REV`, bench.targets.revision)
# and the peers (Redis Streams with and without AOF, NATS JetStream, RabbitMQ), each a module registered in
# TARGETS. `missing()` lets a run skip a peer that is not installed, and PeerUnavailable one that will not start,
# with a line saying so, never a fake figure. Must not know how figures are computed (that is bench.workloads).
from __future__ import annotations

import importlib
import os
from typing import Callable, ContextManager, Protocol

from millpond.bench.plans import (
    ConsumeOutcome,
    ConsumePlan,
    Params,
    E2EConsumeOutcome,
    E2EPlan,
    E2EProduceOutcome,
    ProduceOutcome,
    ProducePlan,
)

Tick = Callable[[int], None]  # called with how many records were handled since the last call (for progress)


class PeerUnavailable(RuntimeError):
    """Raised by ``Target.server()`` when an installed peer will not start: the run skips it with this message."""


class TargetFailed(RuntimeError):
    """A target's client, running in a process of its own (a millpond revision), failed: the run aborts."""


class Server(Protocol):
    address: str  # "host:port"
    fsync: str  # the durability mode it runs with, as reported in the results

    def cpu_s(self) -> float | None:
        """CPU seconds (user + system) the server process has used so far; None if not ours to measure."""

    # Optional: ``rss_bytes() -> int | None``, the server process's resident memory now (the soak workload).


class Target(Protocol):
    """A broker and its client. Every method blocks the calling thread; each runs its own event loop if needed."""

    name: str

    def missing(self) -> str | None:
        """Why this target cannot run here (server binary or client package absent), or None if it can."""

    def unsupported(self, params: Params) -> str | None:
        """Why this target cannot run a step with these parameters (e.g. partitions > 1), or None. Optional."""

    def describe(self) -> dict[str, str]:
        """``server`` (name and version), ``client`` (library and version, how it batches) and ``durability``
        (what is on disk when a record is acknowledged), for the report. Optional."""

    def server(self, fsync: str, address: str | None) -> ContextManager[Server]:
        """Start a server on 127.0.0.1 with a temporary data directory (removed on exit), or use ``address``."""

    def create_topic(self, address: str, topic: str, partitions: int) -> None: ...

    def topic_records(self, address: str, topic: str) -> dict[int, tuple[int, int]]:
        """``{partition: (first offset kept, next offset)}`` as the broker reports it: what counts are checked against."""

    def produce(self, address: str, topic: str, plan: ProducePlan, tick: Tick) -> ProduceOutcome: ...

    def consume(self, address: str, topic: str, plan: ConsumePlan, tick: Tick) -> ConsumeOutcome: ...

    def e2e_produce(self, address: str, topic: str, plan: E2EPlan, tick: Tick) -> E2EProduceOutcome: ...

    def e2e_consume(self, address: str, topic: str, plan: E2EPlan, ready: Callable[[], None]) -> E2EConsumeOutcome:
        """Run in its own process: call ``ready()`` once positioned, then consume ``plan.count`` records."""

    def send_await(self, address: str, topic: str, plan: ProducePlan, tick: Tick) -> ProduceOutcome:
        """One record at a time, each acknowledged before the next is sent, every send timed (``latency_hdr``)."""

    # Optional: ``client_cpu_s() -> float | None``, CPU seconds of the last call's client when it ran in a process
    # of its own (a millpond revision); otherwise the workload reads its own process time.


# name -> module defining TARGET (or "module:ATTRIBUTE"); imported lazily so a peer's client library is only
# needed when it is asked for.
TARGETS = {
    "millpond": "millpond.bench.targets.millpond",
    "redis": "millpond.bench.targets.redis_streams:DEFAULT",
    "redis-aof": "millpond.bench.targets.redis_streams:AOF",
    "redis-aof-always": "millpond.bench.targets.redis_streams:AOF_ALWAYS",
    "nats": "millpond.bench.targets.nats_jetstream",
    "rabbitmq": "millpond.bench.targets.rabbitmq",
}
# `millpond@REV`: millpond at a git revision of this repository (bench.targets.revision), e.g. the previous main
REVISION_PREFIX = "millpond@"
# what `--peers NAME` means: Redis runs twice, without and with `appendonly yes, appendfsync everysec`;
# `redis-aof-always` (fsync before each reply) only when named.
PEERS = {
    "redis": ("redis", "redis-aof"),
    "redis-aof": ("redis-aof",),
    "redis-aof-always": ("redis-aof-always",),
    "nats": ("nats",),
    "rabbitmq": ("rabbitmq",),
}
OPT_IN_PEERS = ("redis-aof-always",)  # not among "every peer" (compare, full, results without --peers)


def peer_targets(names: list[str]) -> list[str]:
    """``--peers redis,nats`` -> target names, in order, without repeats; KeyError names an unknown peer."""
    out: list[str] = []
    for name in names:
        if name not in PEERS:
            raise KeyError(name)
        out += [t for t in PEERS[name] if t not in out]
    return out


def is_millpond(name: str) -> bool:
    """This tree's millpond or a git revision of it (``millpond@REV``): runs every step at every fsync mode."""
    return name == "millpond" or name.startswith(REVISION_PREFIX)


def get(name: str) -> Target:
    if name.startswith(REVISION_PREFIX):
        from millpond.bench.targets import revision

        return revision.target(name[len(REVISION_PREFIX):])
    if name not in TARGETS:
        raise KeyError(f"unknown target {name!r}; known: {', '.join(TARGETS)}, millpond@REV")
    module, _, attr = TARGETS[name].partition(":")
    return getattr(importlib.import_module(module), attr or "TARGET")


class LocalServer:
    """A server process we started: its address, its durability (the report's fsync column), and its CPU time
    and memory read from /proc."""

    def __init__(self, address: str, fsync: str, pid: int) -> None:
        self.address = address
        self.fsync = fsync
        self.pid = pid

    def cpu_s(self) -> float | None:
        return proc_cpu_s(self.pid)

    def rss_bytes(self) -> int | None:
        return proc_rss_bytes(self.pid)


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of process ``pid`` in seconds, from /proc (None where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def proc_rss_bytes(pid: int) -> int | None:
    """Resident memory of process ``pid`` in bytes, from VmRSS in /proc/PID/status (None where there is none)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB (KiB)
    except (OSError, ValueError, IndexError):
        pass
    return None
