"""Cache invalidation: a "price changed" publish reaches a webhook that evicts the cached price.

What it shows: a shop reads prices through a read-through cache in front of its database. The pricing service
writes a new price to the database and publishes "price changed" (the SKU as key and header) to the topic
``price-changed``. A webhook subscription (SNS's HTTP endpoint, raw delivery) POSTs each record to the cache's
invalidation endpoint, a small HTTP server on 127.0.0.1 in a thread of this program, which evicts that SKU's
entry; the next read misses and loads the new price. For each change the example prints the read before the
eviction (from the cache: stale, the database already says otherwise), the publish (partition and offset), the
eviction arriving with its message id and how long after the publish it came, and the read after (fresh).

Delivery is at least once: the endpoint remembers the ``x-millpond-message-id`` of what it handled and ignores a
repeat. To show it, it answers the first request of the second change with 500 after evicting, as if its answer
were lost on the way back; the broker sends the record again with the same message id, and the endpoint ignores
it. Evicting (instead of writing the new price into the cache) is safe in any order: two changes of one SKU
arriving swapped still leave no stale entry.

Run it (an embedded broker in real time, so the publish-to-eviction times are real; about a second):

    python examples/cache_invalidation.py
    python examples/cache_invalidation.py --broker 127.0.0.1:7420  # a `millpond serve` on this machine (its
                                                                    # webhook_allow must allow 127.0.0.1, the default)
"""
from __future__ import annotations

import argparse
import http.server
import json
import secrets
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import trio

from millpond import connect

from examplekit import broker_address, run_example  # examples/examplekit.py

PRICES = {"sku-1": ("kettle", 3999), "sku-2": ("teapot", 2450), "sku-3": ("mug", 899)}  # cents
CHANGES = [("sku-1", 3499), ("sku-2", 2750), ("sku-1", 3299)]  # (sku, new price in cents), in this order
ANSWER_LOST = 1  # the index in CHANGES whose first delivery is answered 500 after the eviction
EVICTION_WAIT_S = 10.0


def money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


class Database:
    """The source of truth: SKU -> price in cents."""

    def __init__(self) -> None:
        self.prices = {sku: cents for sku, (_, cents) in PRICES.items()}
        self.reads = 0

    def load(self, sku: str) -> int:
        self.reads += 1
        return self.prices[sku]


class Cache:
    """A read-through cache; ``evict`` is called from the invalidation endpoint's thread."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._entries: dict[str, int] = {}

    def get(self, sku: str) -> tuple[int, str]:
        """The price and where it came from: ``"hit"`` (the cache) or ``"miss"`` (loaded and kept)."""
        with self._lock:
            if sku in self._entries:
                return self._entries[sku], "hit"
        cents = self.db.load(sku)
        with self._lock:
            self._entries[sku] = cents
        return cents, "miss"

    def evict(self, sku: str) -> bool:
        with self._lock:
            return self._entries.pop(sku, None) is not None


@dataclass
class Eviction:
    message_id: str
    sku: str
    partition: int
    offset: int
    at: float  # time.perf_counter() when the entry was evicted
    attempt: int


@dataclass
class Endpoint:
    """The cache's invalidation endpoint: POST /invalidate with a raw "price changed" record."""

    cache: Cache
    notify: Callable[[Eviction], None]  # called from the server's thread with each eviction
    evictions: list[Eviction] = field(default_factory=list)
    duplicates: list[tuple[str, int]] = field(default_factory=list)  # (message id, attempt) ignored
    seen: set[str] = field(default_factory=set)
    lose_answer_of: int | None = None  # the n-th message (from 0) whose first answer is 500: a lost answer

    def handle(self, headers: Any, body: bytes) -> int:
        message_id = headers["x-millpond-message-id"]
        attempt = int(headers["x-millpond-attempt"])
        if message_id in self.seen:
            self.duplicates.append((message_id, attempt))
            return 204
        change = json.loads(body)
        self.cache.evict(change["sku"])
        ev = Eviction(message_id, change["sku"], int(headers["x-millpond-partition"]),
                      int(headers["x-millpond-offset"]), time.perf_counter(), attempt)
        self.seen.add(message_id)
        self.evictions.append(ev)
        self.notify(ev)
        return 500 if len(self.evictions) - 1 == self.lose_answer_of and attempt == 1 else 204

    def serve(self) -> http.server.HTTPServer:
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                status = endpoint.handle(self.headers, body) if self.path == "/invalidate" else 404
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # quiet: the example prints what matters
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, name="invalidation-endpoint", daemon=True).start()
        return server


