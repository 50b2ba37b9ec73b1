# What waking up costs the broker's request loop (the reason for BrokerConfig.busy_poll_s): the same work, one
# produce of a one-record batch through RequestLoop.on_frame (decode, engine, encode), timed per call while the
# process runs without pause ("hot"), right after 200 us asleep ("after sleep": a broker waiting in epoll for the
# next request), and right after 200 us of busy waiting ("after polling": a broker polling for it). The three are
# interleaved in rounds in one run, on an in-process broker (fsync="never", a temporary data directory), and only
# the on_frame call is timed.
# Run: python -m millpond.bench.wake_cost [--calls 3000] [--rounds 5] [--gap-us 200] [--json]
"""Per-request cost of the broker's request loop hot, after sleeping and after polling, side by side."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from millpond.broker.config import BrokerConfig
from millpond.broker.server.broker import Broker
from millpond.broker.wire.batch import encode_rows
from millpond.broker.wire.frames import encode_request

MODES = ("hot", "after sleep", "after polling")


class _Conn:
    """What the request loop needs of a connection; answers are kept, not sent."""

    def __init__(self) -> None:
        self.session: Any = None
        self.answer_bytes_max = 1 << 20
        self.handshaken = False
        self.closed = False
        self.host, self.peer = "127.0.0.1", "127.0.0.1:1"
        self.in_flight = 0
        self.answer: list[Any] = []

    def send(self, pieces: list[Any]) -> None:
        self.in_flight -= 1
        self.answer = pieces

    def hold(self, nbytes: int) -> None:
        pass

    def release(self, nbytes: int) -> None:
        pass

    def when_room(self, callback: Any) -> None:
        callback()


def _body(cid: int, api: str, body: dict[str, Any]) -> bytes:
    return encode_request(cid, api, body)[4:]  # the frame without its length prefix, as the decoder hands it over


async def _measure(calls: int, rounds: int, gap_s: float) -> dict[str, list[float]]:
    per_call: dict[str, list[float]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="millpond-wake-") as tmp:
        broker = Broker(BrokerConfig(fsync="never"), Path(tmp))
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: broker.serve(listen=False, task_status=task_status))
            loop, conn = broker.loop, _Conn()

            def call(body: bytes) -> float:
                conn.in_flight += 1
                t = time.perf_counter()
                loop.on_frame(conn, memoryview(body))
                return time.perf_counter() - t

            call(_body(1, "hello", {"protocol_version": 1, "client_id": "wake-cost"}))
            call(_body(2, "create_topic", {"name": "t", "partitions": 1}))
            with trio.fail_after(30):
                while "t" not in broker.log.topics:  # created in a worker thread
                    await trio.sleep(0.01)
            ts = int(time.time() * 1000)
            batch = bytes(encode_rows([(0, 0, None, b"x" * 100, None)], ts, ts, 0, -1, -1, -1, 0))
            produce = _body(3, "produce", {"topic": "t", "partition": 0, "batch": batch})
            call(produce)
            if b"base_offset" not in b"".join(bytes(p) for p in conn.answer):
                raise RuntimeError(f"produce was not answered with an offset: {conn.answer!r}")
            for _ in range(rounds):
                for mode in MODES:
                    spent = 0.0
                    for _ in range(calls):
                        if mode == "after sleep":
                            time.sleep(gap_s)
                        elif mode == "after polling":
                            until = time.perf_counter() + gap_s
                            while time.perf_counter() < until:
                                pass
                        spent += call(produce)
                    per_call[mode].append(spent / calls)
            await broker.shutdown()
    return per_call


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m millpond.bench.wake_cost", description=__doc__)
    p.add_argument("--calls", type=int, default=3000, help="produce calls per mode per round (default 3000)")
    p.add_argument("--rounds", type=int, default=5, help="rounds, each running the modes in turn (default 5)")
    p.add_argument("--gap-us", type=float, default=200.0, help="sleep or busy wait before each call, microseconds "
                                                                "(default 200)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    per_call = trio.run(_measure, args.calls, args.rounds, args.gap_us / 1e6)
    medians = {m: statistics.median(v) * 1e6 for m, v in per_call.items()}
    if args.json:
        print(json.dumps({"us_per_call_median": medians, "rounds": {m: [x * 1e6 for x in v]
                                                                    for m, v in per_call.items()}}))
        return 0
    print(f"RequestLoop.on_frame, one produce of one 100 B record: median over {args.rounds} rounds of "
          f"{args.calls} calls; {args.gap_us:g} us gap before each call")
    for m in MODES:
        print(f"  {m:<14} {medians[m]:7.1f} us/call  ({medians[m] / medians['hot']:.2f}x hot)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
