# The command line of `millpond bench` and `python -m millpond.bench`: options -> Params, a profile -> steps, steps
# run against each target (one broker per fsync mode and repeat; millpond and the peers interleaved, A B A B, so drift
# hits all alike; this tree and other millpond revisions (`--against REV`) alternate step by step, their brokers
# up side by side), then the table, JSON, charts or bench/RESULTS.md. Owns the run order, which targets run and
# the exit codes (0 ok, 1 aborted run, 2 bad usage); must not know how a workload measures or a broker is driven.
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
from dataclasses import replace
from typing import Any, Callable

from pathlib import Path

from millpond.bench import machine, profiles, report, results, soak, targets, workloads
from millpond.bench.payload import PayloadError
from millpond.bench.plans import FSYNC_MODES, Params
from millpond.bench.progress import Progress

PROFILES = ("quick", "full", "compare", "results")
# limits, queues and fanout have reports of their own: bench/limits_workload.py, queues.py, fanout.py
WORKLOADS = tuple(workloads.WORKLOADS) + ("limits", "queues", "fanout")
ALIASES = {"send-await": "send_await"}
DEFAULT_DURATION_S = {"produce": 3.0, "consume": 3.0, "e2e": 5.0, "send_await": 3.0, "group_consume": 3.0,
                      "rebalance": 3.0, "soak": 20.0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workload", nargs="?", default="quick", choices=PROFILES + WORKLOADS + tuple(ALIASES),
                   metavar="WORKLOAD",
                   help="quick (default, about 30 s); full (every workload, installed peers included); compare "
                        "(millpond and --peers on the shared workloads); results (full, --repeat 3, written to "
                        "bench/RESULTS.md); or one workload: " + ", ".join(WORKLOADS)
                        + "".join(f" ({alias} is {name})" for alias, name in ALIASES.items()))
    p.add_argument("--record-bytes", type=int, default=None, metavar="B",
                   help="value size in bytes (profiles: 100 and 1024; single workloads: 100)")
    p.add_argument("--count", type=int, metavar="N", help="records per run (wins over --duration-s)")
    p.add_argument("--duration-s", type=float, metavar="S",
                   help="seconds of sending per run (default: produce/consume/send_await 3, e2e 5, soak 20, at "
                        f"most {soak.DURATION_S_MAX:g})")
    p.add_argument("--partitions", type=_partition_counts, default=(1,), metavar="N[,N...]",
                   help="partitions per topic (default 1); several, comma-separated, run a single workload once per "
                        "count, interleaved (e.g. --keys 1000 --partitions 1,64: keyed produce over 1 and 64 "
                        "partitions side by side, and the spread goal judged on them)")
    p.add_argument("--keys", type=int, default=0, metavar="N",
                   help="produce: records carry N distinct keys, cycled, so Kafka's partitioner spreads them over "
                        "the partitions (default 0: no keys, one sticky partition per batch)")
    p.add_argument("--producers", type=int, default=1, help="producer processes for produce (default 1)")
    p.add_argument("--batch-bytes", type=int, metavar="B", help="producer batch size in bytes (default: client's)")
    p.add_argument("--linger-s", type=float, metavar="S",
                   help="producer linger in seconds (default: client's; e2e: 0)")
    p.add_argument("--fsync", metavar="MODES",
                   help="broker durability mode, or several comma-separated, each run in turn: "
                        f"{', '.join(FSYNC_MODES)} (default always; full and results: always,never)")
    p.add_argument("--rate", type=int, default=5000, metavar="R",
                   help="e2e and soak send rate, records/s (default 5000)")
    p.add_argument("--warmup-s", type=float, default=0.5, metavar="S",
                   help="unmeasured warm-up before each run, seconds (default 0.5)")
    p.add_argument("--payload-file", metavar="PATH", help="use this file's lines as the records")
    p.add_argument("--broker", metavar="HOST:PORT", help="use a running broker instead of starting one")
    p.add_argument("--target", default="millpond",
                   help=f"what to measure: {', '.join(targets.TARGETS)}, or millpond@REV (millpond at a git "
                        "revision of this checkout); comma-separated for several. The first millpond is the one "
                        "peers and --against revisions are compared with (e.g. --target millpond@HEAD --against "
                        "HEAD~3: two fixed commits, whatever the working tree holds meanwhile)")
    p.add_argument("--against", metavar="REVS",
                   help="also run millpond at these git revisions (comma-separated, e.g. 5f7039c or HEAD~3) beside "
                        "this tree, alternating step by step, each with its own broker and its client in child "
                        "processes (unpacked with git archive; older layouts with top-level broker/client/bench "
                        "packages work too); this tree then also runs hosted the same way (millpond@worktree) and "
                        "the table gets the ratio this tree / revision of each figure, like with like")
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
    p = argparse.ArgumentParser(prog="python -m millpond.bench", description=DESCRIPTION)
    add_arguments(p)
    return p


