# `millpond subscriptions create|list|describe|delete` (a topic's fan-out to queues and webhooks) and
# `millpond publish TOPIC VALUE --header k=v --key K` (one record): fan-out from the shell, through the blocking
# client. Knows argparse and output formatting; the protocol is the client's business.
from __future__ import annotations

import argparse
import dataclasses
import json

from millpond.broker.cli._clientcmd import add_client_args, guarded
from millpond.client.sync import connect


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("subscriptions", help="subscribe queues or webhooks to a topic (fan-out), list, describe, "
                                             "delete",
                       description="A topic's subscriptions (as SNS's): each delivers every matching record of the "
                                   "topic into its queue, exactly once, or POSTs it to its webhook URL, at least "
                                   "once (docs/fanout.md).")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    c = actions.add_parser("create", help="subscribe a queue or a webhook URL to a topic")
    c.add_argument("topic")
    target = c.add_mutually_exclusive_group(required=True)
    target.add_argument("--queue", help="the queue that receives the records")
    target.add_argument("--url", help="an http(s) URL each record is POSTed to (its host in the broker's "
                                      "webhook_allow list: loopback by default)")
    c.add_argument("--filter-policy", metavar="JSON", help="SNS filter policy (JSON text): only matching records")
    c.add_argument("--scope", choices=("MessageAttributes", "MessageBody"), default="MessageAttributes",
                   help="what the filter policy reads: the record headers (default) or the JSON value")
    c.add_argument("--raw", action="store_true",
                   help="the message body is the record value, headers become attributes (default: SNS's envelope)")
    c.add_argument("--dead-letter-queue", metavar="QUEUE",
                   help="where records the queue refuses, or the webhook fails after its last attempt, go")
    c.add_argument("--attempts", type=int, metavar="N", help="webhook: requests per record in all (default 4)")
    c.add_argument("--min-delay-s", type=float, metavar="S", help="webhook: the first retry's delay (default 20)")
    c.add_argument("--max-delay-s", type=float, metavar="S",
                   help="webhook: the longest retry delay; delays double up to it (default 20)")
    c.add_argument("--total-s", type=float, metavar="S",
                   help="webhook: no retry starts later than this after the first attempt (default 3600)")
    c.add_argument("--timeout-s", type=float, metavar="S", help="webhook: seconds per request (default 15)")
    c.add_argument("--concurrency", type=int, metavar="N", help="webhook: requests in flight at most (default 4)")
    c.add_argument("--rate", type=float, metavar="PER_S",
                   help="webhook: requests started per second at most (SNS maxReceivesPerSecond; default none)")
    c.add_argument("--start", default="end", metavar="end|beginning|MS",
                   help="new records only (end, the default), every record kept (beginning), or from a record "
                        "timestamp in epoch ms")

    ls = actions.add_parser("list", help="list subscriptions")
    ls.add_argument("topic", nargs="?", help="only this topic's")
    ls.add_argument("--json", action="store_true", help="one JSON array instead of lines")

    d = actions.add_parser("describe", help="a subscription's cursors, lag and counters")
    d.add_argument("id")
    d.add_argument("--json", action="store_true", help="JSON object instead of lines")

    rm = actions.add_parser("delete", help="unsubscribe: delivery stops")
    rm.add_argument("id")
    for sp in (c, ls, d, rm):
        add_client_args(sp)
    p.set_defaults(func=guarded("subscriptions", run))


def add_publish_parser(sub: argparse._SubParsersAction) -> None:
    """`millpond publish` (registered by broker/cli/publish.py)."""
    p = sub.add_parser("publish", help="append one record to a topic (its subscriptions fan it out)",
                       description="Append one record to a topic, answered once durable; prints its partition "
                                   "and offset.")
    p.add_argument("topic")
    p.add_argument("value")
    p.add_argument("--header", "-H", action="append", default=[], metavar="NAME=VALUE",
                   help="a record header (repeatable); filter policies read these")
    p.add_argument("--key", "-k", help="the record key: picks the partition, a FIFO queue's message group")
    add_client_args(p)
    p.set_defaults(func=guarded("publish", run_publish))


