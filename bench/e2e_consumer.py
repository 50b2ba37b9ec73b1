# The consumer side of the e2e workload, in its own process (its own GIL and core, like a real consumer):
# `python -m millpond.bench.e2e_consumer '<json>'`. Prints "ready" once positioned, then one JSON line with its
# outcome. Knows the target interface and the plan, nothing of how figures are summarised.
from __future__ import annotations

import json
import sys
from dataclasses import asdict

from millpond.bench import targets
from millpond.bench.plans import E2EConsumeOutcome, E2EPlan


def main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    plan = E2EPlan(count=job["count"], warmup=job["warmup"], rate_per_s=job["rate_per_s"], values=(),
                   batch_bytes=None, linger_s=None, timeout_s=job["timeout_s"])
    target = targets.get(job["target"])

    def ready() -> None:
        print("ready", flush=True)

    try:
        out = target.e2e_consume(job["address"], job["topic"], plan, ready)
    except Exception as exc:  # reported to the parent, which aborts the run loudly
        out = E2EConsumeOutcome(0, b"", f"consumer failed: {exc!r}")
    result = asdict(out)
    result["latency_hdr"] = out.latency_hdr.decode("ascii")  # HDR's encoding is base64 already
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