@dataclass
class Outcome:
    reads_before: list[tuple[int, str, int]] = field(default_factory=list)  # (cached price, hit/miss, db price)
    reads_after: list[tuple[int, str, int]] = field(default_factory=list)
    publish_to_eviction_ms: list[float] = field(default_factory=list)
    evicted_per_change: list[int] = field(default_factory=list)  # evictions whose offset is the change's
    duplicates: int = 0
    delivered: int = 0  # the subscription's count of records delivered (2xx)
    message_ids: list[str] = field(default_factory=list)


async def run(address: str | None = None, *, say: Callable[[str], Any] = print) -> Outcome:
    out = Outcome()
    db = Database()
    cache = Cache(db)
    send, arrived = trio.open_memory_channel[Eviction](len(CHANGES) + 1)
    token = trio.lowlevel.current_trio_token()
    endpoint = Endpoint(cache, notify=lambda ev: token.run_sync_soon(send.send_nowait, ev),
                        lose_answer_of=ANSWER_LOST)
    published_at: list[tuple[int, int]] = []  # (partition, offset) of each change
    server = endpoint.serve()
    url = f"http://127.0.0.1:{server.server_address[1]}/invalidate"
    try:
        async with broker_address(address, fsync="always") as where, connect(where, client_id="pricing") as client:
            suffix = "" if address is None else "-" + secrets.token_hex(3)  # a shared broker: fresh names per run
            topic = "price-changed" + suffix
            await client.create_topic(topic)
            sub = await client.subscribe(topic, url=url, raw=True, min_delay_s=0.1, max_delay_s=0.5)
            say(f"webhook subscription {sub.id}: {topic} -> POST {url} (raw)")
            for sku in PRICES:
                cache.get(sku)
            say("cache warmed: " + ", ".join(f"{PRICES[s][0]} {money(cache.get(s)[0])}" for s in PRICES))

            for i, (sku, cents) in enumerate(CHANGES):
                name = PRICES[sku][0]
                say(f"\nprice change {i + 1}: {name} ({sku}) {money(db.prices[sku])} -> {money(cents)}")
                db.prices[sku] = cents  # the pricing service writes the database first...
                before = cache.get(sku)
                out.reads_before.append((*before, db.prices[sku]))
                say(f"  read before:  {money(before[0])} ({before[1]}; the database says {money(cents)}: stale)")
                published = time.perf_counter()
                meta = await client.publish(topic, json.dumps({"sku": sku, "price_cents": cents}), key=sku,
                                            headers={"sku": sku})  # ...then tells everyone who caches it
                published_at.append((meta.partition, meta.offset))
                say(f"  published:    partition {meta.partition} offset {meta.offset}")
                with trio.fail_after(EVICTION_WAIT_S):
                    ev = await arrived.receive()
                ms = (ev.at - published) * 1000
                out.publish_to_eviction_ms.append(ms)
                out.message_ids.append(ev.message_id)
                say(f"  evicted:      {ev.sku} by message {ev.message_id} (offset {ev.offset}), "
                    f"{ms:.1f} ms after the publish")
                after = cache.get(sku)
                out.reads_after.append((*after, db.prices[sku]))
                say(f"  read after:   {money(after[0])} ({after[1]}, loaded from the database: fresh)")

            with trio.fail_after(EVICTION_WAIT_S):  # the retry of the lost answer, and every answer, settled
                while (d := await client.describe_subscription(sub.id)).delivered < len(CHANGES):
                    await trio.sleep(0.02)
            out.delivered = d.delivered
            await client.unsubscribe(sub.id)
    finally:
        await trio.to_thread.run_sync(server.shutdown)
        server.server_close()

    evicted = [(ev.partition, ev.offset) for ev in endpoint.evictions]
    out.evicted_per_change = [evicted.count(at) for at in published_at]
    out.duplicates = len(endpoint.duplicates)
    say(f"\nevictions per change: {out.evicted_per_change}; repeats ignored by message id: {out.duplicates}"
        + "".join(f" ({m}, attempt {a})" for m, a in endpoint.duplicates))
    say(f"the subscription delivered {out.delivered} of {len(CHANGES)}; database reads {db.reads}")
    times = out.publish_to_eviction_ms
    say(f"publish to eviction: median {statistics.median(times):.1f} ms, max {max(times):.1f} ms "
        f"over {len(times)} changes")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Cache invalidation: a publish evicts a cached price by webhook.")
    parser.add_argument("--broker", metavar="HOST:PORT", help="a running broker on this machine (default: embedded)")
    args = parser.parse_args(argv)
    run_example("cache_invalidation", lambda: trio.run(run, args.broker))


if __name__ == "__main__":
    main()
