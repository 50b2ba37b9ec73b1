# The send_await workload's client loop for a Python async client: `await send(topic, value)`, one record at a
# time, each timed from the call until its acknowledgement is back. Imports nothing but the standard library, so
# the revision runner (bench/targets/revrunner.py) can load it by path into a process that runs an older
# millpond's client. Must not know a client library, an event loop or how figures are summarised.
from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

TICK_EVERY = 256  # records between progress ticks


async def send_loop(send: Callable[[str, bytes], Awaitable[Any]], topic: str, values: tuple[bytes, ...],
                    count: int | None, duration_s: float | None, record_ns: Callable[[int], None],
                    tick: Callable[[int], None]) -> dict[str, Any]:
    """Await ``send(topic, value)`` for ``count`` records (or until ``duration_s`` has passed), cycling ``values``;
    ``record_ns`` gets each send's nanoseconds. Returns the fields of a ProduceOutcome but ``latency_hdr``: the
    loop stops at the first failure, which is returned in ``error`` (the workload then aborts)."""
    nv = len(values)
    perf, perf_ns = time.perf_counter, time.perf_counter_ns
    i = payload_bytes = failed = 0
    error = ""
    first = perf()
    stop_at = None if count is not None or duration_s is None else first + duration_s
    while (i < count) if count is not None else (stop_at is None or perf() < stop_at):
        value = values[i % nv]
        t0 = perf_ns()
        try:
            await send(topic, value)
        except Exception as exc:  # the workload aborts on any failure
            failed, error = 1, repr(exc)
            break
        record_ns(perf_ns() - t0)
        i += 1
        payload_bytes += len(value)
        if i % TICK_EVERY == 0:
            tick(TICK_EVERY)
    last = perf()
    tick(i % TICK_EVERY)
    return {"records": i, "payload_bytes": payload_bytes, "first_send": first, "last_ack": last, "failed": failed,
            "error": error}
