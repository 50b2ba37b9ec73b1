# What the broker's complete check of a produced batch costs (broker/wire/batch.py check_batch: header fields,
# CRC-32C, and every record decoded with offsets and timestamps compared) against produce throughput: the same
# producer workload run side by side, interleaved, against a broker with the full check and one whose check is
# only the header parse and the CRC-32C (what a format without per-record validation would do at least). Both
# brokers are subprocesses on 127.0.0.1 with temporary data directories; the producer is millpond's async client
# in this process. Reports records/s and broker CPU per record (from /proc) for each, and their ratios.
# Run: python -m millpond.bench.validation_cost [--record-bytes 100,1024] [--fsync never,always] [--repeat 3]
"""Cost of validating every produced record: full check vs header and CRC only, side by side."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from millpond.bench.targets.peerproc import free_port, port_open

VARIANTS = ("full check", "header+CRC only")
# The broker with its batch check cut down to the header parse and the CRC-32C; everything else as `serve`.
_HEADER_CRC_ONLY = """
import sys
from millpond.broker.core.log import batch_format
from millpond.broker.wire import batch as v2
from millpond.broker.wire.errors import CorruptBatchError

def check(blob, batch_bytes_max):
    if not v2.verify_crc(blob):
        raise CorruptBatchError("batch CRC-32C does not match its contents")
    return v2.BatchHeader(*v2.HEADER.unpack_from(blob, 0))

batch_format.V2._check = check
from millpond.broker.cli import main
sys.exit(main(sys.argv[1:]))
"""
_FULL = "import sys\nfrom millpond.broker.cli import main\nsys.exit(main(sys.argv[1:]))\n"
GROUP = 64  # records sent between yields to the client's tasks, as `millpond bench produce`
BUFFERED_MAX = 200_000  # records buffered ahead of the acknowledgements before the loop waits for them


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Broker:
    def __init__(self, code: str, fsync: str) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="millpond-validation-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "serve", "--data-dir", self.dir.name, "--host", "127.0.0.1",
             "--port", str(self.port), "--fsync", fsync], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            try:
                port_open(self.port)  # raises OSError until the broker listens
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"broker did not start: {self.proc.stderr.read().decode()[-2000:]}") from None
                time.sleep(0.05)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=30)  # reaps it and closes its stderr pipe
        self.dir.cleanup()


def produce(port: int, pid: int, topic: str, record_bytes: int, duration_s: float) -> dict[str, float]:
    """Produce ``record_bytes`` records for ``duration_s`` seconds (after a 0.5 s warm-up) with the client's default
    producer settings; returns records/s and the broker's CPU µs per record over the measured part."""
    import trio

    from millpond.client import connect

    value = os.urandom(record_bytes)

    async def main() -> dict[str, float]:
        async with connect(f"127.0.0.1:{port}", client_id="bench-validation") as c:
            await c.create_topic(topic)
            async with c.producer() as p:
                send = p.send

                async def run(seconds: float) -> int:
                    n = 0
                    end = time.perf_counter() + seconds
                    while time.perf_counter() < end:
                        for _ in range(GROUP):
                            send(topic, value)
                        n += GROUP
                        if p.statistics().records_buffered > BUFFERED_MAX:
                            await p.flush()
                        else:
                            await trio.sleep(0)
                    await p.flush()
                    return n

                await run(0.5)
                t0, cpu0 = time.perf_counter(), _cpu_s(pid)
                n = await run(duration_s)
                t1, cpu1 = time.perf_counter(), _cpu_s(pid)
                failed = p.statistics().records_failed
        if failed:
            raise RuntimeError(f"{failed} records failed")
        return {"records_per_s": n / (t1 - t0), "broker_cpu_us_per_record": (cpu1 - cpu0) / n * 1e6}

    return trio.run(main)


def measure(record_sizes: list[int], modes: list[str], repeat: int, duration_s: float) -> list[dict[str, Any]]:
    rows = []
    for fsync in modes:
        brokers = {VARIANTS[0]: _Broker(_FULL, fsync), VARIANTS[1]: _Broker(_HEADER_CRC_ONLY, fsync)}
        try:
            for size in record_sizes:
                runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
                for r in range(repeat):
                    order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]  # interleaved, each goes first in turn
                    for v in order:
                        b = brokers[v]
                        runs[v].append(produce(b.port, b.proc.pid, f"v-{size}-{r}", size, duration_s))
                row: dict[str, Any] = {"fsync": fsync, "record_bytes": size}
                for v in VARIANTS:
                    row[v] = {k: statistics.median(x[k] for x in runs[v]) for k in runs[v][0]}
                    row[v]["records_per_s_runs"] = [round(x["records_per_s"]) for x in runs[v]]
                full, light = row[VARIANTS[0]], row[VARIANTS[1]]
                row["throughput_ratio"] = full["records_per_s"] / light["records_per_s"]
                row["check_cpu_us_per_record"] = (full["broker_cpu_us_per_record"]
                                                  - light["broker_cpu_us_per_record"])
                rows.append(row)
                print(_line(row), file=sys.stderr, flush=True)
        finally:
            for b in brokers.values():
                b.close()
    return rows


def _line(row: dict[str, Any]) -> str:
    full, light = row[VARIANTS[0]], row[VARIANTS[1]]
    return (f"fsync={row['fsync']:6} {row['record_bytes']:5} B | full {full['records_per_s']:>10,.0f} rec/s "
            f"{full['broker_cpu_us_per_record']:.2f} µs/rec | header+CRC {light['records_per_s']:>10,.0f} rec/s "
            f"{light['broker_cpu_us_per_record']:.2f} µs/rec | throughput {row['throughput_ratio']:.3f}x "
            f"({(1 - row['throughput_ratio']) * 100:+.1f}% cost), check {row['check_cpu_us_per_record']:.2f} µs/rec")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m millpond.bench.validation_cost", description=__doc__)
    parser.add_argument("--record-bytes", default="100,1024", help="comma-separated value sizes (default 100,1024)")
    parser.add_argument("--fsync", default="never,always", help="comma-separated modes (default never,always)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant, interleaved (default 3)")
    parser.add_argument("--duration-s", type=float, default=3.0, help="seconds of sending per run (default 3)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.duration_s <= 0:
        parser.error("--repeat must be >= 1 and --duration-s > 0")
    try:
        sizes = [int(x) for x in args.record_bytes.split(",")]
    except ValueError:
        parser.error(f"--record-bytes takes sizes such as 100,1024, not {args.record_bytes!r}")
    modes = [m.strip() for m in args.fsync.split(",")]
    bad = [m for m in modes if m not in ("never", "interval", "always")]
    if bad:
        parser.error(f"--fsync takes never, interval or always, not {', '.join(bad)}")
    rows = measure(sizes, modes, args.repeat, args.duration_s)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print("\n".join(_line(r) for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
