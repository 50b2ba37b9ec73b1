# The core-only CPU benches (bench/fanout_core.py, bench/queues_core.py) still drive the engine to the end: every
# record produced is in every subscribed queue, every message sent is received and deleted (each run checks it and
# raises otherwise), and the figures come out per row. Small runs: the figures themselves are measured, not tested.
from __future__ import annotations

import json

from millpond.bench import fanout_core, queues_core


def test_fanout_core_delivers_every_record_to_every_queue_and_reports_each_row(capsys):
    run = fanout_core.fan_out(3, 450)  # more than one produced batch
    assert (run["subscriptions"], run["records"], run["messages"]) == (3, 450, 1350)
    assert run["deliver_cpu_s"] > 0 and 0 <= run["gc_cpu_s"]
    assert fanout_core.main(["--records", "50", "--repeat", "1", "--subscriptions", "1", "2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(r["subscriptions"], r["records"], len(r["runs_us"])) for r in doc["rows"]] == [(1, 50, 1), (2, 50, 1)]
    assert all(0 <= r["gc_share"] for r in doc["rows"])


def test_queues_core_receives_and_deletes_every_message_it_sent(capsys):
    run = queues_core.one_run(200)
    assert (run["messages"], run["singles"], run["batched"]) == (200, 20, 180)
    assert run["send_one_cpu_s"] > 0 and run["send_cpu_s"] > 0 and run["receive_delete_cpu_s"] > 0
    assert queues_core.main(["--messages", "100", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "send batch 1 " in out and "send batch 10" in out and "receive 10 + delete batch 10" in out
