"""Order service and email worker: decoupling with a queue, polled and pushed.

What it shows: the order service takes an order, sends an "order placed" message to a queue and returns at once;
sending the confirmation email (slow, and sometimes failing) is an email worker's job. The same orders are handled
twice, side by side:

* poll: the worker long-polls (``Queue.receive(wait_s=20)``: the receive returns as soon as a message is there),
  deletes what it sent, and leaves a failure to come back after the visibility timeout;
* push: the worker subscribes with a prefetch window (``Queue.subscribe(prefetch=N)``): the broker pushes
  messages as they arrive, never more than N unacknowledged; ``ack`` deletes, ``nack(delay_s=)`` retries later.

One order has an address the mail server always refuses: after ``max_receive_count`` (3) failed deliveries the
queue moves it to the dead-letter queue, where the example reads it back.

Run it (an embedded broker on Trio's virtual clock, so the visibility timeouts and the slow emails take no real
time; the order service's answer times are real):

    python examples/order_emails.py
    python examples/order_emails.py --broker 127.0.0.1:7420     # a running `millpond serve`, in real time
"""
from __future__ import annotations

import argparse
import json
import secrets
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import trio
import trio.testing

from millpond import connect

from examplekit import broker_address, run_example  # examples/examplekit.py

ORDERS = [(1001, "ada@example.com", "a teapot"), (1002, "grace@example.com", "two mugs"),
          (1003, "nobody@invalid", "a kettle"), (1004, "alan@example.com", "a tray"),
          (1005, "edsger@example.com", "tea leaves"), (1006, "barbara@example.com", "a strainer")]
EMAIL_SEND_S = 0.2  # how long the mail server takes per email
VISIBILITY_TIMEOUT_S = 2.0  # poll: a failed email is tried again after this
RETRY_DELAY_S = 1.0  # push: a nacked email is tried again after this
MAX_RECEIVE_COUNT = 3  # then the message goes to the dead-letter queue
PREFETCH = 4


@dataclass
class Mode:
    """What one worker did."""

    name: str
    emails_sent: list[int] = field(default_factory=list)  # order ids, in the order their emails went out
    failed_attempts: int = 0  # deliveries whose email failed
    failures_by_order: dict[int, int] = field(default_factory=dict)
    requests: int = 0  # poll: receive requests made; push: subscriptions opened
    empty_receives: int = 0  # poll: long polls that came back with nothing
    unacked_max: int = 0  # push: the most unacknowledged messages the broker reported at once
    dead_letters: list[tuple[int, str, int]] = field(default_factory=list)  # (order id, source queue, receives)
    order_answer_ms: list[float] = field(default_factory=list)  # real time the order service took per order
    left: tuple[int, int] = (0, 0)  # messages still in the queue at the end: (visible, in flight)


class MailServerError(Exception):
    pass


async def send_email(to: str, order_id: int, say: Callable[[str], Any], mode: str) -> None:
    """The slow, unreliable part: the mail server."""
    await trio.sleep(EMAIL_SEND_S)
    if to.endswith("@invalid"):
        raise MailServerError(f"550 no such domain: {to}")
    say(f"    [{mode}] email sent to {to} for order {order_id}")


async def place_order(queue: Any, order_id: int, email: str, item: str, mode: Mode,
                      say: Callable[[str], Any]) -> None:
    """The order service: queue the confirmation email and return. It never waits for the mail server."""
    started = time.perf_counter()
    await queue.send(json.dumps({"order": order_id, "email": email, "item": item}).encode(),
                     attributes={"event": "order placed"})
    mode.order_answer_ms.append((time.perf_counter() - started) * 1000)
    say(f"  order {order_id} placed ({item}): answered in {mode.order_answer_ms[-1]:.1f} ms, email queued")


async def poll_worker(queue: Any, mode: Mode, say: Callable[[str], Any]) -> None:
    """Long polling: ask, wait until something is there, handle it, delete it. A failure is not deleted: it is
    visible again when its visibility timeout ends."""
    while True:
        messages = await queue.receive(max_messages=10, wait_s=20)
        mode.requests += 1
        if not messages:
            mode.empty_receives += 1
        for message in messages:
            order = json.loads(message.body)
            try:
                await send_email(order["email"], order["order"], say, "poll")
            except MailServerError as exc:
                mode.failed_attempts += 1
                mode.failures_by_order[order["order"]] = mode.failures_by_order.get(order["order"], 0) + 1
                say(f"    [poll] order {order['order']}: {exc} (delivery {message.receive_count}); "
                    f"back in {VISIBILITY_TIMEOUT_S:g} s")
            else:
                mode.emails_sent.append(order["order"])
                await queue.delete(message)


