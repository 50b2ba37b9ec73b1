# What one fsync="always" sync plan costs as the number of partitions it covers grows, run the three ways the
# request loop can run it: in one worker thread, partition after partition; split over up to SYNC_THREADS threads at
# once (the loop's choice from SYNC_SPLIT_MIN partitions on under sync_method "fsync"); and one syncfs(2) of the
# filesystem (sync_method "syncfs", and "auto" from SYNCFS_AUTO_MIN partitions; left out where not available).
# Each round appends one 4 KiB batch to every partition of a topic on a real LogManager (a temporary data
# directory, or --dir), then times the plan from the call to its end; the ways alternate round by round in one run,
# so the machine's noise falls on all of them.
# Run: python -m millpond.bench.sync_plan [--partitions 1,2,4,8,16,64] [--rounds 15] [--dir PATH] [--json]
"""fsync="always" sync plan time by partition count: one thread, split over several, one syncfs, side by side."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

from millpond.broker.config import TopicDefaults
from millpond.broker.core.log import LogManager
from millpond.broker.core.log.files import SYNCFS_AUTO_MIN, FilesystemSync
from millpond.broker.server import loop
from millpond.broker.wire.batch import check_batch, encode_batch

WAYS = ("one thread", "split", "syncfs")
T0 = 1_700_000_000_000


async def _measure(data_dir: Path, partition_counts: list[int], rounds: int) -> dict[int, dict[str, list[float]]]:
    """Per partition count and way: the seconds each plan took, one per round."""
    manager = LogManager(data_dir, defaults=TopicDefaults(), batch_bytes_max=1 << 20,
                         partitions_max=max(partition_counts), fsync_mode="always", sync_method="fsync")
    manager.open(T0)
    filesystem = FilesystemSync.open(data_dir, "auto")
    if filesystem is not None:
        filesystem.min_parts = 1
    ways = WAYS if filesystem is not None else WAYS[:2]
    blob = encode_batch([(T0, None, b"x" * 4000, None)])
    header = check_batch(blob, 1 << 20)
    out: dict[int, dict[str, list[float]]] = {}
    try:
        for n in partition_counts:
            topic = manager.create_topic(f"p{n}", n, None, T0)
            times: dict[str, list[float]] = {way: [] for way in ways}
            for _ in range(rounds):
                for way in ways:
                    for log in topic.partitions:
                        log.append(blob, header, T0)
                    plan = manager.sync_plan()
                    assert plan is not None and len(plan.parts) == n
                    start = time.perf_counter()
                    if way == "split":
                        error = await loop._run_pieces(plan.split(loop.SYNC_THREADS))
                    else:
                        plan.filesystem = filesystem if way == "syncfs" else None
                        error = await loop._in_thread(plan.run)
                    times[way].append(time.perf_counter() - start)
                    if error is not None:
                        raise error
                    manager.synced(plan, None)
            out[n] = times
    finally:
        manager.close()
        if filesystem is not None:
            filesystem.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m millpond.bench.sync_plan", description=__doc__)
    parser.add_argument("--partitions", default="1,2,4,8,16,64", help="partition counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=15, help="plans per count and way (default 15)")
    parser.add_argument("--dir", type=Path, default=None, help="data directory's parent (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="print the medians as JSON")
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.partitions.split(",") if x.strip()]
    if not counts or min(counts) < 1 or args.rounds < 1:
        parser.error("--partitions needs counts >= 1 and --rounds >= 1")
    with tempfile.TemporaryDirectory(prefix="millpond-sync-", dir=args.dir) as tmp:
        per_plan = trio.run(_measure, Path(tmp), counts, args.rounds)
    medians = {n: {way: statistics.median(v) * 1000 for way, v in ways.items()} for n, ways in per_plan.items()}
    if args.json:
        json.dump({"ms_per_plan_median": {str(n): m for n, m in medians.items()}, "rounds": args.rounds,
                   "sync_threads": loop.SYNC_THREADS, "split_from": loop.SYNC_SPLIT_MIN,
                   "syncfs_from": SYNCFS_AUTO_MIN}, sys.stdout)
        print()
        return 0
    print(f"fsync=\"always\" sync plan, ms per plan, median of {args.rounds} (split: up to {loop.SYNC_THREADS} "
          f"threads, the loop's way from {loop.SYNC_SPLIT_MIN} partitions under sync_method \"fsync\"; syncfs: "
          f"sync_method \"auto\"'s way from {SYNCFS_AUTO_MIN} partitions)")
    print(f"{'partitions':>10}  {'one thread':>10}  {'split':>8}  {'syncfs':>8}")
    for n, m in medians.items():
        syncfs = f"{m['syncfs']:>8.2f}" if "syncfs" in m else f"{'-':>8}"
        print(f"{n:>10}  {m['one thread']:>10.2f}  {m['split']:>8.2f}  {syncfs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

