# `millpond produce TOPIC`: one record per stdin line (kcat -P style), binary-safe: stdin is read as bytes and
# only the trailing b"\n" of each line is removed. Knows argparse and stdin; batching is the client producer's.
from __future__ import annotations

import argparse
import sys
import time

from millpond.broker.cli._clientcmd import add_client_args, fail, guarded
from millpond.client.sync import connect


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("produce", help="produce stdin lines as records",
                       description="Produce one record per stdin line (the trailing newline is stripped).")
    p.add_argument("topic")
    p.add_argument("--key-separator", "-K", metavar="SEP",
                   help="split each line at the first SEP into key and value (lines without SEP get no key)")
    p.add_argument("--partition", "-p", type=int, help="send every record to this partition")
    p.add_argument("--linger-s", type=float, default=0.005, help="batch linger in seconds (default 0.005)")
    add_client_args(p)
    p.set_defaults(func=guarded("produce", run))


def run(args: argparse.Namespace) -> int:
    sep = args.key_separator.encode() if args.key_separator else None
    partition = args.partition
    started = time.monotonic()
    count = size = 0
    with connect(args.broker, client_id=args.client_id) as c:
        if args.topic not in c.metadata([args.topic]):
            return fail("produce", f"topic {args.topic!r} does not exist (create it with: millpond topics create "
                                   f"{args.topic})")
        with c.producer(linger_s=args.linger_s) as p:
            send = p.send
            topic = args.topic
            for line in sys.stdin.buffer:
                if line.endswith(b"\n"):
                    line = line[:-1]
                key = None
                if sep is not None:
                    k, found, v = line.partition(sep)
                    if found:
                        key, line = k, v
                send(topic, line, key=key, partition=partition)
                count += 1
                size += len(line)
        stats = p.statistics()
    elapsed = time.monotonic() - started
    if stats.records_failed:
        return fail("produce", f"{stats.records_failed} of {count} record(s) failed: {stats.last_error}")
    print(f"produced {count} record(s), {size} bytes, to {args.topic} in {elapsed:.3f} s", file=sys.stderr)
    return 0