async def push_worker(queue: Any, mode: Mode, say: Callable[[str], Any]) -> None:
    """Push: the broker sends messages as they arrive, at most PREFETCH unacknowledged at a time."""
    async with queue.subscribe(prefetch=PREFETCH) as subscription:
        mode.requests += 1
        try:
            async for message in subscription:
                order = json.loads(message.body)
                try:
                    await send_email(order["email"], order["order"], say, "push")
                except MailServerError as exc:
                    mode.failed_attempts += 1
                    mode.failures_by_order[order["order"]] = mode.failures_by_order.get(order["order"], 0) + 1
                    say(f"    [push] order {order['order']}: {exc} (delivery {message.receive_count}); "
                        f"nack, again in {RETRY_DELAY_S:g} s")
                    await message.nack(delay_s=RETRY_DELAY_S)
                else:
                    mode.emails_sent.append(order["order"])
                    await message.ack()
        finally:
            mode.unacked_max = subscription.statistics().broker_unacked_max


async def run_mode(client: Any, name: str, suffix: str, say: Callable[[str], Any]) -> Mode:
    mode = Mode(name)
    queue_name, dlq_name = f"order-emails-{name}{suffix}", f"order-emails-{name}-dlq{suffix}"
    await client.create_queue(dlq_name)
    await client.create_queue(queue_name, visibility_timeout_s=VISIBILITY_TIMEOUT_S, dead_letter_queue=dlq_name,
                              max_receive_count=MAX_RECEIVE_COUNT)
    queue, dlq = client.queue(queue_name), client.queue(dlq_name)
    worker = poll_worker if name == "poll" else push_worker
    say(f"\n== {name}: queue {queue_name}, dead letters to {dlq_name} after {MAX_RECEIVE_COUNT} deliveries")
    good = sum(1 for _, email, _ in ORDERS if not email.endswith("@invalid"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker, queue, mode, say)
        for order_id, email, item in ORDERS:
            await place_order(queue, order_id, email, item, mode, say)
            await trio.sleep(0.1)  # customers arrive a little apart
        with trio.fail_after(60):  # everything is handled: the good emails sent, the bad one dead-lettered
            while len(mode.emails_sent) < good or (await dlq.attributes()).messages_visible < 1:
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    for message in await dlq.receive(max_messages=10, wait_s=0):
        order = json.loads(message.body)
        attempts = mode.failures_by_order[order["order"]]
        mode.dead_letters.append((order["order"], message.dead_letter_source, attempts))
        say(f"  dead letter: order {order['order']} to {order['email']}, moved from {message.dead_letter_source} "
            f"after {attempts} failed deliveries")
        await dlq.delete(message)
    left = await queue.attributes()
    mode.left = (left.messages_visible, left.messages_in_flight)
    say(f"  {name}: {len(mode.emails_sent)} emails sent, {mode.failed_attempts} failed deliveries, "
        f"{len(mode.dead_letters)} dead letter; queue left: {left.messages_visible} visible, "
        f"{left.messages_in_flight} in flight")
    return mode


async def run(address: str | None = None, *, say: Callable[[str], Any] = print) -> dict[str, Mode]:
    async with broker_address(address, fsync="never") as where, connect(where, client_id="shop") as client:
        suffix = "" if address is None else "-" + secrets.token_hex(3)  # a shared broker: fresh names per run
        modes = {name: await run_mode(client, name, suffix, say) for name in ("poll", "push")}
    poll, push = modes["poll"], modes["push"]
    rows = [("", "poll (long polling)", f"push (prefetch {PREFETCH})"),
            ("emails sent", len(poll.emails_sent), len(push.emails_sent)),
            ("failed deliveries", poll.failed_attempts, push.failed_attempts),
            ("dead letters", len(poll.dead_letters), len(push.dead_letters)),
            ("client requests", f"{poll.requests} receives ({poll.empty_receives} empty)", "1 subscribe"),
            ("most unacked at once", "-", f"{push.unacked_max} (prefetch {PREFETCH})"),
            ("order service answer", f"{statistics.median(poll.order_answer_ms):.1f} ms (median)",
             f"{statistics.median(push.order_answer_ms):.1f} ms (median)")]
    say("")
    for label, a, b in rows:
        say(f"  {label:<22} {a!s:<26} {b}")
    say(f"  (each email takes {EMAIL_SEND_S * 1000:.0f} ms: the order service never waits for it)")
    return modes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Order service and email worker: a queue, polled and pushed.")
    parser.add_argument("--broker", metavar="HOST:PORT", help="a running broker (default: an embedded one)")
    args = parser.parse_args(argv)
    # embedded: the broker and the workers share Trio's virtual clock, which skips ahead whenever all wait
    clock = None if args.broker else trio.testing.MockClock(autojump_threshold=0)
    run_example("order_emails", lambda: trio.run(run, args.broker, clock=clock))


if __name__ == "__main__":
    main()
