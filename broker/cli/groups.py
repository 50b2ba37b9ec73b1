# `millpond groups list|describe|reset-offsets|delete`: consumer-group admin from the shell, through the blocking
# client, with --json for scripts. Knows argparse and output formatting; the protocol is the client's business.
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from millpond.broker.cli._clientcmd import add_client_args, guarded
from millpond.client.sync import connect


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("groups", help="list, describe, reset and delete consumer groups",
                       description="Consumer-group admin: list groups; describe one (members, assignment, "
                                   "committed offsets and lag); reset its offsets or delete it (only while it has "
                                   "no members, as kafka-consumer-groups).")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser("list", help="consumer groups with their state and member count")
    d = actions.add_parser("describe", help="members, assignment, committed offset, end offset and lag")
    d.add_argument("group")
    r = actions.add_parser("reset-offsets", help="set a group's committed offsets of a topic (group must be empty)")
    r.add_argument("group")
    r.add_argument("--topic", "-t", required=True)
    r.add_argument("--partition", "-p", type=int, action="append", dest="partitions", metavar="N",
                   help="only this partition (repeatable; default: all)")
    to = r.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true", help="the log start offset")
    to.add_argument("--to-latest", action="store_true", help="the end: only records produced later")
    to.add_argument("--to-timestamp", type=int, metavar="MS", help="first record at or after MS (epoch ms)")
    to.add_argument("--to-offset", type=int, metavar="N", help="offset N (clamped into the log's range)")
    rm = actions.add_parser("delete", help="delete a group and its committed offsets (group must be empty)")
    rm.add_argument("group")
    for sp in (ls, d, r, rm):
        sp.add_argument("--json", action="store_true", help="machine-readable JSON instead of text")
        add_client_args(sp)
    p.set_defaults(func=guarded("groups", run))


def run(args: argparse.Namespace) -> int:
    with connect(args.broker, client_id=args.client_id) as c:
        if args.action == "list":
            groups = c.list_groups()
            if args.json:
                print(json.dumps([asdict(g) for g in groups]))
            for g in [] if args.json else groups:
                print(f"{g.group}\t{g.state}\t{g.members} member(s)")
        elif args.action == "describe":
            _describe(c.describe_group(args.group), args.json)
        elif args.action == "reset-offsets":
            if args.to_timestamp is not None:
                offsets = c.reset_offsets(args.group, args.topic, timestamp_ms=args.to_timestamp,
                                          partitions=args.partitions)
            else:
                to: Any = "earliest" if args.to_earliest else "latest" if args.to_latest else args.to_offset
                offsets = c.reset_offsets(args.group, args.topic, to, partitions=args.partitions)
            rows = [{"topic": t, "partition": p, "offset": off} for (t, p), off in sorted(offsets.items())]
            if args.json:
                print(json.dumps(rows))
            else:
                for row in rows:
                    print(f"{row['topic']}/{row['partition']} -> {row['offset']}")
        elif args.action == "delete":
            c.delete_group(args.group)
            print(json.dumps({"deleted": args.group}) if args.json else f"deleted consumer group {args.group}")
    return 0


def _describe(d: Any, as_json: bool) -> None:
    if as_json:
        doc = asdict(d)
        doc["lag"] = d.lag
        print(json.dumps(doc, indent=2))
        return
    # KIP-848's terms, as the JSON's group_epoch and member_epoch
    print(f"consumer group {d.group}: {d.state}, group epoch {d.group_epoch}, assignor {d.assignor}, "
          f"{len(d.members)} member(s), lag {d.lag}")
    for m in d.members:
        parts = ", ".join(f"{t}/{p}" for t, p in m.assignment) or "-"
        static = f" instance {m.group_instance_id}" if m.group_instance_id else ""
        print(f"  member {m.member_id}{static} client {m.client_id} host {m.host} member epoch {m.member_epoch} "
              f"{m.state}: {parts}")
    owners = {tp: m.member_id for m in d.members for tp in m.assignment}
    print(f"{'topic':<20} {'partition':>9} {'committed':>12} {'end':>12} {'lag':>10}  owner")
    for o in d.offsets:
        committed = "-" if o.committed_offset < 0 else o.committed_offset
        print(f"{o.topic:<20} {o.partition:>9} {committed!s:>12} {o.end_offset if o.end_offset is not None else '-'!s:>12}"
              f" {o.lag if o.lag is not None else '-'!s:>10}  {owners.get((o.topic, o.partition), '-')}")
