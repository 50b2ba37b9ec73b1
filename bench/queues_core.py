# CPU cost of queue sends and receives in the broker's pure core: an engine over a temporary directory
# (fsync="never": the fsync itself is a worker thread's wait, not the core's work), send_message requests of one
# message (a tenth of the messages) and send_message_batch requests of 10, of 100 bytes (as `millpond bench queues`'
# send batch 1 and 10), then receive 10 + delete_message_batch 10 until the queue is empty; after each request what
# the server asks the engine after every request (RequestLoop._after_engine: woken keys, jobs, the next deadline).
# The figures are time.process_time per message (CPU time: little disturbed by other load on
# the machine, unlike a rate). Imports the core directly; must not know about the server, the client or any
# target. It uses only requests every revision with queues has, so the same file measures an older revision
# unpacked elsewhere (PYTHONPATH=that/dir python -m millpond.bench.queues_core).
# Run: python -m millpond.bench.queues_core [--messages N] [--repeat R] [--json]
"""Queue CPU per message (core only): send batch 1 and 10, receive 10 + delete batch 10."""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from millpond.bench.fanout_core import answer, engine_in
from millpond.broker.core.queues.api import (
    CreateQueue,
    DeleteEntry,
    DeleteMessageBatch,
    ReceiveMessages,
    SendEntry,
    SendMessage,
    SendMessageBatch,
)

MESSAGE_BYTES = 100
BATCH = 10


def served(engine: Any, request: Any, now: float) -> Any:
    """The answer to ``request``, then what the server asks the engine after every request."""
    value = answer(engine, request, now)
    engine.take_woken()
    engine.take_jobs()
    engine.next_deadline()
    return value


def one_run(messages: int) -> dict[str, float]:
    """CPU seconds of sending a tenth of ``messages`` one by one and the rest in batches of 10, and of receiving
    and deleting them all 10 at a time."""
    with tempfile.TemporaryDirectory(prefix="millpond-queues-core-") as tmp:
        engine = engine_in(Path(tmp))
        try:
            answer(engine, CreateQueue("q", visibility_timeout_s=3600.0), 0.0)
            body = b"x" * MESSAGE_BYTES
            singles = messages // BATCH
            requests = [SendMessageBatch("q", tuple(SendEntry(str(i), body) for i in range(BATCH)))
                        for _ in range((messages - singles) // BATCH)]
            single = SendMessage("q", body)
            t = time.process_time()
            for _ in range(singles):
                served(engine, single, 0.0)
            t0 = time.process_time()
            for req in requests:
                if served(engine, req, 0.0).failed:
                    raise RuntimeError("a send was refused")
            t1 = time.process_time()
            taken = 0
            while True:
                got = served(engine, ReceiveMessages("q", max_messages=BATCH, wait_s=0.0), 1.0).messages
                if not got:
                    break
                done = served(engine, DeleteMessageBatch("q", tuple(DeleteEntry(str(i), m.receipt_handle)
                                                                     for i, m in enumerate(got))), 1.0)
                if done.failed:
                    raise RuntimeError("a delete was refused")
                taken += len(got)
            t2 = time.process_time()
            if taken != singles + len(requests) * BATCH:
                raise RuntimeError(f"received {taken} messages, sent {singles + len(requests) * BATCH}")
        finally:
            engine.close()
    return {"send_one_cpu_s": t0 - t, "send_cpu_s": t1 - t0, "receive_delete_cpu_s": t2 - t1,
            "singles": singles, "batched": len(requests) * BATCH, "messages": taken}


def run(*, messages: int = 50_000, repeat: int = 3) -> dict[str, Any]:
    """The median over ``repeat`` runs of each figure, in CPU µs per message."""
    runs = [one_run(messages) for _ in range(repeat)]
    one = [r["send_one_cpu_s"] / r["singles"] * 1e6 for r in runs]
    send = [r["send_cpu_s"] / r["batched"] * 1e6 for r in runs]
    take = [r["receive_delete_cpu_s"] / r["messages"] * 1e6 for r in runs]
    return {"python": platform.python_version(), "machine": platform.machine(), "messages": messages,
            "send_one_us": statistics.median(one), "send_one_runs_us": one,
            "send_batch_us": statistics.median(send), "send_runs_us": send,
            "receive_delete_us": statistics.median(take), "receive_delete_runs_us": take}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m millpond.bench.queues_core", description=__doc__)
    parser.add_argument("--messages", type=int, default=50_000, help="messages per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs (the median is reported)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    doc = run(messages=args.messages, repeat=args.repeat)
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        print()
        return 0
    print(f"queues, core only ({MESSAGE_BYTES} B messages, fsync=never): CPU µs per message")
    for label, key, median_key in (("send batch 1", "send_one", "send_one_us"),
                                   ("send batch 10", "send", "send_batch_us"),
                                   ("receive 10 + delete batch 10", "receive_delete", "receive_delete_us")):
        runs = " ".join(f"{x:.2f}" for x in doc[f"{key}_runs_us"])
        median = doc[median_key]
        print(f"  {label:<30} {median:6.2f}  (runs: {runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
