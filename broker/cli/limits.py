# `millpond limits set|list|delete`: limit policies (issue 4) from the shell, through the blocking client.
# Knows argparse and output formatting; what a policy means and whether it is valid is the broker's business.
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from millpond.broker.cli._clientcmd import add_client_args, guarded
from millpond.client.sync import connect

UNITS = ("requests", "records", "bytes")
MODES = ("reject", "shape")
OPERATIONS = ("write", "receive")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("limits", help="set, list and delete rate-limit policies",
                       description="Set, list and delete limit policies (docs/protocol.md, section Limits).")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    s = actions.add_parser(
        "set", help="add or replace a policy",
        description="Add or replace a limit policy. Example: millpond limits set slow --scope client:app-* "
                    "--unit records --algorithm leaky_bucket --rate 1000 --burst 100 --mode reject")
    s.add_argument("name")
    s.add_argument("--scope", required=True, metavar="SCOPE[:PATTERN]",
                   help="what the policy limits (required): client, topic, queue or global, with an fnmatch "
                        "pattern on the name, e.g. 'client:app-*'; 'client:*' limits every client")
    s.add_argument("--unit", choices=UNITS, default="records", help="what a request costs (default records)")
    s.add_argument("--algorithm", default="leaky_bucket",
                   help="leaky_bucket (default), token_bucket, fixed_window, sliding_log, sliding_window, or a "
                        "plug-in name the broker's operator registered (millpond serve --limit-algorithm)")
    s.add_argument("--rate", type=_number, help="units per second (the buckets)")
    s.add_argument("--burst", type=int, help="units admitted at once (the buckets)")
    s.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="another algorithm parameter, e.g. window_s=1 limit=500 queue=1000 debt=true (repeatable)")
    s.add_argument("--mode", choices=MODES, default="reject",
                   help="reject: answer THROTTLED with a retry-after; shape: answer later (default reject)")
    s.add_argument("--max-keys", type=int, help="names tracked before LRU eviction (default: the broker's)")
    s.add_argument("--operation", choices=OPERATIONS, default="write",
                   help="what it counts: write (produces and queue sends, the default) or receive (queue receives "
                        "and push deliveries; scope client, queue or global; unit requests or records; reject)")

    ls = actions.add_parser("list", help="policies with their throttle counts")
    ls.add_argument("--json", action="store_true", help="a JSON array (with every statistic) instead of a table")

    rm = actions.add_parser("delete", help="delete a policy")
    rm.add_argument("name")
    for sp in (s, ls, rm):
        add_client_args(sp)
    p.set_defaults(func=guarded("limits", run))


def run(args: argparse.Namespace) -> int:
    with connect(args.broker, client_id=args.client_id) as c:
        if args.action == "set":
            params = parse_params(args.param)
            for key in ("rate", "burst"):
                value = getattr(args, key)
                if value is not None:
                    params[key] = value
            applied = c.set_limit(args.name, scope=args.scope, unit=args.unit, algorithm=args.algorithm,
                                  mode=args.mode, max_keys=args.max_keys, operation=args.operation, **params)
            print(f"set limit policy {applied.name}: {applied.scope}:{applied.pattern} {applied.unit} "
                  f"{applied.algorithm} {_params(applied.params)} {applied.mode}"
                  + (f" ({applied.operation})" if applied.operation != "write" else ""))
        elif args.action == "list":
            policies = c.list_limits()
            if args.json:
                print(json.dumps([asdict(p) for p in policies], indent=2))
            else:
                print_table(policies)
        elif args.action == "delete":
            c.delete_limit(args.name)
            print(f"deleted limit policy {args.name}")
    return 0


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["window_s=1.5", "limit=500", "debt=true"]`` -> ``{"window_s": 1.5, "limit": 500, "debt": True}``.
    Raises ``ValueError`` for an item without ``=``."""
    params: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--param takes KEY=VALUE, got {item!r}")
        params[key.strip()] = _value(value.strip())
    return params


def print_table(policies: list[Any]) -> None:
    header = ("name", "operation", "scope", "unit", "algorithm", "params", "mode", "admitted", "throttled",
              "delayed", "never_fits", "keys")
    rows = [header]
    for p in policies:
        st = p.stats
        rows.append((p.name, p.operation, f"{p.scope}:{p.pattern}", p.unit, p.algorithm, _params(p.params), p.mode,
                     *(str(getattr(st, f, "")) if st else "-" for f in
                       ("admitted", "throttled", "delayed", "never_fits", "keys_tracked"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(v.ljust(w) if i < 7 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))).rstrip())
    for p in policies:
        if p.stats and p.stats.throttled_by_key:
            top = sorted(p.stats.throttled_by_key.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
            print(f"{p.name}: throttled by key: " + ", ".join(f"{k}={n}" for k, n in top))
        if p.stats and p.stats.last_error:
            print(f"{p.name}: last error: {p.stats.last_error}")


def _params(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(params.items())) or "-"


def _number(text: str) -> int | float:
    value = _value(text)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    return value


def _value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
