# The command line of `millpond bench` and `python -m bench`: options -> Params, a profile -> steps, steps run
# against each target (one broker per fsync mode and repeat), then the table or JSON. Owns the run order and the
# exit codes (0 ok, 1 aborted run, 2 bad usage); must not know how a workload measures or a broker is driven.
from __future__ import annotations

import argparse
import itertools
import json
import sys
from typing import Any

from bench import machine, profiles, report, targets, workloads
from bench.payload import PayloadError
from bench.plans import FSYNC_MODES, Params
from bench.progress import Progress

PROFILES = ("quick", "full")
WORKLOADS = tuple(workloads.WORKLOADS)
DEFAULT_DURATION_S = {"produce": 3.0, "consume": 3.0, "e2e": 5.0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workload", nargs="?", default="quick", choices=PROFILES + WORKLOADS,
                   help="quick (default, about 30 s), full, or one workload: " + ", ".join(WORKLOADS))
    p.add_argument("--record-bytes", type=int, default=None, metavar="B",
                   help="value size in bytes (profiles: 100 and 1024; single workloads: 100)")
    p.add_argument("--count", type=int, metavar="N", help="records per run (wins over --duration-s)")
    p.add_argument("--duration-s", type=float, metavar="S",
                   help="seconds of sending per run (default: produce/consume 3, e2e 5)")
    p.add_argument("--partitions", type=int, default=1, help="partitions per topic (default 1)")
    p.add_argument("--producers", type=int, default=1, help="producer processes for produce (default 1)")
    p.add_argument("--batch-bytes", type=int, metavar="B", help="producer batch size in bytes (default: client's)")
    p.add_argument("--linger-s", type=float, metavar="S",
                   help="producer linger in seconds (default: client's; e2e: 0)")
    p.add_argument("--fsync", choices=FSYNC_MODES,
                   help="broker durability mode (default always; full: always and never)")
    p.add_argument("--rate", type=int, default=5000, metavar="R", help="e2e send rate, records/s (default 5000)")
    p.add_argument("--warmup-s", type=float, default=0.5, metavar="S",
                   help="unmeasured warm-up before each run, seconds (default 0.5)")
    p.add_argument("--payload-file", metavar="PATH", help="use this file's lines as the records")
    p.add_argument("--broker", metavar="HOST:PORT", help="use a running broker instead of starting one")
    p.add_argument("--target", default="millpond", help=f"what to measure: {', '.join(targets.TARGETS)}")
    p.add_argument("--repeat", type=int, default=1, metavar="N", help="run everything N times; median (min-max)")
    p.add_argument("--json", action="store_true", help="print JSON (figure names carry units) instead of a table")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=DESCRIPTION)
    add_arguments(p)
    return p


DESCRIPTION = ("Measure millpond: produce, consume and end-to-end latency against a broker started for the run "
               "(a subprocess on 127.0.0.1 with a temporary data directory) or --broker.")


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    problem = _usage_problem(args)
    if problem:
        print(f"millpond bench: {problem}", file=sys.stderr)
        return 2
    base = Params(
        record_bytes=args.record_bytes or 100, count=args.count, duration_s=args.duration_s,
        partitions=args.partitions, producers=args.producers, batch_bytes=args.batch_bytes, linger_s=args.linger_s,
        fsync=args.fsync or "always", payload_file=args.payload_file, rate_per_s=args.rate, warmup_s=args.warmup_s,
        broker=args.broker)
    if args.workload == "quick":
        steps = profiles.quick(base)
    elif args.workload == "full":
        steps = profiles.full(base, (args.fsync,) if args.fsync else ("always", "never"))
    else:
        if base.duration_s is None:
            base = workloads.with_defaults(base, duration_s=DEFAULT_DURATION_S[args.workload])
        steps = profiles.single(args.workload, base)
    names = [n.strip() for n in args.target.split(",") if n.strip()]
    mach = machine.describe()
    progress = Progress(len(steps) * args.repeat * len(names), enabled=not args.no_progress)
    try:
        rows = execute(steps, names, args.repeat, progress)
    except (workloads.BenchAborted, PayloadError) as exc:
        print(f"\nmillpond bench: ABORTED, no figures reported: {exc}", file=sys.stderr)
        return 1
    summary = report.summarize(rows)
    if args.json:
        print(json.dumps(report.document(args.workload, mach, summary, args.repeat), indent=2))
    else:
        print(report.table(args.workload, mach, summary, args.repeat))
    return 0


def execute(steps: list[profiles.Step], target_names: list[str], repeat: int, progress: Progress) -> list[dict]:
    """Run every step ``repeat`` times against each target: one server per (repeat, fsync mode, target)."""
    rows: list[dict[str, Any]] = []
    for _ in range(repeat):
        for mode, group in itertools.groupby(steps, key=lambda s: s.params.fsync):
            group = list(group)
            for name in target_names:
                target = targets.get(name)
                why = target.missing()
                if why:
                    progress.note(f"skipping {name}: {why}")
                    continue
                with target.server(mode, group[0].params.broker) as server:
                    filled = None
                    for step in group:
                        progress.step(f"{name} {step.label()}")
                        figs, filled = _run_step(target, server, step, progress, filled)
                        progress.done(_summary_line(figs))
                        rows.append(_row(name, step, server.fsync, figs))
    return rows


def _run_step(target: Any, server: Any, step: profiles.Step, progress: Progress,
              filled: workloads.Filled | None) -> tuple[dict, workloads.Filled | None]:
    if step.workload == "produce":
        return workloads.produce(target, server, step.params, progress)
    if step.workload == "consume":
        return workloads.consume(target, server, step.params, progress, filled if step.reads_previous else None), None
    return workloads.WORKLOADS[step.workload](target, server, step.params, progress), None


def _row(target: str, step: profiles.Step, fsync: str, figs: dict) -> dict[str, Any]:
    p = step.params
    return {"target": target, "step": f"{target} {step.label()}", "workload": step.workload,
            "record": "file lines" if p.payload_file else f"{p.record_bytes:,} B",
            "record_bytes": None if p.payload_file else p.record_bytes, "payload_file": p.payload_file,
            "fsync": fsync, "partitions": p.partitions, "producers": p.producers if step.workload == "produce" else 1,
            "rate_per_s": p.rate_per_s if step.workload == "e2e" else None, "figures": figs}


def _summary_line(f: dict) -> str:
    text = f"{f['records_per_s']:,.0f} records/s, {f['mb_per_s']:,.1f} MB/s"
    if f.get("p99_ms") is not None:
        text += f", p50 {f['p50_ms']:.2f} ms, p99 {f['p99_ms']:.2f} ms"
    return text


def _usage_problem(a: argparse.Namespace) -> str:
    bad = [n for n in a.target.split(",") if n.strip() and n.strip() not in targets.TARGETS]
    if bad:
        return f"unknown target {bad[0]!r}; known: {', '.join(targets.TARGETS)}"
    checks = [
        (a.record_bytes is not None and a.record_bytes < 1, "--record-bytes must be >= 1"),
        (a.count is not None and a.count < 1, "--count must be >= 1"),
        (a.duration_s is not None and a.duration_s <= 0, "--duration-s must be > 0"),
        (a.partitions < 1, "--partitions must be >= 1"),
        (a.producers < 1, "--producers must be >= 1"),
        (a.rate < 1, "--rate must be >= 1"),
        (a.repeat < 1, "--repeat must be >= 1"),
        (a.warmup_s < 0, "--warmup-s must be >= 0"),
        (a.broker is not None and ":" not in a.broker, "--broker must be HOST:PORT"),
    ]
    return next((msg for bad, msg in checks if bad), "")
