# Named runs: which workloads, at which sizes and fsync modes. `quick` is the README's main job (about 30 s),
# `full` every workload: produce, consume and e2e at 100 B and 1 KiB and the awaited single-record send at 100 B,
# for fsync always and never, then the consumer group ones and a short soak (the `limits`, `queues` and `fanout`
# workloads, which have reports of their own, are added by the command line), `compare` the workloads the peers
# share (the same ones but groups and soak) at each fsync mode asked for. Which targets run is the command line's
# business. Must not know how a workload is measured.
from __future__ import annotations

from dataclasses import dataclass, replace

from millpond.bench.plans import Params, spread_label

SIZES = (100, 1024)
RATED = ("e2e", "soak")  # workloads that send at a fixed rate (part of their label)
FULL_SOAK_S = 10.0
# workloads with a report of their own (not steps) that `full` and `results` run after their steps
FULL_REPORTS = ("limits", "queues", "fanout")


@dataclass(frozen=True)
class Step:
    """One workload run. ``reads_previous``: a consume that reads the topic the step before it produced."""

    workload: str
    params: Params
    reads_previous: bool = False

    def label(self, fsync: bool = True) -> str:
        """``produce 100 B fsync=always``; without the fsync part for a peer, whose durability is its own; with
        its keys and partitions (``plans.spread_label``)."""
        p = self.params
        size = "file" if p.payload_file else f"{p.record_bytes:,} B"
        rate = f" @{p.rate_per_s:,}/s" if self.workload in RATED else ""
        spread = spread_label(self.workload, p.keys, p.partitions)
        return f"{self.workload} {size}{rate}{spread}" + (f" fsync={p.fsync}" if fsync else "")


def quick(base: Params) -> list[Step]:
    """Produce then consume at 100 B and 1 KiB, e2e latency at the base rate (5,000/s), then a short awaited
    single-record send, one fsync mode."""
    base = replace(base, fsync=base.fsync or "always")
    return _throughput_and_latency(base, duration_s=3.0, e2e_s=5.0, send_s=2.0)


def full(base: Params, modes: tuple[str, ...] = ("always", "never")) -> list[Step]:
    """Produce, consume and e2e at 100 B and 1 KiB per fsync mode; the consumer group workloads after the first
    mode's (same broker); a short soak last, at the first mode (with two modes, on a broker of its own: a broker
    is started per run of steps with one fsync mode)."""
    steps: list[Step] = []
    for k, mode in enumerate(modes):
        steps += _throughput_and_latency(replace(base, fsync=mode), duration_s=4.0, e2e_s=5.0, e2e_sizes=SIZES,
                                         send_s=3.0)
        if k == 0:
            steps += groups(replace(base, fsync=mode))
    return steps + [Step("soak", replace(base, fsync=modes[0], duration_s=FULL_SOAK_S))]


def compare(base: Params) -> list[Step]:
    """What millpond and the peers share: produce then consume, and e2e latency, at 100 B and 1 KiB; the awaited
    single-record send at 100 B."""
    base = replace(base, fsync=base.fsync or "always")
    return _throughput_and_latency(base, duration_s=3.0, e2e_s=5.0, e2e_sizes=SIZES, send_s=3.0)


def single(workload: str, base: Params) -> list[Step]:
    return [Step(workload, base)]


def groups(base: Params) -> list[Step]:
    """Consumer groups (issue 3): a 3-member group consuming 6 partitions at 100 B and 1 KiB, then the time from a
    member's death and from a join to a settled assignment. millpond only: the peers have no server-side groups."""
    base = replace(base, fsync=base.fsync or "always", partitions=max(base.partitions, 6))
    steps = [Step("group_consume", replace(base, record_bytes=size, duration_s=base.duration_s or 3.0))
             for size in SIZES]
    return steps + [Step("rebalance", base)]


def _throughput_and_latency(base: Params, *, duration_s: float, e2e_s: float,
                            e2e_sizes: tuple[int, ...] = (100,), send_s: float) -> list[Step]:
    steps = []
    sizes = (base.record_bytes,) if base.payload_file else SIZES
    for size in sizes:
        p = replace(base, record_bytes=size, duration_s=base.duration_s or duration_s)
        steps.append(Step("produce", p))
        steps.append(Step("consume", p, reads_previous=True))
    for size in ((base.record_bytes,) if base.payload_file else e2e_sizes):
        steps.append(Step("e2e", replace(base, record_bytes=size, duration_s=base.duration_s or e2e_s)))
    size = base.record_bytes if base.payload_file else SIZES[0]
    steps.append(Step("send_await", replace(base, record_bytes=size, duration_s=base.duration_s or send_s)))
    return steps
