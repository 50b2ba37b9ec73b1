# An example third-party limit algorithm: a leaky bucket (GCRA) with a daily cap. It shows the plug-in interface
# (broker.core.limits.base.Algorithm, here through the KeyedAlgorithm helper) and passes the broker's limiter
# contract suite. The broker's operator makes it available (a client never can): in the config file as
#  [limit_algorithms] capped = "examples.limits_plugin:CappedLeakyBucket", with
#  millpond serve --limit-algorithm capped=examples.limits_plugin:CappedLeakyBucket, or from a package's pyproject.toml:
#
#     [project.entry-points."millpond.limits"]
#     capped_leaky_bucket = "examples.limits_plugin:CappedLeakyBucket"
#
# The class must not know about the broker beyond that interface. Run as a script, the module is also an example
# of the plug-in in use, through the public client only (the docstring of `demo` says what it shows):
#
#     PYTHONPATH=. python examples/limits_plugin.py          # an embedded broker on Trio's virtual clock
#     PYTHONPATH=. python examples/limits_plugin.py --broker 127.0.0.1:7420    # in real time (~40 s), a broker
#         # started as: PYTHONPATH=. millpond serve --limit-algorithm capped=examples.limits_plugin:CappedLeakyBucket
#
# (PYTHONPATH=. from the repository's root: the broker imports the plug-in as examples.limits_plugin.)
from __future__ import annotations

import argparse
import importlib.util
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

import trio
import trio.testing

from millpond import connect
from millpond.broker.core.limits.base import (
    DEFAULT_MAX_KEYS,
    NS_PER_S,
    Decision,
    KeyedAlgorithm,
    admitted,
    positive_fraction,
    positive_int,
    refused,
    seconds_to_ns,
)
from millpond.client.errors import ThrottledError


