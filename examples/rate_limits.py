"""Rate limiting, five ways: the same bursty producer against each of the broker's limit algorithms.

What it shows: five producers, each under its own limit policy of 10 requests per second (unit ``requests``,
``reject`` mode: a refused request is answered THROTTLED with a retry-after, and the producer here gives up on it
instead of waiting, as a client of an HTTP API gets a 429), send the same traffic at the same moments:

    second 0   5 requests, 0.2 s apart                    (well under the limit)
    second 1   a burst of 10 at 1.95 s, just before a window boundary
    second 2   a burst of 10 at 2.05 s, just after it     (20 offered within 0.1 s)
    second 3-4 a steady 20 per second                     (twice the limit)

The algorithms: ``leaky_bucket`` (GCRA, rate 10/s, burst 1: requests spaced 0.1 s apart, no bursts; ``mode=
"shape"`` would queue and delay instead of refusing), ``token_bucket`` (rate 10/s, burst 10), ``fixed_window``,
``sliding_log`` and ``sliding_window`` (limit 10 per window_s 1). Window algorithms align their windows to the
broker's clock; the example finds the boundary the way any client can, from the retry-after of a fixed window
that refused it. It prints admitted/throttled per second, reproduces the fixed window's boundary burst (twice the
limit within 0.1 s) and the sliding window counter avoiding it, and ends with the comparison table filled with
what it measured: admitted of offered, the most admitted in any 1 s (accuracy: the limit is 10), what a burst
from rest and a burst across the boundary get through, and the state each keeps per key (sliding log: at its
peak in this run).

Run it (an embedded broker on Trio's virtual clock, so the 5 s of traffic take no real time):

    python examples/rate_limits.py
    python examples/rate_limits.py --broker 127.0.0.1:7420     # a running `millpond serve`, in real time (~8 s)
"""
from __future__ import annotations

import argparse
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

import trio
import trio.testing

from millpond import connect

from examplekit import broker_address, run_example  # examples/examplekit.py
from millpond.client.errors import ThrottledError

LIMIT = 10  # requests per second, for every algorithm
ALGORITHMS = {  # name -> parameters: all five allow 10 requests per second
    "leaky_bucket": {"rate": LIMIT, "burst": 1},
    "token_bucket": {"rate": LIMIT, "burst": LIMIT},
    "fixed_window": {"limit": LIMIT, "window_s": 1},
    "sliding_log": {"limit": LIMIT, "window_s": 1},
    "sliding_window": {"limit": LIMIT, "window_s": 1},
}
# the traffic: (milliseconds after a window boundary, requests sent at that moment)
TRAFFIC = ([(50 + 200 * i, 1) for i in range(5)] + [(1950, 10), (2050, 10)]
           + [(3000 + 50 * i, 1) for i in range(40)])
SECONDS = 5
BURST_FROM_REST = (1950,)  # the moment of the first burst
ACROSS_BOUNDARY = (1950, 2050)  # the moments of the boundary burst
STATE_INTEGERS = {"leaky_bucket": "1 (TAT)", "token_bucket": "2 (tokens, time)", "fixed_window": "2 (window, count)",
                  "sliding_window": "3 (window, two counts)"}


