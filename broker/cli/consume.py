# `millpond consume TOPIC`: print records (kcat -C style), raw values one per line or JSON lines. In JSON, bytes
# (key, value, header values) appear as a string when they are valid UTF-8, else as {"base64": "..."}.
# Knows argparse and stdout; fetching and positions are the client consumer's.
from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any

from broker.cli._clientcmd import add_client_args, guarded
from client.sync import connect


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("consume", help="print records of a topic",
                       description="Print a topic's records: raw values one per line, or JSON lines. Without "
                                   "--max or --exit-at-end it follows the topic until Ctrl-C.")
    p.add_argument("topic")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest record kept (default: "
                                                                 "only records produced from now on)")
    p.add_argument("--partition", "-p", type=int, help="read only this partition")
    p.add_argument("--max", "-c", type=int, metavar="N", help="exit after N records")
    p.add_argument("--json", action="store_true", help="one JSON object per record: topic, partition, offset, "
                   "timestamp_ms, key, value, headers (bytes: UTF-8 string, else {\"base64\": ...})")
    p.add_argument("--exit-at-end", "-e", action="store_true", help="exit once the end of the log as of start "
                                                                    "is reached")
    add_client_args(p)
    p.set_defaults(func=guarded("consume", run))


def _b(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def run(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    remaining = args.max
    if remaining is not None and remaining <= 0:
        return 0
    with connect(args.broker, client_id=args.client_id) as c:
        desc = c.describe_topic(args.topic)  # raises UnknownTopicOrPartitionError with a clear message
        parts = [(args.topic, args.partition)] if args.partition is not None else \
            [(args.topic, p.partition) for p in desc.partitions]
        reset = "earliest" if args.from_beginning else "latest"
        with c.consumer(auto_offset_reset=reset) as cons:
            cons.assign(parts)
            ends: dict[tuple[str, int], int] = {}
            if args.exit_at_end:
                for tp in parts:  # the end as of start: stop there even if producers keep going
                    end = c.list_offsets(tp[0], tp[1], "latest")[0]
                    if cons.position(*tp) < end:
                        ends[tp] = end
                if not ends:
                    return 0
            while True:
                records = cons.getmany(max_records=remaining, timeout_s=None)
                if args.json:
                    chunk = "".join(json.dumps({
                        "topic": r.topic, "partition": r.partition, "offset": r.offset,
                        "timestamp_ms": r.timestamp_ms, "key": _b(r.key), "value": _b(r.value),
                        "headers": {k: _b(v) for k, v in r.headers.items()} if r.headers else None,
                    }) + "\n" for r in records).encode()
                else:
                    chunk = b"".join(r.value + b"\n" for r in records)
                out.write(chunk)
                out.flush()
                if remaining is not None:
                    remaining -= len(records)
                    if remaining <= 0:
                        return 0
                if ends:
                    for r in records:
                        tp = (r.topic, r.partition)
                        if tp in ends and r.offset + 1 >= ends[tp]:
                            del ends[tp]
                    if not ends:
                        return 0
