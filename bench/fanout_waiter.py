# The receiver of the fan-out benchmark's publish-to-queue latency, in its own process (its own GIL, as a real
# worker): `python -m millpond.bench.fanout_waiter '<json>'`. Prints "ready" once connected, then "us N" for each
# message taken from the subscribed queue (the µs from its record's publish call to its receipt), and at the end one
# JSON line `{"error": ...}`: the publisher's last record (sequence number -1) ends it. Knows the fan-out target
# interface, nothing of how figures are summarised.
from __future__ import annotations

import json
import sys

from millpond.bench.targets import fanout_kit


def main(argv: list[str]) -> int:
    job = json.loads(argv[0])

    def ready() -> None:
        print("ready", flush=True)

    def report(latency_us: float) -> None:
        print(f"us {latency_us:.1f}", flush=True)

    try:
        error = fanout_kit.get(job["target"]).latency_receive(job["address"], job["fan"], ready, report)
    except Exception as exc:  # reported to the parent, which aborts the run loudly
        error = f"receiver failed: {exc!r}"
    print(json.dumps({"error": error}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