DESCRIPTION = ("Measure millpond: produce, consume and end-to-end latency against a broker started for the run "
               "(a subprocess on 127.0.0.1 with a temporary data directory) or --broker; with --peers (and in "
               "compare, full and results), against Redis Streams, NATS JetStream and RabbitMQ in the same run "
               "(see bench/peers/README.md).")


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    args.workload = ALIASES.get(args.workload, args.workload)
    problem = _usage_problem(args)
    if problem:
        print(f"millpond bench: {problem}", file=sys.stderr)
        return 2
    unreachable = _unreachable(args.broker)
    if unreachable:
        print(f"millpond bench: {unreachable}", file=sys.stderr)
        return 1
    if args.workload == "limits":
        from millpond.bench import limits_workload

        return limits_workload.run(args)
    if args.workload == "queues":
        from millpond.bench import queues

        return queues.run(args)
    if args.workload == "fanout":
        from millpond.bench import fanout

        return fanout.run(args)
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
    except (workloads.BenchAborted, PayloadError, targets.TargetFailed) as exc:
        print(f"\nmillpond bench: ABORTED, no figures reported: {exc}", file=sys.stderr)
        return 1
    summary = report.summarize(rows)
    doc = report.document(args.workload, mach, summary, repeat, skipped=skipped)
    doc.update(extra)
    doc["command"] = command_line(args)  # what produced these figures, in the JSON and on the results page
    if args.workload == "results":
        out = results.write(doc, args.out, command=doc["command"])
        print(f"wrote {out} and {out.with_suffix('.json')}")
    elif args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(report.table(args.workload, mach, summary, repeat, skipped=skipped))
        if "limits" in extra:
            from millpond.bench import limits_workload

            print("\n" + limits_workload.table(extra["limits"]))
        if "queues" in extra:
            from millpond.bench import queues

            print("\n" + queues.table(extra["queues"]))
        if "fanout" in extra:
            from millpond.bench import fanout

            print("\n" + fanout.table(extra["fanout"]))
    return _plot(summary, args.plot)


def plan(args: argparse.Namespace) -> tuple[list[profiles.Step], tuple[str, ...]]:
    """What a command line runs: its steps (for each fsync mode in turn), and the workloads with a report of their
    own run after them."""
    modes = fsync_modes(args.fsync)
    base = Params(
        record_bytes=args.record_bytes or 100, count=args.count, duration_s=args.duration_s,
        partitions=args.partitions[0], producers=args.producers, batch_bytes=args.batch_bytes, linger_s=args.linger_s,
        fsync=modes[0] if modes else "always", payload_file=args.payload_file, rate_per_s=args.rate,
        warmup_s=args.warmup_s, broker=args.broker, keys=args.keys)
    if args.workload in ("full", "results"):
        return profiles.full(base, modes or ("always", "never")), profiles.FULL_REPORTS
    if args.workload == "quick":
        make = profiles.quick
    elif args.workload == "compare":
        make = profiles.compare
    else:
        if base.duration_s is None:
            base = workloads.with_defaults(base, duration_s=DEFAULT_DURATION_S[args.workload])
        workload = args.workload
        counts = args.partitions
        make = lambda b: [s for n in counts for s in profiles.single(workload, replace(b, partitions=n))]  # noqa: E731
    return [s for mode in modes or ("always",) for s in make(replace(base, fsync=mode))], ()


