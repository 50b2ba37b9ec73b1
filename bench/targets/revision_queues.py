# A git revision of millpond in `millpond bench queues` (`--against REV`, `--target millpond@REV`): the revision's
# broker and client measured with this tree's queue loops, so the figures differ only by what the revision's code
# does. The revision is unpacked as for the topic workloads (bench.targets.revision); a child process then runs
# `python -m millpond.bench queues --peers none --json` with an import path where `millpond` is that revision's
# package but for its `bench` folder, which is this tree's (links in a temporary folder). The broker it starts and
# the wake-up receiver it spawns inherit that path, so they run the revision's code too. The child's rows come back
# as this target's. Must not know how figures are summarised.
from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from millpond.bench.targets import PeerUnavailable, revision

BENCH = Path(__file__).resolve().parent.parent  # this tree's bench folder
RUN_TIMEOUT_S = 900


class RevisionQueues:
    """``millpond@REV`` in the queues benchmark: ``rows(mode, args)`` runs every row in a child process. The fan-out
    benchmark's revisions are the same with ``workload`` "fanout"."""

    workload, rows_name = "queues", "queue"  # the bench command the child runs; its rows, in the skip line

    def __init__(self, rev: str) -> None:
        self.rev = rev
        self.name = revision.PREFIX + rev

    def missing(self) -> str | None:
        why = revision.target(self.rev).missing()
        if why is None and not checkout(self.rev).prefix:
            why = f"{self.name} predates the millpond package layout (and queues)"
        return why

    def describe(self) -> dict[str, str]:
        about = revision.target(self.rev).describe()
        about["client"] = "its own client and broker, driven by this tree's queue loops in a child process"
        return about

    def rows(self, mode: str, args: argparse.Namespace) -> list[dict[str, Any]]:
        """Every row at fsync ``mode``, one repeat, as this target's rows. Raises PeerUnavailable with the child's
        last error line when the revision cannot run them (e.g. its client has no queues)."""
        argv = [sys.executable, "-P", "-m", "millpond.bench", self.workload, "--peers", "none", "--fsync", mode,
                "--json", "--no-progress", "--warmup-s", str(args.warmup_s),
                "--record-bytes", str(args.record_bytes or 100)]
        if args.count:
            argv += ["--count", str(args.count)]
        elif args.duration_s:
            argv += ["--duration-s", str(args.duration_s)]
        root = overlay(self.rev)
        env = {**os.environ, "PYTHONPATH": str(root)}
        try:
            out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=str(root), timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise PeerUnavailable(f"{self.name}: no result after {RUN_TIMEOUT_S} s") from exc
        if out.returncode != 0 or not out.stdout.strip().startswith("{"):
            lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
            raise PeerUnavailable(f"{self.name} could not run the {self.rows_name} rows: "
                                  f"{lines[-1][:400] if lines else f'exit status {out.returncode}'}")
        doc = json.loads(out.stdout)
        return [{"target": self.name, "row": g["row"], "fsync": g["fsync"], "figures": figs}
                for g in doc["results"] for figs in g["repeats"]]


def checkout(rev: str) -> revision.Tree:
    return revision.checkout(rev)


@lru_cache(maxsize=None)
def overlay(rev: str) -> Path:
    """A folder holding ``millpond/``: links to every entry of the revision's package but ``bench``, which links
    to this tree's."""
    pkg = checkout(rev).import_root / "millpond"
    base = Path(tempfile.mkdtemp(prefix="millpond-bench-queues-rev-"))
    atexit.register(shutil.rmtree, base, True)
    (base / "millpond").mkdir()
    for entry in pkg.iterdir():
        (base / "millpond" / entry.name).symlink_to(BENCH if entry.name == "bench" else entry,
                                                     target_is_directory=entry.is_dir())
    return base
