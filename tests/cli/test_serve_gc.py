# `millpond serve` owns its process, so it sets the garbage collector's thresholds for a broker's many long-lived
# objects (broker/cli/serve.py GC_THRESHOLDS); an embedded broker leaves its host's settings as they are.
from __future__ import annotations

import gc
import subprocess
import sys

import trio

from millpond.broker.cli.serve import GC_THRESHOLDS
from millpond.broker.server.embedded import open_broker

PROBE = """
import gc, sys
from millpond.broker.cli import main, serve
serve.trio.run = lambda fn, broker: print(gc.get_threshold())  # the broker would start here
sys.exit(main(["serve", "--data-dir", sys.argv[1], "--port", "0"]))
"""


def test_serve_sets_the_thresholds_before_it_starts(tmp_path):
    r = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "d")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(GC_THRESHOLDS)
    assert GC_THRESHOLDS != gc.get_threshold()  # not the default, which this process still has


def test_an_embedded_broker_leaves_the_hosts_thresholds(tmp_path):
    before = gc.get_threshold()

    async def main() -> None:
        async with open_broker(tmp_path / "d", fsync="never"):
            assert gc.get_threshold() == before

    trio.run(main)
    assert gc.get_threshold() == before