@dataclass
class Run:
    """What one algorithm admitted: the moments (ms after the start) of admitted and throttled requests."""

    algorithm: str
    admitted: list[float] = field(default_factory=list)
    throttled: list[float] = field(default_factory=list)
    broker_admitted: int = 0  # the policy's own counters, from list_limits
    broker_throttled: int = 0

    def per_second(self) -> list[tuple[int, int]]:
        return [(sum(1 for t in self.admitted if t // 1000 == s), sum(1 for t in self.throttled if t // 1000 == s))
                for s in range(SECONDS)]

    def worst_second(self) -> int:
        """The most requests admitted in any interval of 1 s, (t - 1 s, t]."""
        return max(sum(1 for u in self.admitted if t - 1000 < u <= t) for t in self.admitted)

    def admitted_at(self, moments: tuple[int, ...]) -> int:
        return sum(1 for t in self.admitted if t in moments)

    def log_peak_entries(self) -> int:
        """The most distinct admission instants a sliding log holds at once (one entry each) in this run."""
        return max(len({u for u in self.admitted if t - 1000 < u <= t}) for t in self.admitted)

    def state(self) -> str:
        if self.algorithm == "sliding_log":
            return f"{1 + 2 * self.log_peak_entries()} (2 per instant, {self.log_peak_entries()} at peak)"
        return STATE_INTEGERS[self.algorithm]


async def find_boundary(client_for: Callable[[str], Any], topic: str, suffix: str) -> float:
    """A window boundary on this client's clock: a fixed window of 1 per second refuses the second request with
    retry_after = the time left until its next window."""
    async with client_for("rl-probe" + suffix) as client:
        await client.set_limit("rl-probe" + suffix, scope="client:rl-probe" + suffix, unit="requests",
                               algorithm="fixed_window", limit=1, window_s=1)
        async with client.producer(linger_s=0, idempotent=False, throttle_wait_max_s=0) as producer:
            while True:
                try:
                    await producer.send(topic, b"probe")
                except ThrottledError as exc:
                    boundary = trio.current_time() + float(exc.details["retry_after_s"])
                    break
        await client.delete_limit("rl-probe" + suffix)
    return boundary


async def traffic(client_for: Callable[[str], Any], topic: str, run: Run, start: float, suffix: str) -> None:
    """The bursty producer: sends TRAFFIC at its moments after ``start``; a throttled request is given up."""
    name = "rl-" + run.algorithm.replace("_", "-") + suffix
    async with client_for(name) as client:
        async with client.producer(linger_s=0, idempotent=False, throttle_wait_max_s=0) as producer:
            for at, count in TRAFFIC:
                await trio.sleep_until(start + at / 1000)
                for _ in range(count):
                    try:
                        await producer.send(topic, b"request", key=name.encode())
                        run.admitted.append(at)
                    except ThrottledError:
                        run.throttled.append(at)


async def run(address: str | None = None, *, say: Callable[[str], Any] = print) -> dict[str, Run]:
    async with broker_address(address, fsync="never") as where, connect(where, client_id="rl-admin") as admin:
        suffix = "" if address is None else "-" + secrets.token_hex(3)  # a shared broker: fresh names per run
        topic = "rl-traffic" + suffix
        await admin.create_topic(topic)
        for algorithm, params in ALGORITHMS.items():
            name = "rl-" + algorithm.replace("_", "-") + suffix
            await admin.set_limit(name, scope="client:" + name, unit="requests", algorithm=algorithm, **params)
            say(f"policy {name}: {algorithm} " + ", ".join(f"{k}={v}" for k, v in params.items()))

        def client_for(client_id: str) -> Any:
            return connect(where, client_id=client_id)

        boundary = await find_boundary(client_for, topic, suffix)
        start = boundary + 1.0  # the next boundary but one: every run starts on a window boundary
        say(f"window boundary found from a retry-after; the traffic starts on one, "
            f"{start - trio.current_time():.2f} s from now")
        runs = {algorithm: Run(algorithm) for algorithm in ALGORITHMS}
        async with trio.open_nursery() as nursery:
            for r in runs.values():
                nursery.start_soon(traffic, client_for, topic, r, start, suffix)
        for policy in await admin.list_limits():
            for algorithm, r in runs.items():
                if policy.name == "rl-" + algorithm.replace("_", "-") + suffix:
                    r.broker_admitted, r.broker_throttled = policy.stats.admitted, policy.stats.throttled
                    await admin.delete_limit(policy.name)

    offered = [sum(c for at, c in TRAFFIC if at // 1000 == s) for s in range(SECONDS)]
    say("\nadmitted/throttled per second (limit 10 per second)")
    say(f"  {'second':<8}{'offered':<9}" + "".join(f"{a:<16}" for a in runs))
    for s in range(SECONDS):
        say(f"  {s:<8}{offered[s]:<9}" + "".join(f"{'%d/%d' % r.per_second()[s]:<16}" for r in runs.values()))

    fixed, sliding = runs["fixed_window"], runs["sliding_window"]
    say(f"\nthe boundary burst: 10 requests at 1.95 s and 10 at 2.05 s, around the window boundary at 2 s")
    say(f"  fixed_window admits {fixed.admitted_at(ACROSS_BOUNDARY)} within 0.1 s "
        f"({fixed.admitted_at(ACROSS_BOUNDARY) / LIMIT:g}x the limit): each window counts only its own 10")
    say(f"  sliding_window admits {sliding.admitted_at(ACROSS_BOUNDARY)}: at 2.05 s the previous window's count "
        f"still weighs 95%")
    say(f"  sliding_log admits {runs['sliding_log'].admitted_at(ACROSS_BOUNDARY)}: it remembers every admission")

    say("\ncomparison, measured (limit 10 per second; 65 requests offered)")
    header = ("algorithm", "admitted", "most in 1 s", "burst from rest", "across boundary", "state per key (ints)")
    widths = (16, 10, 13, 17, 17, 0)
    say("  " + "".join(f"{h:<{w}}" for h, w in zip(header, widths)))
    for r in runs.values():
        cells = (r.algorithm, f"{len(r.admitted)}/{len(r.admitted) + len(r.throttled)}",
                 f"{r.worst_second()}", f"{r.admitted_at(BURST_FROM_REST)} of 10",
                 f"{r.admitted_at(ACROSS_BOUNDARY)} of 20", r.state())
        say("  " + "".join(f"{c:<{w}}" for c, w in zip(cells, widths)))
    agree = all((r.broker_admitted, r.broker_throttled) == (len(r.admitted), len(r.throttled)) for r in runs.values())
    say("the broker's policy counters (millpond limits list) agree with these counts" if agree else
        "the broker's policy counters DIFFER: " + ", ".join(
            f"{r.algorithm} {r.broker_admitted}/{r.broker_throttled}" for r in runs.values()))
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rate limiting, five ways: one bursty producer, five algorithms.")
    parser.add_argument("--broker", metavar="HOST:PORT", help="a running broker (default: an embedded one)")
    args = parser.parse_args(argv)
    # embedded: the broker and the producers share Trio's virtual clock, which skips ahead whenever all wait
    clock = None if args.broker else trio.testing.MockClock(autojump_threshold=0)
    run_example("rate_limits", lambda: trio.run(run, args.broker, clock=clock))


if __name__ == "__main__":
    main()
