# The command line of `millpond bench` and `python -m bench`: options -> Params, a profile -> steps, steps run
# against each target (one broker per fsync mode and repeat; millpond and the peers interleaved, A B A B, so drift
# hits all alike), then the table, JSON, charts or bench/RESULTS.md. Owns the run order, which targets run and the
# exit codes (0 ok, 1 aborted run, 2 bad usage); must not know how a workload measures or a broker is driven.
from __future__ import annotations

import argparse
import itertools
import json
import sys
from typing import Any, Callable

from pathlib import Path

from millpond.bench import machine, profiles, report, results, soak, targets, workloads
from millpond.bench.payload import PayloadError
from millpond.bench.plans import FSYNC_MODES, Params
from millpond.bench.progress import Progress

PROFILES = ("quick", "full", "compare", "results")
WORKLOADS = tuple(workloads.WORKLOADS) + ("limits",)  # limits: its own report (bench/limits_workload.py)
DEFAULT_DURATION_S = {"produce": 3.0, "consume": 3.0, "e2e": 5.0, "group_consume": 3.0, "rebalance": 3.0,
                      "soak": 20.0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workload", nargs="?", default="quick", choices=PROFILES + WORKLOADS,
                   help="quick (default, about 30 s); full (every workload, installed peers included); compare "
                        "(millpond and --peers on the shared workloads); results (full, --repeat 3, written to "
                        "bench/RESULTS.md); or one workload: " + ", ".join(WORKLOADS))
    p.add_argument("--record-bytes", type=int, default=None, metavar="B",
                   help="value size in bytes (profiles: 100 and 1024; single workloads: 100)")
    p.add_argument("--count", type=int, metavar="N", help="records per run (wins over --duration-s)")
    p.add_argument("--duration-s", type=float, metavar="S",
                   help="seconds of sending per run (default: produce/consume 3, e2e 5, soak 20, at most "
                        f"{soak.DURATION_S_MAX:g})")
    p.add_argument("--partitions", type=int, default=1, help="partitions per topic (default 1)")
    p.add_argument("--producers", type=int, default=1, help="producer processes for produce (default 1)")
    p.add_argument("--batch-bytes", type=int, metavar="B", help="producer batch size in bytes (default: client's)")
    p.add_argument("--linger-s", type=float, metavar="S",
                   help="producer linger in seconds (default: client's; e2e: 0)")
    p.add_argument("--fsync", choices=FSYNC_MODES,
                   help="broker durability mode (default always; full: always and never)")
    p.add_argument("--rate", type=int, default=5000, metavar="R",
                   help="e2e and soak send rate, records/s (default 5000)")
    p.add_argument("--warmup-s", type=float, default=0.5, metavar="S",
                   help="unmeasured warm-up before each run, seconds (default 0.5)")
    p.add_argument("--payload-file", metavar="PATH", help="use this file's lines as the records")
    p.add_argument("--broker", metavar="HOST:PORT", help="use a running broker instead of starting one")
    p.add_argument("--target", default="millpond", help=f"what to measure: {', '.join(targets.TARGETS)}")
    p.add_argument("--peers", metavar="LIST",
                   help=f"peers to run beside millpond, comma-separated: {', '.join(targets.PEERS)} (redis = with "
                        "and without AOF), or none (compare, full and results: every peer; one not installed is "
                        "skipped with a line saying so)")
    p.add_argument("--repeat", type=int, default=None, metavar="N",
                   help="run everything N times, targets interleaved; median (min-max) (default 1; results: 3)")
    p.add_argument("--json", action="store_true", help="print JSON (figure names carry units) instead of a table")
    p.add_argument("--plot", nargs="?", const="bench-plots", metavar="DIR",
                   help="also write PNG charts (throughput, latency percentiles) to DIR (default ./bench-plots); "
                        "needs matplotlib: pip install 'millpond[plot]'")
    p.add_argument("--out", metavar="PATH", help=f"results: where to write the Markdown (default {results.DEFAULT})")
    p.add_argument("--from-json", metavar="PATH",
                   help="results: render from a document saved with --json (or RESULTS.json) instead of running")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=DESCRIPTION)
    add_arguments(p)
    return p