class CappedLeakyBucket(KeyedAlgorithm):
    """A leaky bucket (GCRA: ``rate`` units per second, ``burst`` at once) that also admits at most ``cap`` units
    per aligned period of ``period_s`` seconds (default one day), like an API plan with "10 per second, 10,000
    per day". A request is admitted only if both admit; then both are charged.

    ``retry_after`` is the later of the two waits: each condition, once true, stays true while nothing else
    arrives, so the first instant at which both hold is the later of the two first instants.

    Worked example: ``rate=1, burst=2, cap=3, period_s=60``. At t=0 two requests pass (burst), a third is refused
    with ``retry_after = 1 s``; at t=1 s it passes, and the daily cap is reached: at t=30 s a request fits the
    bucket but not the cap: refused with ``retry_after = 30 s`` (the next period starts at 60 s).

    State per key: ``(tat, period_index, used)``, all integers; fresh once the bucket has drained and the period
    is over. The largest single cost is ``min(burst, cap)``.
    """

    name = "capped_leaky_bucket"

    def __init__(self, *, rate: Any, burst: int = 1, cap: int, period_s: Any = 86_400, mode: str = "reject",
                 max_keys: int = DEFAULT_MAX_KEYS) -> None:
        super().__init__(mode=mode, max_keys=max_keys)
        r = positive_fraction(rate, "rate")
        self.burst = positive_int(burst, "burst")
        self.cap = positive_int(cap, "cap")
        self.period_ns = seconds_to_ns(period_s, "period_s")
        self.capacity = min(self.burst, self.cap)
        self._p = r.numerator  # GCRA times are kept as ns * p, so the emission interval q*1e9 is an integer
        self._t = r.denominator * NS_PER_S
        self._tolerance = self.burst * self._t

    def decide(self, state: Any, cost: int, now_ns: int, charge: bool) -> tuple[Decision, Any]:
        p, t = self._p, self._t
        now = now_ns * p
        period = now_ns // self.period_ns
        tat, used = now, 0
        if state is not None:
            tat = max(state[0], now)
            if state[1] == period:
                used = state[2]
        new_tat = tat + cost * t
        bucket_wait_ns = max(0, -((now + self._tolerance - new_tat) // p))
        cap_wait_ns = (period + 1) * self.period_ns - now_ns if used + cost > self.cap else 0
        if bucket_wait_ns or cap_wait_ns:
            remaining = min((self._tolerance - (tat - now)) // t, self.cap - used)
            return refused(max(bucket_wait_ns, cap_wait_ns), max(0, remaining)), state
        remaining = min((self._tolerance - (new_tat - now)) // t, self.cap - used - cost)
        return admitted(remaining), (new_tat, period, used + cost)

    def is_fresh(self, state: Any, now_ns: int) -> bool:
        return state[0] <= now_ns * self._p and (state[1] < now_ns // self.period_ns or state[2] == 0)


# -- the plug-in in use -------------------------------------------------------------------------------------------

PLUGIN = "examples.limits_plugin:CappedLeakyBucket"
OPERATOR_TABLE = {"capped": PLUGIN}  # the config file's [limit_algorithms] table, as open_broker takes it
PLAN = {"rate": 5, "burst": 5, "cap": 20, "period_s": 10}  # 5 requests/s, bursts of 5, 20 per (shrunk) "day"
OFFER_FIRST_MS, OFFER_EVERY_MS, OFFER_UNTIL_MS = 25, 101, 12_000  # the eager producer: about 10 requests/s for 12 s
PATIENT_RECORDS = 25


@dataclass
class Outcome:
    admitted: list[int] = field(default_factory=list)  # the eager producer: ms after a period start
    throttled: list[int] = field(default_factory=list)
    retry_after_s: list[float] = field(default_factory=list)  # what each refusal said
    broker_admitted: int = 0  # the policy's own counters (millpond limits list), both producers
    broker_throttled: int = 0
    patient_sent: int = 0  # the patient producer: records acknowledged
    patient_s: float = 0.0  # how long its records took, first send to last acknowledgement
    patient_throttled: int = 0  # THROTTLED answers it waited out
    patient_throttle_time_s: float = 0.0
    patient_policy: str | None = None

    def per_second(self) -> list[tuple[int, int]]:
        seconds = -(-OFFER_UNTIL_MS // 1000)
        return [(sum(1 for t in self.admitted if t // 1000 == s), sum(1 for t in self.throttled if t // 1000 == s))
                for s in range(seconds)]

    def per_period(self) -> list[int]:
        period_ms = PLAN["period_s"] * 1000
        return [sum(1 for t in self.admitted if t // period_ms == p) for p in range(-(-OFFER_UNTIL_MS // period_ms))]


async def period_start(client_for: Callable[[str], Any], topic: str, suffix: str) -> float:
    """The start of the plug-in's next period on this client's clock: a probe policy with a cap of 1 refuses the
    second request with retry_after = the time left in the period (its bucket wait, 1 ms, is shorter)."""
    name = "probe" + suffix
    async with client_for(name) as client:
        await client.set_limit(name, scope="client:" + name, unit="requests", algorithm="capped", rate=1000,
                               burst=1, cap=1, period_s=PLAN["period_s"])
        async with client.producer(linger_s=0, idempotent=False, throttle_wait_max_s=0) as producer:
            while True:
                try:
                    await producer.send(topic, b"probe")
                except ThrottledError as exc:
                    start = trio.current_time() + float(exc.details["retry_after_s"])
                    break
        await client.delete_limit(name)
    return start


async def demo(address: str | None = None, *, say: Callable[[str], Any] = print) -> Outcome:
    """A custom limiter, registered by the operator and used by producers.

    The operator registers ``CappedLeakyBucket`` as ``capped`` (here the embedded broker's ``limit_algorithms``,
    the config file's ``[limit_algorithms]`` table; ``millpond serve --limit-algorithm`` for a daemon). An admin
    then sets a policy naming it, as for a built-in: plan ``capped`` on every ``app-*`` client, counted in requests,
    rate 5/s, burst 5 and a cap of 20 per period of 10 s (a day, shrunk so the example ends).

    1. ``app-eager`` offers a request every 101 ms (about 10 per second) for 12 s from a period's start and gives up
       on a refused one (as an HTTP client taking a 429). The algorithm implies: 9 in the first second (5 of burst,
       then the rate), 5 a second after that, the cap reached early in second 3, nothing more until the next period
       at 10 s, where the bucket has drained: 9 again, then 5 a second. Per second admitted/throttled is printed.
    2. ``app-patient`` sends 25 records one at a time from the next period's start with the producer's defaults: it
       waits out each retry-after. 5 go at once, 15 more at the rate, and the 21st waits for the next period: all
       25 stored after 10 s, nearly all of it throttled (``producer.statistics()``).
    """
    from examplekit import broker_address  # here, not at the top: the broker imports this module for its class

    out = Outcome()
    async with broker_address(address, fsync="never", limit_algorithms=OPERATOR_TABLE) as where, \
            connect(where, client_id="admin") as admin:
        suffix = "" if address is None else "-" + secrets.token_hex(3)  # a shared broker: fresh names per run
        topic, policy = "plan-traffic" + suffix, "plan" + suffix
        await admin.create_topic(topic)
        applied = await admin.set_limit(policy, scope=f"client:app-*{suffix}", unit="requests", algorithm="capped",
                                        **PLAN)
        say(f"operator: limit algorithm capped = {PLUGIN}")
        say(f"policy {applied.name}: {applied.algorithm} on client:app-*{suffix}, {applied.unit}, "
            + ", ".join(f"{k}={v}" for k, v in PLAN.items()))

        def client_for(client_id: str) -> Any:
            return connect(where, client_id=client_id)

        start = await period_start(client_for, topic, suffix)
        say(f"a period starts {start - trio.current_time():.2f} s from now (found from a retry-after)")
        async with client_for("app-eager" + suffix) as client:
            async with client.producer(linger_s=0, idempotent=False, throttle_wait_max_s=0) as producer:
                for at in range(OFFER_FIRST_MS, OFFER_UNTIL_MS, OFFER_EVERY_MS):
                    await trio.sleep_until(start + at / 1000)
                    try:
                        await producer.send(topic, b"request")
                        out.admitted.append(at)
                    except ThrottledError as exc:
                        out.throttled.append(at)
                        out.retry_after_s.append(float(exc.details["retry_after_s"]))

        say(f"\napp-eager: a request every {OFFER_EVERY_MS} ms, a refused one given up")
        say(f"  {'second':<8}{'admitted':<10}{'throttled':<10}")
        for s, (a, t) in enumerate(out.per_second()):
            say(f"  {s:<8}{a:<10}{t:<10}")
        say(f"  admitted {len(out.admitted)}, throttled {len(out.throttled)}; per period "
            + ", ".join(f"{n} of cap {PLAN['cap']}" for n in out.per_period())
            + f"; the longest retry-after {max(out.retry_after_s):.2f} s (the cap: until the next period)")

        patient_start = start + PLAN["period_s"] * 2  # the next period's start
        async with client_for("app-patient" + suffix) as client:
            async with client.producer(linger_s=0) as producer:
                await trio.sleep_until(patient_start)
                for i in range(PATIENT_RECORDS):
                    await producer.send(topic, b"record %d" % i)
                    out.patient_sent += 1
                out.patient_s = trio.current_time() - patient_start
                stats = producer.statistics()
        out.patient_throttled, out.patient_policy = stats.throttled, stats.throttle_policy
        out.patient_throttle_time_s = stats.throttle_time_s
        say(f"\napp-patient: {out.patient_sent} records sent one at a time, each retry-after waited out")
        say(f"  all {out.patient_sent} stored in {out.patient_s:.2f} s; {out.patient_throttled} THROTTLED answers "
            f"(policy {out.patient_policy}), throttled for {out.patient_throttle_time_s:.2f} s")

        [stats_of] = [p.stats for p in await admin.list_limits() if p.name == policy]
        out.broker_admitted, out.broker_throttled = stats_of.admitted, stats_of.throttled
        await admin.delete_limit(policy)
    say(f"the policy's counters (millpond limits list): admitted {out.broker_admitted}, throttled "
        f"{out.broker_throttled} requests, both producers")
    return out


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its package is not there at all
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A custom limit algorithm, registered by the operator, shaping "
                                                 "two producers.")
    parser.add_argument("--broker", metavar="HOST:PORT",
                        help=f"a running broker whose operator registered capped={PLUGIN} (default: embedded)")
    args = parser.parse_args(argv)
    from examplekit import run_example

    if args.broker is None and not _importable("examples.limits_plugin"):
        # the embedded broker imports the plug-in by its name, examples.limits_plugin, as an operator's would
        raise SystemExit("limits_plugin: the broker imports the plug-in as examples.limits_plugin, which is not "
                         "importable here: run it from the repository's root with PYTHONPATH=. "
                         "(PYTHONPATH=. python examples/limits_plugin.py)")
    # embedded: the broker and the producers share Trio's virtual clock, which skips ahead whenever all wait
    clock = None if args.broker else trio.testing.MockClock(autojump_threshold=0)
    run_example("limits_plugin", lambda: trio.run(demo, args.broker, clock=clock))


if __name__ == "__main__":
    main()
