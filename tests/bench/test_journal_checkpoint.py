# The checkpoint bench (bench/journal_checkpoint.py) writes a whole checkpoint in bounded steps, deletes what it
# replaced and replays the compacted topic to the same counts (the run checks it and raises otherwise). A small
# run: the figures themselves are measured, not tested.
from __future__ import annotations

from millpond.bench import journal_checkpoint


def test_the_checkpoint_bench_writes_in_steps_and_replays_the_same_queue():
    run = journal_checkpoint.run(3000, 4096)
    assert run["steps"] > 10 and run["deleted_segments"] == 1
    assert run["checkpoint_bytes"] > 3000 * 20  # every message's body is in it
