# `millpond topics create|list|describe|delete|add-partitions`: topic admin from the shell, through the blocking client.
# Knows argparse and output formatting; the protocol is the client's business.
from __future__ import annotations

import argparse
import json

from millpond.broker.cli._clientcmd import add_client_args, guarded
from millpond.client.sync import connect


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("topics", help="create, list, describe, delete and grow topics",
                       description="Create, list, describe, delete and grow topics.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    c = actions.add_parser("create", help="create a topic")
    c.add_argument("name")
    c.add_argument("--partitions", "-p", type=int, default=1, help="partition count (default 1)")
    c.add_argument("--retention-s", type=float, help="keep records this many seconds (-1: forever)")
    c.add_argument("--retention-bytes", type=int, help="keep at most this many bytes per partition (-1: no limit)")
    c.add_argument("--segment-bytes", type=int, help="roll a new segment file after this many bytes")
    c.add_argument("--segment-s", type=float, help="roll a new segment file after this many seconds")

    ls = actions.add_parser("list", help="list topic names")
    ls.add_argument("--json", action="store_true", help="one JSON array instead of one name per line")

    d = actions.add_parser("describe", help="partitions, offsets and sizes of a topic")
    d.add_argument("name")
    d.add_argument("--json", action="store_true", help="JSON object instead of a table")

    rm = actions.add_parser("delete", help="delete a topic and its data")
    rm.add_argument("name")

    grow = actions.add_parser("add-partitions", help="grow a topic to more partitions",
                              description="Grow a topic to --partitions in total (never fewer); consumer groups "
                                          "reading it rebalance and take the new ones. Keys map to partitions by "
                                          "the count, so a key's new records may land in another partition.")
    grow.add_argument("name")
    grow.add_argument("--partitions", "-p", type=int, required=True, metavar="TOTAL",
                      help="the partition count after growing (kafka-topics --alter --partitions)")
    for sp in (c, ls, d, rm, grow):
        add_client_args(sp)
    p.set_defaults(func=guarded("topics", run))


def run(args: argparse.Namespace) -> int:
    with connect(args.broker, client_id=args.client_id) as c:
        if args.action == "create":
            answer = c.create_topic(args.name, args.partitions, retention_s=args.retention_s,
                                    retention_bytes=args.retention_bytes, segment_bytes=args.segment_bytes,
                                    segment_s=args.segment_s)
            print(f"created topic {answer['name']} with {answer['partitions']} partition(s)")
        elif args.action == "list":
            names = c.list_topics()
            if args.json:
                print(json.dumps(names))
            for name in [] if args.json else names:
                print(name)
        elif args.action == "describe":
            d = c.describe_topic(args.name)
            if args.json:
                print(json.dumps({"name": d.name, "config": d.config, "partitions": [
                    {"partition": p.partition, "log_start_offset": p.log_start_offset,
                     "log_end_offset": p.log_end_offset, "high_watermark": p.high_watermark,
                     "size_bytes": p.size_bytes, "segments": p.segments} for p in d.partitions]}, indent=2))
            else:
                print(f"topic {d.name}: {len(d.partitions)} partition(s), {d.records} record(s), {d.size_bytes} bytes")
                print("config: " + ", ".join(f"{k}={v}" for k, v in sorted(d.config.items())))
                print(f"{'partition':>9} {'start':>12} {'end':>12} {'hwm':>12} {'bytes':>14} {'segments':>8}")
                for p in d.partitions:
                    print(f"{p.partition:>9} {p.log_start_offset:>12} {p.log_end_offset:>12} {p.high_watermark:>12}"
                          f" {p.size_bytes:>14} {p.segments:>8}")
        elif args.action == "delete":
            c.delete_topic(args.name)
            print(f"deleted topic {args.name}")
        elif args.action == "add-partitions":
            total = c.add_partitions(args.name, args.partitions)
            print(f"topic {args.name} has {total} partition(s)")
    return 0