def _partition_counts(text: str) -> tuple[int, ...]:
    """``--partitions 1,64`` -> (1, 64)."""
    try:
        counts = tuple(dict.fromkeys(int(n) for n in _split_names(text)))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"partition counts are integers >= 1, comma-separated; got {text!r}")
    return counts


def fsync_modes(text: str | None) -> tuple[str, ...]:
    """``--fsync always,never`` -> ('always', 'never'); () when not given."""
    return tuple(dict.fromkeys(_split_names(text or "")))


def _own_report(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """A workload with a report of its own (limits, queues, fanout), run after the steps with the same options."""
    from millpond.bench import fanout, limits_workload, queues

    note = (lambda text: None) if args.no_progress else (lambda text: print(text, file=sys.stderr, flush=True))
    if name == "queues":  # full and results: both fsync modes unless --fsync says otherwise
        return queues.measure(args, note, modes=fsync_modes(args.fsync) or ("always", "never"))
    if name == "fanout":  # the same
        return fanout.measure(args, note, modes=fsync_modes(args.fsync) or ("always", "never"))
    assert name == "limits", name
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
    """--target, then the revisions of --against (as ``millpond@<short commit>``), then the peers: --peers, or
    every peer for compare, full and results; ``--peers none``: none. With millpond and a revision, this tree also
    runs hosted like a revision (``millpond@worktree``): the revision is compared with that, like with like."""
    names = [_revision_label(n) for n in _split_names(args.target)]
    names += [t for t in (_revision_label(targets.REVISION_PREFIX + r) for r in _split_names(args.against or ""))
              if t not in names]
    worktree = targets.REVISION_PREFIX + "worktree"
    if "millpond" in names and worktree not in names and any(targets.is_millpond(n) for n in names[1:]):
        names.insert(names.index("millpond") + 1, worktree)
    peers = args.peers
    if peers is None and args.workload in ("compare", "full", "results"):
        peers = ",".join(n for n in targets.PEERS if n not in targets.OPT_IN_PEERS)
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
               or (None if mine else _not_run_reason(name, steps)))
        if why:
            _skip(name, why, skipped, note)
        else:
            out.append(name)
    return out


def execute(steps: list[profiles.Step], target_names: list[str], repeat: int, progress: Progress,
            skipped: dict[str, str] | None = None) -> list[dict]:
    """Run every step ``repeat`` times against each target, interleaved: per repeat and fsync mode, millpond then
    each peer, one server each. This tree and millpond revisions (``millpond@REV``) have their brokers up side by
    side and take turns step by step (a produce with the consume that reads it being one turn), the order turning
    with each step and repeat, so both meet the same moment of a noisy machine. A peer's durability is its own, so
    it runs each distinct step once per repeat (not once per millpond fsync mode). A target that will not start
    is skipped with a line, from then on."""
    rows: list[dict[str, Any]] = []
    skipped = {} if skipped is None else skipped
    about: dict[str, dict[str, str]] = {}
    ours = [n for n in target_names if targets.is_millpond(n)]
    for r in range(repeat):
        peer_done: set[tuple[str, str]] = set()
        for mode, group in itertools.groupby(steps, key=lambda s: s.params.fsync):
            group = list(group)
            if ours:
                rows += _alternate(ours, mode, group, r, progress, skipped, about)
            for name in target_names:
                if targets.is_millpond(name) or name in skipped or not _ready(name, skipped, progress):
                    continue
                target = targets.get(name)
                todo = [s for s in _steps_for(name, group) if (name, s.label(False)) not in peer_done]
                if not todo:
                    continue
                about.setdefault(name, getattr(target, "describe", dict)())
                try:
                    with target.server(mode, None) as server:
                        filled = None
                        for step in todo:
                            figs, filled = _measure(name, target, server, step, progress, filled)
                            rows.append(_row(name, step, server.fsync, figs, about[name]))
                            peer_done.add((name, step.label(False)))
                except targets.PeerUnavailable as exc:
                    _skip(name, str(exc), skipped, progress.note)
    return rows