def _start(text: str) -> str | int:
    if text in ("end", "beginning"):
        return text
    if text.isdigit():
        return int(text)
    raise ValueError(f"--start must be end, beginning or a timestamp in epoch ms, not {text!r}")


def run(args: argparse.Namespace) -> int:
    with connect(args.broker, client_id=args.client_id) as c:
        if args.action == "create":
            webhook = {"attempts_max": args.attempts, "min_delay_s": args.min_delay_s,
                       "max_delay_s": args.max_delay_s, "total_s": args.total_s, "timeout_s": args.timeout_s,
                       "concurrency_max": args.concurrency, "rate_per_second": args.rate}
            if args.queue is not None and any(v is not None for v in webhook.values()):
                raise ValueError("--attempts, --min-delay-s, --max-delay-s, --total-s, --timeout-s, --concurrency "
                                 "and --rate are for a --url subscription")
            s = c.subscribe(args.topic, queue=args.queue, url=args.url, filter_policy=args.filter_policy,
                            filter_policy_scope=args.scope, raw=args.raw, dead_letter_queue=args.dead_letter_queue,
                            start=_start(args.start), **webhook)
            print(f"subscription {s.id}: topic {s.topic} -> {_target(s)}")
        elif args.action == "list":
            subs = c.subscriptions(args.topic)
            if args.json:
                print(json.dumps([dataclasses.asdict(s) for s in subs]))
            for s in [] if args.json else subs:
                extra = "".join([" raw" if s.raw else "", f" filter {s.filter_policy}" if s.filter_policy else ""])
                print(f"{s.id}  {s.topic} -> {_target(s)}{extra}")
        elif args.action == "describe":
            d = c.describe_subscription(args.id)
            if args.json:
                print(json.dumps(dataclasses.asdict(d), indent=2))
            else:
                s = d.subscription
                paused = " (paused: queue full)" if d.paused else ""
                print(f"subscription {s.id}: topic {s.topic} -> {_target(s)}{paused}")
                if s.delivery is not None:
                    p = s.delivery
                    rate = "no rate limit" if p.rate_per_second is None else f"{p.rate_per_second:g}/s"
                    print(f"delivery: {p.attempts_max} attempt(s), retries {p.min_delay_s:g}-{p.max_delay_s:g} s "
                          f"apart within {p.total_s:g} s, timeout {p.timeout_s:g} s, {p.concurrency_max} in "
                          f"flight, {rate}")
                print(f"delivered {d.delivered}, filtered out {d.filtered_out}, failed {d.failed} "
                      f"(dead-lettered {d.dead_lettered})")
                last = "-" if d.last_delivery_lag_s is None else f"{d.last_delivery_lag_s:.3f} s"
                print(f"lag {d.lag} record(s), {d.lag_s:.3f} s; last publish-to-queue {last}")
                for p in d.partitions:
                    print(f"partition {p.partition}: cursor {p.cursor}, high watermark {p.high_watermark}, "
                          f"lag {p.lag}")
        elif args.action == "delete":
            c.unsubscribe(args.id)
            print(f"deleted subscription {args.id}")
    return 0


def _target(s) -> str:
    return f"queue {s.queue}" if s.url is None else f"webhook {s.url}"


def run_publish(args: argparse.Namespace) -> int:
    headers = {}
    for h in args.header:
        name, eq, value = h.partition("=")
        if not eq or not name:
            raise ValueError(f"--header takes NAME=VALUE, not {h!r}")
        headers[name] = value
    with connect(args.broker, client_id=args.client_id) as c:
        meta = c.publish(args.topic, args.value, headers=headers, key=args.key)
    print(f"published to {meta.topic} partition {meta.partition} offset {meta.offset}")
    return 0
