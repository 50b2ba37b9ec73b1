# The file primitives from worker threads: atomic saves never interleave, and of saves started in order the last
# one started is what stays on disk, whichever thread finishes first.
from __future__ import annotations

import random
import threading

from millpond.broker.core.log.files import load_record, next_save_version, record_saver, save_record


def test_of_two_saves_started_in_order_the_later_wins_whatever_runs_first(tmp_path):
    path = tmp_path / "policies"
    older = record_saver(path, ["old"])
    newer = record_saver(path, ["new"])
    assert newer() is True
    assert older() is False  # it would have put older content over newer: skipped
    assert load_record(path) == ["new"]
    assert not (tmp_path / "policies.tmp").exists()


def test_many_threads_saving_one_path_leave_the_last_started(tmp_path):
    path = tmp_path / "policies"
    savers = [record_saver(path, {"n": n, "pad": "x" * 10_000}) for n in range(24)]
    order = list(range(24))
    random.Random(7).shuffle(order)
    gate = threading.Barrier(len(order))

    def run(k: int) -> None:
        gate.wait()
        savers[k]()

    threads = [threading.Thread(target=run, args=(k,)) for k in order]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert load_record(path)["n"] == 23


def test_versions_can_be_taken_apart_from_the_write(tmp_path):
    path = tmp_path / "r"
    first, second = next_save_version(), next_save_version()
    assert second > first
    assert save_record(path, 2, version=second) is True
    assert save_record(path, 1, version=first) is False
    assert load_record(path) == 2
    assert save_record(path, 3) is True  # an unversioned save always writes
    assert load_record(path) == 3