def _alternate(names: list[str], mode: str, group: list[profiles.Step], turn: int, progress: Progress,
               skipped: dict[str, str], about: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """Millpond targets (this tree, revisions) at one fsync mode: a broker each, all up at once; each unit of steps
    (a step and the steps that read what it left) runs on each target in turn, starting with a different target
    at each unit and repeat (A B, B A, ...)."""
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        servers: dict[str, Any] = {}
        for name in names:
            if name in skipped or not _ready(name, skipped, progress):
                continue
            target = targets.get(name)
            about.setdefault(name, getattr(target, "describe", dict)())
            try:
                address = group[0].params.broker if name == "millpond" else None
                servers[name] = (target, stack.enter_context(target.server(mode, address)))
            except targets.PeerUnavailable as exc:
                _skip(name, str(exc), skipped, progress.note)
        live = list(servers)
        mine = {name: {id(s) for s in _steps_for(name, group)} for name in live}
        for k, unit in enumerate(_units(group)):
            shift = (turn + k) % len(live) if live else 0
            for name in live[shift:] + live[:shift]:
                target, server = servers[name]
                filled = None
                for step in unit:
                    if id(step) in mine[name]:
                        figs, filled = _measure(name, target, server, step, progress, filled)
                        rows.append(_row(name, step, server.fsync, figs, about[name]))
    return rows


def settle() -> None:
    """Before each step: write back every dirty page (sync(2)), so that no step pays for the writeback of what an
    earlier step (another target's, as like as not) left in the page cache. Without it, on a 2-core machine, the
    step after a large produce ran up to 2x slower than the same step after a small one."""
    if hasattr(os, "sync"):
        os.sync()


def _units(steps: list[profiles.Step]) -> list[list[profiles.Step]]:
    """Steps in turns: each step with the steps right after it that read what it left (``reads_previous``)."""
    out: list[list[profiles.Step]] = []
    for s in steps:
        if s.reads_previous and out:
            out[-1].append(s)
        else:
            out.append([s])
    return out


def _ready(name: str, skipped: dict[str, str], progress: Progress) -> bool:
    """Whether ``name`` can run here now; if not, it is skipped with a line (from then on)."""
    why = targets.get(name).missing()
    if why:
        _skip(name, why, skipped, progress.note)
    return not why


def _measure(name: str, target: Any, server: Any, step: profiles.Step, progress: Progress,
             filled: workloads.Filled | None) -> tuple[dict, workloads.Filled | None]:
    progress.step(f"{name} {step.label(targets.is_millpond(name))}")
    settle()
    figs, filled = _run_step(target, server, step, progress, filled)
    progress.done(_summary_line(figs))
    return figs, filled


def _skip(name: str, why: str, skipped: dict[str, str], note: Callable[[str], None]) -> None:
    skipped[name] = why
    note(f"skipping {name}: {why}")


def _steps_for(name: str, steps: list[profiles.Step]) -> list[profiles.Step]:
    """The steps ``name`` runs: all for this tree's millpond; for a revision all but millpond-only ones; for a peer
    each distinct step once, none millpond's only; none a target has no loop for (e.g. send_await)."""
    if name == "millpond":
        return steps
    target = targets.get(name)
    mine = [s for s in steps if s.workload not in workloads.MILLPOND_ONLY
            and all(hasattr(target, m) for m in workloads.TARGET_METHODS.get(s.workload, ()))]
    if targets.is_millpond(name):
        return mine
    seen: dict[str, profiles.Step] = {}
    for s in mine:
        seen.setdefault(s.label(False), s)
    return list(seen.values())


def _not_run_reason(name: str, steps: list[profiles.Step]) -> str:
    """Why ``name`` runs none of ``steps``."""
    workload = next((s.workload for s in steps if s.workload in workloads.MILLPOND_ONLY), None)
    if workload is not None and targets.is_millpond(name):
        return f"{workload}: runs against this tree's millpond only"
    if workload is not None:
        return f"{workload}: {workloads.MILLPOND_ONLY[workload]}"
    return f"{steps[0].workload}: no {steps[0].workload} loop for {name}" if steps else "nothing to run"


def _revision_label(name: str) -> str:
    """``millpond@HEAD~1`` -> ``millpond@<short commit>`` (unchanged if git cannot say: the run then skips it)."""
    if not name.startswith(targets.REVISION_PREFIX):
        return name
    from millpond.bench.targets import revision

    try:
        return revision.label(name[len(targets.REVISION_PREFIX):])
    except revision.RevisionError:
        return name


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
    return {"target": target, "step": f"{target} {step.label(targets.is_millpond(target))}", "workload": step.workload,
            "record": "file lines" if p.payload_file else f"{p.record_bytes:,} B",
            "record_bytes": None if p.payload_file else p.record_bytes, "payload_file": p.payload_file,
            "fsync": fsync, "partitions": p.partitions, "keys": p.keys,
            "producers": p.producers if step.workload == "produce" else 1,
            "rate_per_s": p.rate_per_s if step.workload in profiles.RATED else None, "about": about or {},
            "revision": target[len(targets.REVISION_PREFIX):] if target.startswith(targets.REVISION_PREFIX) else None,
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


def _unreachable(broker: str | None) -> str | None:
    """Why ``--broker`` cannot be used (one line: the address and the reason), or None: asked once before any
    workload starts, so a wrong address is not a traceback from deep inside one."""
    if broker is None:
        return None
    from millpond.client.errors import ConnectionClosedError
    from millpond.client.sync import connect

    try:
        with connect(broker, client_id="bench-admin"):
            return None
    except ConnectionClosedError as exc:
        return exc.message
    except ValueError as exc:  # not HOST:PORT, a port out of range
        return str(exc)


def _usage_problem(a: argparse.Namespace) -> str:
    bad = [n for n in _split_names(a.target) if n not in targets.TARGETS and not n.startswith(targets.REVISION_PREFIX)]
    if bad:
        return f"unknown target {bad[0]!r}; known: {', '.join(targets.TARGETS)}, millpond@REV"
    bad = [m for m in fsync_modes(a.fsync) if m not in FSYNC_MODES]
    if bad or (a.fsync is not None and not fsync_modes(a.fsync)):
        return f"--fsync: unknown mode {(bad or [a.fsync])[0]!r}; known: {', '.join(FSYNC_MODES)}"
    if a.workload == "limits" and len(fsync_modes(a.fsync)) > 1:
        return "limits runs at one --fsync mode"
    if a.against is not None and not _split_names(a.against):
        return "--against: name a git revision, e.g. --against HEAD~1"
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
        (len(a.partitions) > 1 and a.workload in PROFILES, "several --partitions go with a single workload, e.g. "
         "`millpond bench produce --keys 1000 --partitions 1,64`"),
        (a.producers < 1, "--producers must be >= 1"),
        (a.rate < 1, "--rate must be >= 1"),
        (a.repeat is not None and a.repeat < 1, "--repeat must be >= 1"),
        (a.warmup_s < 0, "--warmup-s must be >= 0"),
        (a.broker is not None and ":" not in a.broker, "--broker must be HOST:PORT"),
    ]
    return next((msg for bad, msg in checks if bad), "")
