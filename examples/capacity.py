"""Capacity estimate: the back-of-the-envelope method, with a measured rate instead of a guessed one.

What it shows: from five inputs (daily active users, events per user per day, the peak factor, the payload of one
event in bytes, the days it is kept) it works out

    events per day      = daily active users x events per user per day
    average events/s    = events per day / 86,400 s
    peak events/s       = average x peak factor
    MB/s                = events/s x payload bytes / 10^6      (average and peak, what producers send)
    storage             = events per day x payload bytes x retention days   (GB/day, and GB or TB in all)

then measures what one millpond process takes on this machine with that payload (`millpond bench produce
--record-bytes PAYLOAD --duration-s 2 --json`: a broker started for the run, fsync before every acknowledgement,
the default) and plans each process at half that rate (the headroom: spikes above the peak factor, consumers
reading, growth). It says how many millpond processes carry the peak (each holding its own topics and queues; the
storage counts too, at most 4 TB of disk per process), or, past 4 processes, which distributed system to move to:
Apache Kafka or Redpanda for a log (topics, consumer groups), Amazon SQS and SNS for queues and fan-out. Units are
decimal (1 MB = 10^6 bytes, 1 GB = 10^9, 1 TB = 10^12).

Run it (the inputs below by default; the benchmark takes about 4 s):

    python examples/capacity.py
    python examples/capacity.py --users 200e6 --events-per-user 100 --peak-factor 4 --payload-bytes 1000 --days 14
    python examples/capacity.py --kind queue --records-per-s 50000    # a rate you measured, no benchmark
    python examples/capacity.py --broker 127.0.0.1:7420               # measure a running `millpond serve`
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable

SECONDS_PER_DAY = 86_400
MB, GB, TB = 10**6, 10**9, 10**12
HEADROOM = 0.5  # plan each process at this share of the rate measured
DISK_BYTES_PER_PROCESS = 4 * TB  # the retained data one process keeps on its machine's disk, at most
PROCESSES_MAX = 4  # past this many processes (topics and queues sharded by hand), move to a distributed system
BENCH_S = 2.0
DISTRIBUTED = {"log": "Apache Kafka or Redpanda (topics and consumer groups: the same names and semantics)",
               "queue": "Amazon SQS and SNS (queues and fan-out: the same names and semantics)"}


@dataclass(frozen=True)
class Load:
    """The inputs: ``kind`` is ``"log"`` (topics read by consumer groups) or ``"queue"`` (queues, fan-out)."""

    users: int  # daily active users
    events_per_user: float  # per user per day
    peak_factor: float  # peak rate / average rate
    payload_bytes: int  # one event
    days: float  # retention
    kind: str = "log"


@dataclass(frozen=True)
class Estimate:
    events_per_day: float
    avg_events_per_s: float
    peak_events_per_s: float
    avg_mb_per_s: float  # 10^6 bytes per second
    peak_mb_per_s: float
    gb_per_day: float  # 10^9 bytes
    storage_gb: float  # for the whole retention
    storage_tb: float  # 10^12 bytes
    storage_bytes: float


@dataclass(frozen=True)
class Plan:
    measured_records_per_s: float  # one millpond process, this machine, this payload
    usable_per_process: float  # events/s planned per process (measured x HEADROOM)
    processes_for_rate: int
    processes_for_storage: int
    processes: int  # the larger of the two
    peak_share: float  # peak / (processes x usable): how full the planned processes run at the peak
    move_to: str | None  # the distributed system, when past PROCESSES_MAX
    users_per_process: int  # daily active users one process carries at these per-user figures


def estimate(load: Load) -> Estimate:
    per_day = load.users * load.events_per_user
    avg = per_day / SECONDS_PER_DAY
    peak = avg * load.peak_factor
    bytes_per_day = per_day * load.payload_bytes
    return Estimate(events_per_day=per_day, avg_events_per_s=avg, peak_events_per_s=peak,
                    avg_mb_per_s=avg * load.payload_bytes / MB, peak_mb_per_s=peak * load.payload_bytes / MB,
                    gb_per_day=bytes_per_day / GB, storage_gb=bytes_per_day * load.days / GB,
                    storage_tb=bytes_per_day * load.days / TB, storage_bytes=bytes_per_day * load.days)


def plan(load: Load, est: Estimate, measured_records_per_s: float) -> Plan:
    usable = measured_records_per_s * HEADROOM
    for_rate = max(1, math.ceil(est.peak_events_per_s / usable))
    for_storage = max(1, math.ceil(est.storage_bytes / DISK_BYTES_PER_PROCESS))
    processes = max(for_rate, for_storage)
    return Plan(measured_records_per_s=measured_records_per_s, usable_per_process=usable,
                processes_for_rate=for_rate, processes_for_storage=for_storage, processes=processes,
                peak_share=est.peak_events_per_s / (processes * usable),
                move_to=DISTRIBUTED[load.kind] if processes > PROCESSES_MAX else None,
                users_per_process=math.floor(usable * SECONDS_PER_DAY / (load.events_per_user * load.peak_factor)))


@dataclass(frozen=True)
class Measured:
    records_per_s: float
    mb_per_s: float
    source: str  # where the figure comes from: the command run (and its fsync mode), or "given"


def bench(payload_bytes: int, broker: str | None = None, duration_s: float = BENCH_S) -> Measured:
    """One short `millpond bench produce` with this payload, its JSON read back."""
    args = ["bench", "produce", "--record-bytes", str(payload_bytes), "--duration-s", f"{duration_s:g}", "--json",
            "--no-progress", *(["--broker", broker] if broker else [])]
    done = subprocess.run([sys.executable, "-m", "millpond.broker.cli", *args], capture_output=True, text=True,
                          timeout=120 + duration_s)
    if done.returncode != 0:
        raise SystemExit(f"capacity: millpond bench failed ({done.returncode}): {done.stderr.strip()}")
    [row] = json.loads(done.stdout)["results"]
    command = "millpond " + " ".join(a for a in args if a not in ("--json", "--no-progress"))
    return Measured(row["records_per_s"]["median"], row["mb_per_s"]["median"],
                    f"measured here: {command} (fsync={row['fsync']})")


def run(load: Load, measure: Callable[[int], Measured], *, say: Callable[[str], Any] = print) -> tuple[Estimate, Plan]:
    est = estimate(load)
    say("capacity estimate (decimal units: 1 MB = 10^6 bytes, 1 GB = 10^9 bytes, 1 TB = 10^12 bytes)")
    say(f"  inputs     {load.users:,} daily active users x {load.events_per_user:g} events/user/day, "
        f"peak factor {load.peak_factor:g}, {load.payload_bytes:,} B/event, kept {load.days:g} days")
    say(f"  volume     {est.events_per_day:,.0f} events/day")
    say(f"  rate       average {est.avg_events_per_s:,.1f} events/s, peak {est.peak_events_per_s:,.1f} events/s")
    say(f"  bandwidth  average {est.avg_mb_per_s:,.2f} MB/s, peak {est.peak_mb_per_s:,.2f} MB/s produced "
        f"(each consumer group or subscription reads as much again)")
    say(f"  storage    {est.gb_per_day:,.1f} GB/day; {est.storage_gb:,.1f} GB = {est.storage_tb:,.2f} TB for "
        f"{load.days:g} days (one copy: Kafka's usual replication factor 3 keeps three)")

    m = measure(load.payload_bytes)
    p = plan(load, est, m.records_per_s)
    say(f"\n{m.source}")
    say(f"  one millpond process: {m.records_per_s:,.0f} records/s, {m.mb_per_s:,.1f} MB/s; planned at "
        f"{HEADROOM:.0%} (headroom): {p.usable_per_process:,.0f} events/s per process")
    say(f"  processes for the peak rate: {p.processes_for_rate} "
        f"({est.peak_events_per_s:,.1f} / {p.usable_per_process:,.0f} events/s); "
        f"for the storage: {p.processes_for_storage} "
        f"({est.storage_tb:,.2f} TB / {DISK_BYTES_PER_PROCESS / TB:g} TB each)")
    say(f"  one process carries about {p.users_per_process:,} daily active users at these per-user figures")
    if p.move_to is None:
        say(f"verdict: {p.processes} millpond process{'es' if p.processes > 1 else ''} "
            f"{'carry' if p.processes > 1 else 'carries'} this load, at {p.peak_share:.0%} of the planned rate at "
            f"the peak" + (" (topics and queues split between them)" if p.processes > 1 else ""))
    else:
        say(f"verdict: {p.processes} processes, past the {PROCESSES_MAX} a hand-sharded millpond should grow to: "
            f"move to {p.move_to}")
    return est, p


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Capacity estimate: events/s, MB/s, storage, and the processes "
                                                 "the peak needs, from a short benchmark on this machine.")
    parser.add_argument("--users", type=float, default=20e6, help="daily active users (default 20e6)")
    parser.add_argument("--events-per-user", type=float, default=50, help="events per user per day (default 50)")
    parser.add_argument("--peak-factor", type=float, default=3, help="peak rate / average rate (default 3)")
    parser.add_argument("--payload-bytes", type=int, default=200, help="bytes per event (default 200)")
    parser.add_argument("--days", type=float, default=7, help="retention in days (default 7)")
    parser.add_argument("--kind", choices=sorted(DISTRIBUTED), default="log",
                        help="log: topics and consumer groups; queue: queues and fan-out (default log)")
    parser.add_argument("--records-per-s", type=float, help="one process's measured rate: skip the benchmark")
    parser.add_argument("--bench-s", type=float, default=BENCH_S, help=f"seconds of benchmark (default {BENCH_S:g})")
    parser.add_argument("--broker", metavar="HOST:PORT", help="benchmark a running broker (default: one started)")
    args = parser.parse_args(argv)
    if min(args.users, args.events_per_user, args.peak_factor, args.payload_bytes, args.days) <= 0:
        parser.error("every input must be positive")
    load = Load(round(args.users), args.events_per_user, args.peak_factor, args.payload_bytes, args.days, args.kind)

    def measure(payload_bytes: int) -> Measured:
        if args.records_per_s:
            return Measured(args.records_per_s, args.records_per_s * payload_bytes / MB,
                            f"given: --records-per-s {args.records_per_s:g}")
        return bench(payload_bytes, args.broker, args.bench_s)

    run(load, measure)


if __name__ == "__main__":
    main()
