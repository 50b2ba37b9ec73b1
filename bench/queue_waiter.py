# The receiver of the queues benchmark's long-poll wake-up and of the fan-out benchmark's publish-to-queue latency,
# in its own process (its own GIL, as a real worker): `python -m millpond.bench.queue_waiter '<json>'`, the job
# naming a queue (`"queue"`) or a fan-out (`"fan"`). Prints "ready" once connected, then "us N" for each message
# (the µs from its send or publish call to its receipt), and at the end one JSON line `{"error": ...}`: the
# sender's last message (sequence number -1) ends it. Knows the queue and fan-out target interfaces, nothing of how
# figures are summarised.
from __future__ import annotations

import json
import sys

from millpond.bench.targets import fanout_kit, queue_kit


def main(argv: list[str]) -> int:
    job = json.loads(argv[0])

    def ready() -> None:
        print("ready", flush=True)

    def report(latency_us: float) -> None:
        print(f"us {latency_us:.1f}", flush=True)

    try:
        if "fan" in job:
            error = fanout_kit.get(job["target"]).latency_receive(job["address"], job["fan"], ready, report)
        else:
            error = queue_kit.get(job["target"]).wake_receive(job["address"], job["queue"], ready, report)
    except Exception as exc:  # reported to the parent, which aborts the run loudly
        error = f"receiver failed: {exc!r}"
    print(json.dumps({"error": error}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
