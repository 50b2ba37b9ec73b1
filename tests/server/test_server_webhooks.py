# Webhook retries at SNS's default pace in virtual time: the broker over an in-memory stream under Trio's MockClock,
# the endpoint a stdlib HTTP server in its own thread (under a virtual clock the server runs a job's POST inline,
# on the event loop, so the endpoint must not need that loop). SNS's HTTP/S default, 4 attempts 20 s apart less up
# to 20% jitter, costs no real time.
from __future__ import annotations

import http.server
import json
import threading

import trio

from millpond.broker.wire.batch import encode_batch
from serverkit import start_harness


class Failing(http.server.BaseHTTPRequestHandler):
    """Answers every POST with 500 and keeps (trio time, headers) of each."""

    got: list[tuple[float, dict[str, str]]] = []
    clock: trio.testing.MockClock | None = None

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        self.rfile.read(int(self.headers["Content-Length"]))
        assert self.clock is not None
        Failing.got.append((self.clock.current_time(), {k.lower(): v for k, v in self.headers.items()}))
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


async def test_an_always_failing_webhook_is_tried_four_times_about_twenty_seconds_apart_then_dead_lettered(
        nursery, tmp_path, autojump_clock):
    Failing.got, Failing.clock = [], autojump_clock
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        h = await start_harness(nursery, tmp_path / "data")
        c = await h.connect()
        await c.ok("create_topic", {"name": "t", "partitions": 1})
        await c.ok("create_queue", {"name": "dead"})
        url = f"http://127.0.0.1:{server.server_address[1]}/in"
        sub = await c.ok("subscribe", {"topic": "t", "url": url, "dead_letter_queue": "dead"})
        assert sub["delivery"] == {"attempts_max": 4, "min_delay_ms": 20_000, "max_delay_ms": 20_000,
                                   "total_ms": 3_600_000, "timeout_ms": 15_000, "concurrency_max": 4,
                                   "rate_per_second": None, "jitter": 0.2}
        await c.ok("produce", {"topic": "t", "partition": 0, "batch": encode_batch([(0, None, b"v", None)])})
        start = trio.current_time()
        got = await c.ok("receive_messages", {"queue": "dead", "max_messages": 10, "wait_ms": 20_000})
        while not got["messages"]:
            got = await c.ok("receive_messages", {"queue": "dead", "max_messages": 10, "wait_ms": 20_000})
        [msg] = got["messages"]
        assert json.loads(msg["body"])["Message"] == "v"
        times = [t - start for t, _ in Failing.got]
        assert len(times) == 4
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert all(16.0 <= g <= 20.0 + 0.1 for g in gaps), gaps
        assert [hd["x-millpond-attempt"] for _, hd in Failing.got] == ["1", "2", "3", "4"]
        assert len({hd["x-millpond-message-id"] for _, hd in Failing.got}) == 1
        d = await c.ok("describe_subscription", {"id": sub["id"]})
        assert (d["delivered"], d["failed"], d["dead_lettered"]) == (0, 1, 1)
        await h.broker.shutdown()
    finally:
        server.shutdown()
        server.server_close()