DESCRIPTION = ("Measure millpond: produce, consume and end-to-end latency against a broker started for the run "
               "(a subprocess on 127.0.0.1 with a temporary data directory) or --broker; with --peers (and in "
               "compare, full and results), against Redis Streams, NATS JetStream and RabbitMQ in the same run "
               "(see bench/peers/README.md).")


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    problem = _usage_problem(args)
    if problem:
        print(f"millpond bench: {problem}", file=sys.stderr)
        return 2
    if args.workload == "limits":
        from millpond.bench import limits_workload

        return limits_workload.run(args)
    if args.workload == "results" and args.from_json:
        doc = json.loads(Path(args.from_json).read_text())
        out = results.write(doc, args.out, command=f"millpond bench results --from-json {args.from_json}")
        print(f"wrote {out}")
        return _plot(doc["results"], args.plot)
    repeat = args.repeat or (3 if args.workload == "results" else 1)
    steps, reports = plan(args)
    names = target_names(args)
    if args.plot and not _has_matplotlib():
        print("millpond bench: --plot needs matplotlib: pip install 'millpond[plot]'", file=sys.stderr)
        return 2
    mach = machine.describe()
    skipped: dict[str, str] = {}
    available = available_targets(names, steps, skipped, note=lambda t: print(t, file=sys.stderr))
    progress = Progress(sum(len(_steps_for(n, steps)) for n in available) * repeat, enabled=not args.no_progress)
    try:
        rows = execute(steps, available, repeat, progress, skipped)
        extra = {name: _own_report(name, args) for name in reports}
    except (workloads.BenchAborted, PayloadError) as exc:
        print(f"\nmillpond bench: ABORTED, no figures reported: {exc}", file=sys.stderr)
        return 1
    summary = report.summarize(rows)
    doc = report.document(args.workload, mach, summary, repeat, skipped=skipped)
    doc.update(extra)
    if args.workload == "results":
        doc["command"] = command_line(args)
        out = results.write(doc, args.out, command=doc["command"])
        print(f"wrote {out} and {out.with_suffix('.json')}")
    elif args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(report.table(args.workload, mach, summary, repeat, skipped=skipped))
        if "limits" in extra:
            from millpond.bench import limits_workload

            print("\n" + limits_workload.table(extra["limits"]))
    return _plot(summary, args.plot)


def plan(args: argparse.Namespace) -> tuple[list[profiles.Step], tuple[str, ...]]:
    """What a command line runs: its steps, and the workloads with a report of their own run after them."""
    base = Params(
        record_bytes=args.record_bytes or 100, count=args.count, duration_s=args.duration_s,
        partitions=args.partitions, producers=args.producers, batch_bytes=args.batch_bytes, linger_s=args.linger_s,
        fsync=args.fsync or "always", payload_file=args.payload_file, rate_per_s=args.rate, warmup_s=args.warmup_s,
        broker=args.broker)
    if args.workload == "quick":
        return profiles.quick(base), ()
    if args.workload in ("full", "results"):
        return profiles.full(base, (args.fsync,) if args.fsync else ("always", "never")), profiles.FULL_REPORTS
    if args.workload == "compare":
        return profiles.compare(base), ()
    if base.duration_s is None:
        base = workloads.with_defaults(base, duration_s=DEFAULT_DURATION_S[args.workload])
    return profiles.single(args.workload, base), ()


