# CPU cost of fan-out delivery in the broker's pure core: an engine over a temporary directory (fsync="never": the
# fsync itself is a worker thread's wait, not the core's work), one topic of one partition with N queues subscribed
# to it (raw delivery, as `millpond bench fanout`), records produced in batches and the engine ticked as the server's
# timer would until every queue holds every record; the figure is time.process_time per delivered message (CPU
# time: little disturbed by other load on the machine, unlike a rate). Imports the core directly; must not know
# about the server, the client or any target. It uses only requests every revision with fan-out has, so the same
# file measures an older revision unpacked elsewhere (PYTHONPATH=that/dir python -m millpond.bench.fanout_core).
# Run: python -m millpond.bench.fanout_core [--records N] [--repeat R] [--json]
"""Fan-out CPU per delivered message (core only): 1, 3 and 10 queue subscriptions."""
from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from millpond.broker.config import load_config
from millpond.broker.core.engine import Engine
from millpond.broker.core.fanout.api import Subscribe
from millpond.broker.core.log.api import CreateTopic, Produce
from millpond.broker.core.outcomes import Answer, Context, Offload
from millpond.broker.core.queues.api import CreateQueue, GetQueueAttributes
from millpond.broker.wire.batch import encode_batch

T0_MS = 1_700_000_000_000
SUBSCRIPTIONS = (1, 3, 10)
RECORD_BYTES = 100  # as `millpond bench fanout`'s default
BATCH_RECORDS = 200  # records per produced batch
TICK_S = 0.001  # virtual time between two ticks


def ctx(now: float) -> Context:
    return Context(T0_MS + int(now * 1000), now, "bench", "127.0.0.1")


def engine_in(data_dir: Path) -> Engine:
    config = load_config(None, data_dir=str(data_dir), fsync="never", default_limit_records_per_s=0,
                         queue_messages_max=10_000_000)
    engine = Engine.for_directory(config, data_dir)
    engine.open(ctx(0.0))
    return engine


def answer(engine: Engine, request: Any, now: float) -> Any:
    """The answer to ``request``, offloaded file work run inline (as the server's worker thread would)."""
    outcome = engine.handle(request, ctx(now))
    while isinstance(outcome, Offload):
        outcome = outcome.resume(ctx(now), outcome.work())
    if not isinstance(outcome, Answer):
        raise RuntimeError(f"{type(request).__name__} was not answered at once: {outcome!r}")
    return outcome.value


class _GcTime:
    """CPU seconds spent in the cyclic garbage collector's passes while installed (gc.callbacks)."""

    def __init__(self) -> None:
        self.cpu_s = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.process_time()
        else:
            self.cpu_s += time.process_time() - self._start


def fan_out(subscriptions: int, records: int) -> dict[str, Any]:
    """Produce ``records`` records to a topic with ``subscriptions`` raw queue subscriptions and tick until every
    queue holds them all; CPU seconds of the ticks (delivery), of the garbage collector's passes during the run
    (mostly the delivery's: its full passes grow with the messages the queues hold), of the produces, and the
    messages delivered."""
    gc_time = _GcTime()
    gc.callbacks.append(gc_time)
    try:
        out = _fan_out(subscriptions, records)
    finally:
        gc.callbacks.remove(gc_time)
    return {**out, "gc_cpu_s": gc_time.cpu_s}


def _fan_out(subscriptions: int, records: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="millpond-fanout-core-") as tmp:
        engine = engine_in(Path(tmp))
        try:
            now = 0.0
            answer(engine, CreateTopic("t", 1), now)
            queues = [f"q{i}" for i in range(subscriptions)]
            for q in queues:
                answer(engine, CreateQueue(q), now)
                answer(engine, Subscribe("t", queue=q, raw=True), now)
            engine.take_woken()
            value = b"x" * RECORD_BYTES
            produce_s = deliver_s = 0.0
            sent = 0
            while sent < records:
                n = min(BATCH_RECORDS, records - sent)
                batch = encode_batch([(T0_MS + int(now * 1000), None, value, None)] * n)
                t0 = time.process_time()
                answer(engine, Produce("t", 0, batch), now)
                t1 = time.process_time()
                produce_s += t1 - t0
                sent += n
                engine.take_woken()
                while engine.next_deadline() <= now:
                    engine.tick(ctx(now))
                    now += TICK_S
                deliver_s += time.process_time() - t1
            held = [answer(engine, GetQueueAttributes(q), now).messages_visible for q in queues]
            if held != [records] * subscriptions:
                raise RuntimeError(f"the queues hold {held} messages, {records} records were produced")
        finally:
            engine.close()
    return {"subscriptions": subscriptions, "records": records, "messages": records * subscriptions,
            "deliver_cpu_s": deliver_s, "produce_cpu_s": produce_s}


def run(*, records: int = 20_000, repeat: int = 3, subscriptions: tuple[int, ...] = SUBSCRIPTIONS) -> dict[str, Any]:
    """For each subscription count, the median over ``repeat`` runs of the delivery's CPU µs per message."""
    rows = []
    for n in subscriptions:
        runs = [fan_out(n, records) for _ in range(repeat)]
        per_message = [r["deliver_cpu_s"] / r["messages"] * 1e6 for r in runs]
        gc_share = [r["gc_cpu_s"] / r["deliver_cpu_s"] if r["deliver_cpu_s"] else 0.0 for r in runs]
        rows.append({"subscriptions": n, "records": records, "cpu_us_per_message": statistics.median(per_message),
                     "runs_us": per_message, "gc_share": statistics.median(gc_share)})
    return {"python": platform.python_version(), "machine": platform.machine(), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m millpond.bench.fanout_core", description=__doc__)
    parser.add_argument("--records", type=int, default=20_000, help="records produced per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (the median is reported)")
    parser.add_argument("--subscriptions", type=int, nargs="+", default=list(SUBSCRIPTIONS))
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    doc = run(records=args.records, repeat=args.repeat, subscriptions=tuple(args.subscriptions))
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        print()
        return 0
    print(f"fan-out, core only (raw delivery, {RECORD_BYTES} B records, fsync=never): CPU µs per delivered message")
    for row in doc["rows"]:
        runs = " ".join(f"{x:.2f}" for x in row["runs_us"])
        print(f"  {row['subscriptions']:>2} subscription(s): {row['cpu_us_per_message']:6.2f}  (runs: {runs}; "
              f"{row['gc_share']:.0%} in the garbage collector's passes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
