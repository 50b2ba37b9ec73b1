# The child side of a `millpond@REV` target (bench/targets/revision.py): run as a script with `python -P` and
# PYTHONPATH set to one millpond revision's tree only, so every import of broker, client and bench is that
# revision's. It reads a job (JSON, the first line of stdin) and makes that one call of the revision's own bench
# target (bench/targets/millpond.py): the plan is rebuilt with that revision's plan classes, the outcome goes back
# as JSON. Lines on stdout start with MARK: `tick N` (progress, at most 10 a second), `ready` (an e2e consumer is
# positioned), `server {...}` (a broker is up; it runs until stdin closes), `result {...}`, `error TEXT`. Imports
# only the standard library and the revision's modules, plus bench/targets/awaited.py by path for a revision
# without a send_await loop of its own. Must not import this tree's millpond, nor know how figures are made.
from __future__ import annotations

import base64
import dataclasses
import importlib
import importlib.util
import json
import sys
import time
import traceback
from typing import Any

MARK = "@@millpond-bench "
TICK_S = 0.1


def emit(text: str) -> None:
    sys.stdout.write(MARK + text + "\n")
    sys.stdout.flush()


def encode(obj: Any) -> Any:
    """JSON-ready: bytes become ``{"b64": ...}``; tuples become lists."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"b64": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, dict):
        return {str(k): encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode(v) for v in obj]
    return obj


def decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"b64"}:
            return base64.b64decode(obj["b64"])
        return {k: decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    return obj


class Ticker:
    """The target's tick callback: counts, and writes a tick line at most every TICK_S seconds."""

    def __init__(self) -> None:
        self.pending = 0
        self.at = time.perf_counter()

    def __call__(self, n: int) -> None:
        self.pending += n
        now = time.perf_counter()
        if now - self.at >= TICK_S:
            self.flush()
            self.at = now

    def flush(self) -> None:
        if self.pending:
            emit(f"tick {self.pending}")
            self.pending = 0


def build(cls: Any, fields: dict[str, Any]) -> Any:
    """An instance of the revision's plan dataclass ``cls`` from the fields it has (sequences as tuples)."""
    known = {f.name for f in dataclasses.fields(cls)}
    if fields.get("keys") and "keys" not in known:  # its records would go without keys: not the same measurement
        raise RuntimeError("this revision's bench has no --keys (keyed records): compare keyed runs from a later one")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if k in known})


def send_await_loop(prefix: str, awaited_path: str, address: str, topic: str, plan: Any, tick: Any) -> Any:
    """For a revision whose bench has no send_await: this tree's loop (bench/targets/awaited.py) on its client."""
    import trio

    spec = importlib.util.spec_from_file_location("millpond_bench_awaited", awaited_path)
    assert spec is not None and spec.loader is not None
    awaited = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(awaited)
    connect = importlib.import_module(prefix + "client").connect
    stats = importlib.import_module(prefix + "bench.stats")
    plans = importlib.import_module(prefix + "bench.plans")
    opts = {k: v for k, v in (("batch_bytes", plan.batch_bytes), ("linger_s", plan.linger_s)) if v is not None}

    async def go() -> Any:
        hist = stats.new_histogram()
        async with connect(address, client_id="bench-send-await") as c:
            async with c.producer(**opts) as p:
                out = await awaited.send_loop(p.send, topic, plan.values, plan.count, plan.duration_s,
                                              lambda ns: stats.record_us(hist, ns / 1000), tick)
        return plans.ProduceOutcome(latency_hdr=stats.encode(hist), **out)

    return trio.run(go)


def serve(target: Any, fsync: str) -> None:
    with target.server(fsync, None) as server:
        emit("server " + json.dumps({"address": server.address, "fsync": server.fsync,
                                     "pid": getattr(server, "pid", None)}))
        sys.stdin.read()  # until the parent closes our stdin: then the revision's target stops its broker


def call(job: dict[str, Any]) -> tuple[Any, float]:
    """Make the call ``job`` names; its result and the CPU seconds it took (imports excluded)."""
    prefix = job["prefix"]
    target = importlib.import_module(prefix + "bench.targets.millpond").TARGET
    plans = importlib.import_module(prefix + "bench.plans")
    importlib.import_module(prefix + "client")  # imported now, not inside the measured call (as in the parent)
    method = job["method"]
    if method == "serve":
        serve(target, job["fsync"])
        return None, 0.0
    args = decode(job["args"])
    address, topic = args["address"], args["topic"]
    if method == "create_topic":
        return target.create_topic(address, topic, args["partitions"]), 0.0
    if method == "topic_records":
        return target.topic_records(address, topic), 0.0
    plan = build(getattr(plans, job["plan_class"]), args["plan"])
    if method == "e2e_consume":
        return target.e2e_consume(address, topic, plan, lambda: emit("ready")), 0.0
    tick = Ticker()
    if method == "send_await" and not hasattr(target, "send_await"):
        run = lambda: send_await_loop(prefix, job["awaited_path"], address, topic, plan, tick)  # noqa: E731
    else:
        run = lambda: getattr(target, method)(address, topic, plan, tick)  # noqa: E731
    cpu0 = time.process_time()
    try:
        return run(), time.process_time() - cpu0
    finally:
        tick.flush()


def main() -> int:
    job = json.loads(sys.stdin.readline())  # the first line; a serving child then waits for the end of stdin
    try:
        out, cpu_s = call(job)
    except BaseException as exc:  # reported to the parent, which skips the revision or aborts the run
        emit("error " + json.dumps(f"{exc!r}\n{traceback.format_exc()}"))
        return 1
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        out = dataclasses.asdict(out)
    emit("result " + json.dumps({"value": encode(out), "client_cpu_s": cpu_s}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