def _own_report(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """A workload with a report of its own (limits), run after the steps with the same options."""
    from millpond.bench import limits_workload

    assert name == "limits", name
    note = (lambda text: None) if args.no_progress else (lambda text: print(text, file=sys.stderr, flush=True))
    return limits_workload.measure(args, note)


def command_line(args: argparse.Namespace) -> str:
    """``millpond bench WORKLOAD`` with the options that differ from their defaults: what produced a result."""
    defaults = vars(build_parser().parse_args([]))
    parts = ["millpond bench", args.workload]
    for key, value in vars(args).items():
        if key in defaults and key != "workload" and value != defaults[key]:
            parts.append(f"--{key.replace('_', '-')}" + ("" if value is True else f" {value}"))
    return " ".join(parts)


def target_names(args: argparse.Namespace) -> list[str]:
    """--target, then the peers: --peers, or every peer for compare, full and results; ``--peers none``: none."""
    names = [n.strip() for n in args.target.split(",") if n.strip()]
    peers = args.peers
    if peers is None and args.workload in ("compare", "full", "results"):
        peers = ",".join(targets.PEERS)
    if peers and peers != "none":
        names += [t for t in targets.peer_targets(_split_names(peers)) if t not in names]
    return names


def available_targets(names: list[str], steps: list[profiles.Step], skipped: dict[str, str],
                      note: Callable[[str], None]) -> list[str]:
    """The targets that can run these steps here; each other one gets one line saying why, kept in ``skipped``."""
    out = []
    for name in names:
        target = targets.get(name)
        unsupported = getattr(target, "unsupported", lambda p: None)
        mine = _steps_for(name, steps)
        why = (target.missing() or next(filter(None, (unsupported(s.params) for s in mine)), None)
               or (None if mine else _millpond_only_reason(steps)))
        if why:
            _skip(name, why, skipped, note)
        else:
            out.append(name)
    return out


def execute(steps: list[profiles.Step], target_names: list[str], repeat: int, progress: Progress,
            skipped: dict[str, str] | None = None) -> list[dict]:
    """Run every step ``repeat`` times against each target, interleaved: per repeat and fsync mode, millpond then
    each peer, one server each. A peer's durability is its own, so it runs each distinct step once per repeat
    (not once per millpond fsync mode). A peer that will not start is skipped with a line, from then on."""
    rows: list[dict[str, Any]] = []
    skipped = {} if skipped is None else skipped
    about: dict[str, dict[str, str]] = {}
    for _ in range(repeat):
        peer_done: set[tuple[str, str]] = set()
        for mode, group in itertools.groupby(steps, key=lambda s: s.params.fsync):
            group = list(group)
            for name in target_names:
                if name in skipped:
                    continue
                target = targets.get(name)
                why = target.missing()
                if why:
                    _skip(name, why, skipped, progress.note)
                    continue
                todo = group if name == "millpond" else [s for s in _steps_for(name, group)
                                                         if (name, s.label(False)) not in peer_done]
                if not todo:
                    continue
                if name not in about:
                    about[name] = getattr(target, "describe", dict)()
                try:
                    with target.server(mode, group[0].params.broker if name == "millpond" else None) as server:
                        filled = None
                        for step in todo:
                            label = step.label(name == "millpond")
                            progress.step(f"{name} {label}")
                            figs, filled = _run_step(target, server, step, progress, filled)
                            progress.done(_summary_line(figs))
                            rows.append(_row(name, step, server.fsync, figs, about[name]))
                            peer_done.add((name, step.label(False)))
                except targets.PeerUnavailable as exc:
                    _skip(name, str(exc), skipped, progress.note)
    return rows


def _skip(name: str, why: str, skipped: dict[str, str], note: Callable[[str], None]) -> None:
    skipped[name] = why
    note(f"skipping {name}: {why}")


def _steps_for(name: str, steps: list[profiles.Step]) -> list[profiles.Step]:
    """The steps ``name`` runs: all for millpond; for a peer each distinct step once, none millpond's only."""
    if name == "millpond":
        return steps
    seen: dict[str, profiles.Step] = {}
    for s in steps:
        if s.workload not in workloads.MILLPOND_ONLY:
            seen.setdefault(s.label(False), s)
    return list(seen.values())


def _millpond_only_reason(steps: list[profiles.Step]) -> str:
    workload = next(s.workload for s in steps if s.workload in workloads.MILLPOND_ONLY)
    return f"{workload}: {workloads.MILLPOND_ONLY[workload]}"


def _split_names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _plot(summary: list[dict[str, Any]], directory: str | None) -> int:
    if not directory:
        return 0
    from millpond.bench import plot

    for path in plot.write(summary, Path(directory)):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _run_step(target: Any, server: Any, step: profiles.Step, progress: Progress,
              filled: workloads.Filled | None) -> tuple[dict, workloads.Filled | None]:
    if step.workload == "produce":
        return workloads.produce(target, server, step.params, progress)
    if step.workload == "consume":
        return workloads.consume(target, server, step.params, progress, filled if step.reads_previous else None), None
    return workloads.WORKLOADS[step.workload](target, server, step.params, progress), None


def _row(target: str, step: profiles.Step, fsync: str, figs: dict, about: dict[str, str] | None = None
         ) -> dict[str, Any]:
    p = step.params
    return {"target": target, "step": f"{target} {step.label(target == 'millpond')}", "workload": step.workload,
            "record": "file lines" if p.payload_file else f"{p.record_bytes:,} B",
            "record_bytes": None if p.payload_file else p.record_bytes, "payload_file": p.payload_file,
            "fsync": fsync, "partitions": p.partitions, "producers": p.producers if step.workload == "produce" else 1,
            "rate_per_s": p.rate_per_s if step.workload in ("e2e", "soak") else None, "about": about or {},
            "figures": figs}


def _summary_line(f: dict) -> str:
    if f.get("records_per_s") is None:  # rebalance: times, not rates
        return ", ".join(f"{k} {v:.2f}" for k, v in f.items() if k.endswith("_s") and isinstance(v, (int, float)))
    text = f"{f['records_per_s']:,.0f} records/s, {f['mb_per_s']:,.1f} MB/s"
    if f.get("rss_mb_max") is not None:  # soak
        mb = lambda x: "?" if x is None else f"{x:,.1f}"
        text += f", broker RSS {mb(f['rss_mb_start'])} -> {mb(f['rss_mb_end'])} MB (max {mb(f['rss_mb_max'])})"
    if f.get("p99_ms") is not None:
        text += f", p50 {f['p50_ms']:.2f} ms, p99 {f['p99_ms']:.2f} ms"
    return text


def _usage_problem(a: argparse.Namespace) -> str:
    bad = [n for n in a.target.split(",") if n.strip() and n.strip() not in targets.TARGETS]
    if bad:
        return f"unknown target {bad[0]!r}; known: {', '.join(targets.TARGETS)}"
    bad = [n for n in _split_names(a.peers or "") if n not in targets.PEERS and a.peers != "none"]
    if bad:
        return f"unknown peer {bad[0]!r}; known: {', '.join(targets.PEERS)}, none"
    if (a.out or a.from_json) and a.workload != "results":
        return "--out and --from-json go with `results`"
    if a.from_json and not Path(a.from_json).is_file():
        return f"--from-json: no such file {a.from_json}"
    checks = [
        (a.record_bytes is not None and a.record_bytes < 1, "--record-bytes must be >= 1"),
        (a.count is not None and a.count < 1, "--count must be >= 1"),
        (a.duration_s is not None and a.duration_s <= 0, "--duration-s must be > 0"),
        (a.workload == "soak" and (a.duration_s or 0) > soak.DURATION_S_MAX,
         f"soak: --duration-s must be at most {soak.DURATION_S_MAX:g}"),
        (a.workload == "soak" and a.count is not None, "soak runs for --duration-s; --count does not apply"),
        (a.partitions < 1, "--partitions must be >= 1"),
        (a.producers < 1, "--producers must be >= 1"),
        (a.rate < 1, "--rate must be >= 1"),
        (a.repeat is not None and a.repeat < 1, "--repeat must be >= 1"),
        (a.warmup_s < 0, "--warmup-s must be >= 0"),
        (a.broker is not None and ":" not in a.broker, "--broker must be HOST:PORT"),
    ]
    return next((msg for bad, msg in checks if bad), "")
