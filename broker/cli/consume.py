# `millpond consume TOPIC`: print records (kcat -C style), raw values one per line or JSON lines. In JSON, bytes
# (key, value, header values) appear as a string when they are valid UTF-8, else as {"base64": "..."}.
# With --group G it reads as a consumer-group member and commits what it has printed. Records the broker reports
# damaged on disk end it with the error (after printing the intact ones before them), or with --skip-corrupt are
# skipped, each skipped range reported on stderr. A broker that goes away ends it within BROKER_GONE_S, with the
# count printed.
# Knows argparse and stdout; fetching and positions are the client consumer's.
from __future__ import annotations

import argparse
import base64
import json
import logging
import sys
import time
from typing import Any

from millpond.broker.cli._clientcmd import BROKER_GONE_S, add_client_args, fail, guarded, missing_topic
from millpond.broker.cli._progress import LiveLine, Rate, Stop
from millpond.broker.cli._records import compile_format, key_separated, parse_offset
from millpond.client.errors import (ConnectionClosedError, CorruptRangeError, NotPartitionOwnerError,
                                    StaleMemberEpochError, UnknownMemberIdError, UnknownTopicOrPartitionError)
from millpond.client.sync import connect


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("consume", help="print records of a topic",
                       description="Print a topic's records: raw values one per line, or JSON lines. Without "
                                   "--max or --exit-at-end it follows the topic until Ctrl-C.")
    p.add_argument("topic")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest record kept (default: "
                                                                 "only records produced from now on)")
    p.add_argument("--partition", "-p", type=int, help="read only this partition")
    p.add_argument("--group", "-g", metavar="G", help="read as a member of consumer group G: only the partitions "
                   "the group assigns, from its committed offsets (else --from-beginning or the end); each printed "
                   "batch is committed once printed, and on exit")
    p.add_argument("--max", "-c", type=_count, metavar="N", help="exit after N records (1 or more)")
    p.add_argument("--json", action="store_true", help="one JSON object per record: topic, partition, offset, "
                   "timestamp_ms, key, value, headers (bytes: UTF-8 string, else {\"base64\": ...})")
    p.add_argument("--offset", "-o", metavar="SPEC", help="where to start (as kcat -o): beginning, end, an "
                   "offset N, -N (N records before the end), s@TIMESTAMP_MS (the first record at or after it); with "
                   "--group only beginning or end, for partitions the group has not committed")
    p.add_argument("--format", "-f", metavar="FMT", help="print each record as FMT (as kcat -f): %%t topic, %%p "
                   "partition, %%o offset, %%k key, %%s value, %%h headers (name=value,...), %%T timestamp (epoch "
                   "ms), %%K / %%S key / value length, %%%% a percent sign; \\n \\t \\r escapes; no newline "
                   "is added. E.g. -f '%%p %%o %%k=%%s\\n'")
    p.add_argument("--key-separator", "-K", metavar="SEP", help="print the key, SEP, then the value (as kcat -K; "
                   "no key: an empty one)")
    p.add_argument("--exit-at-end", "-e", action="store_true", help="exit once the end of the log as of start "
                   "is reached (with --group: of every partition this member owns, as of its assignment)")
    p.add_argument("--skip-corrupt", action="store_true", help="continue past records the broker reports damaged "
                   "on disk, reporting each skipped range on stderr (default: print the records before them, then "
                   "exit with the error naming the range)")
    add_client_args(p)
    p.set_defaults(func=guarded("consume", run))


def _b(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def _render(records: list, as_json: bool) -> bytes:
    if as_json:
        return "".join(json.dumps({
            "topic": r.topic, "partition": r.partition, "offset": r.offset,
            "timestamp_ms": r.timestamp_ms, "key": _b(r.key), "value": _b(r.value),
            "headers": {k: _b(v) for k, v in r.headers.items()} if r.headers else None,
        }) + "\n" for r in records).encode()
    return b"".join(r.value + b"\n" for r in records)


def _renderer(args: argparse.Namespace) -> Any:
    """records -> bytes, as the flags say (one of --json, --format, --key-separator; else raw values)."""
    chosen = [flag for flag, on in (("--json", args.json), ("--format", args.format is not None),
                                     ("--key-separator", args.key_separator is not None)) if on]
    if len(chosen) > 1:
        raise ValueError(f"{' and '.join(chosen)} each say how to print a record: give one")
    if args.format is not None:
        return compile_format(args.format)
    if args.key_separator is not None:
        return compile_format(key_separated(args.key_separator))
    return lambda records: _render(records, args.json)


class _Tally:
    """Records printed, for the live line on a terminal and the summary line at the end (both on stderr)."""

    def __init__(self, topic: str) -> None:
        self.records = 0
        self.started = time.monotonic()
        rate = Rate()
        # records printed on the same terminal would tear the live line: only when they go elsewhere
        self.live = LiveLine(sys.stderr, lambda: f"consume {topic}: {self.records:,} records  "
                                                 f"{rate(self.records):,.0f}/s", enabled=not sys.stdout.isatty())

    def close(self, summary: bool = True) -> None:
        self.live.stop()
        if summary:
            print(f"consumed {self.records} records in {time.monotonic() - self.started:.3f} s", file=sys.stderr,
                  flush=True)


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {n}")
    return n


def run(args: argparse.Namespace) -> int:
    # skipped ranges are reported here, on stderr, once each (not again by the client's log line)
    logging.getLogger("millpond.client").addHandler(logging.NullHandler())
    render = _renderer(args)
    offset = parse_offset(args.offset) if args.offset is not None else None
    if offset is not None and args.from_beginning:
        raise ValueError("--from-beginning is -o beginning: give one")
    if args.group is not None and offset is not None and offset[0] not in ("beginning", "end"):
        raise ValueError("with --group, -o takes beginning or end (where partitions the group has not committed "
                         "start); the group's committed offsets decide the rest")
    tally = _Tally(args.topic)
    summary = False  # an error before anything was read is said alone, without "consumed 0 records"
    with Stop() as stop:
        try:
            code = _run(args, render, offset, tally, stop)
            summary = True
            return code
        except (KeyboardInterrupt, ConnectionClosedError):
            summary = True
            if stop.gone is None:
                raise
        except UnknownTopicOrPartitionError as exc:
            if exc.details.get("topic", args.topic) != args.topic:
                raise
            summary = tally.records > 0
            if tally.records:
                return fail("consume", f"topic {args.topic!r} was deleted while it was read; {tally.records} "
                                       "record(s) printed before")
            return missing_topic("consume", args.topic)
        except CorruptRangeError as exc:
            d = exc.details
            raise CorruptRangeError(
                f"offsets {d['first_offset']}-{d['last_offset']} of {d['topic']}/{d['partition']} are damaged on "
                f"disk; the next readable offset is {d['next_offset']} (--skip-corrupt continues past them)",
                **d) from None
        finally:
            tally.close(summary or tally.records > 0)
    return fail("consume", f"{stop.gone}; {tally.records} record(s) printed before")


def _start_at(c: Any, cons: Any, parts: list[tuple[str, int]], offset: tuple[str, int]) -> None:
    """Move each partition to where ``-o`` says (an offset past either end is clamped to it)."""
    kind, n = offset
    if kind == "timestamp":
        cons.seek_to_timestamp(n, *parts)
        return
    clamped = []
    for tp in parts:
        start, end = c.list_offsets(tp[0], tp[1], "earliest")[0], c.list_offsets(tp[0], tp[1], "latest")[0]
        at = {"beginning": start, "end": end, "offset": n, "from_end": end - n}[kind]
        if kind == "offset" and not start <= at <= end:
            clamped.append(f"{tp[0]}/{tp[1]} {'ends at' if at > end else 'starts at'} {end if at > end else start}")
        cons.seek(tp[0], tp[1], min(max(at, start), end))
    if clamped:  # as kcat says so: the offset asked is not there, where reading starts instead
        more = f" and {len(clamped) - 5} more" if len(clamped) > 5 else ""
        print(f"millpond consume: offset {n} is out of range: {', '.join(clamped[:5])}{more}; reading from there",
              file=sys.stderr)


def _run(args: argparse.Namespace, render: Any, offset: tuple[str, int] | None, tally: _Tally, stop: Stop) -> int:
    out = sys.stdout.buffer
    remaining = args.max
    if args.group is not None and args.partition is not None:
        raise ValueError("--group reads the partitions the group assigns: it does not combine with --partition")
    if remaining is not None and remaining <= 0:
        return 0
    if args.group is not None:
        return _run_group(args, out, remaining, render, offset, tally, stop)
    with connect(args.broker, client_id=args.client_id, reconnect_timeout_s=BROKER_GONE_S) as c:
        c.watch(BROKER_GONE_S, stop.broker_gone)
        desc = c.describe_topic(args.topic)  # raises UnknownTopicOrPartitionError with a clear message
        parts = [(args.topic, args.partition)] if args.partition is not None else \
            [(args.topic, p.partition) for p in desc.partitions]
        reset = "earliest" if args.from_beginning else "latest"
        with c.consumer(auto_offset_reset=reset, skip_corrupt=args.skip_corrupt) as cons:
            cons.assign(parts)
            if offset is not None:
                _start_at(c, cons, parts, offset)
            ends: dict[tuple[str, int], int] = {}
            if args.exit_at_end:
                for tp in parts:  # the end as of start: stop there even if producers keep going
                    end = c.list_offsets(tp[0], tp[1], "latest")[0]
                    if cons.position(*tp) < end:
                        ends[tp] = end
                if not ends:
                    return 0
            reported = 0
            # with --exit-at-end, wake now and then: a skipped range may be what reaches the end, with no record after
            wait_s = 0.5 if args.exit_at_end and args.skip_corrupt else None
            while True:
                records = cons.getmany(max_records=remaining, timeout_s=wait_s)
                out.write(render(records))
                out.flush()
                tally.records += len(records)
                if remaining is not None:
                    remaining -= len(records)
                    if remaining <= 0:
                        return 0
                for r in records:
                    tp = (r.topic, r.partition)
                    if tp in ends and r.offset + 1 >= ends[tp]:
                        del ends[tp]
                reported = _report_skipped(cons, reported, ends)
                if args.exit_at_end and not ends:
                    return 0


def _report_skipped(cons: Any, reported: int, ends: dict[tuple[str, int], int]) -> int:
    """Print the damaged ranges skipped since the last call on stderr; a range reaching a partition's end (as of
    start) finishes that partition. Returns how many are reported."""
    skipped = cons.skipped
    for topic, partition, first, last in skipped[reported:]:
        print(f"millpond consume: skipped damaged offsets {first}-{last} of {topic}/{partition}", file=sys.stderr,
              flush=True)
        tp = (topic, partition)
        if tp in ends and last + 1 >= ends[tp]:
            del ends[tp]
    return len(skipped)


def _run_group(args: argparse.Namespace, out: Any, remaining: int | None, render: Any,
               offset: tuple[str, int] | None, tally: _Tally, stop: Stop) -> int:
    """Consume as a group member; commit what is printed: after each batch, and in on_revoked for partitions
    leaving this member (so their next owner starts right after what was printed here)."""
    printed: dict[tuple[str, int], int] = {}  # next offset to read, per partition, of what reached stdout

    def on_revoked(partitions: frozenset[tuple[str, int]]) -> None:
        mine = {tp: printed[tp] for tp in partitions if tp in printed}
        if mine:
            try:
                cons.commit(mine)
            except (NotPartitionOwnerError, StaleMemberEpochError, UnknownMemberIdError):
                pass  # lost rather than revoked: the group has moved on
        for tp in partitions:
            printed.pop(tp, None)

    with connect(args.broker, client_id=args.client_id, reconnect_timeout_s=BROKER_GONE_S) as c:
        c.watch(BROKER_GONE_S, stop.broker_gone)
        c.describe_topic(args.topic)  # raises UnknownTopicOrPartitionError with a clear message
        reset = "earliest" if args.from_beginning or (offset is not None and offset[0] == "beginning") else "latest"

        def end_of(tp: tuple[str, int]) -> int:
            return c.list_offsets(tp[0], tp[1], "latest")[0]

        with c.consumer(args.topic, group=args.group, auto_offset_reset=reset, enable_auto_commit=False,
                        on_revoked=on_revoked, skip_corrupt=args.skip_corrupt) as cons:
            try:
                _consume_group(cons, out, remaining, printed, render, tally, end_of if args.exit_at_end else None)
            finally:
                # Ctrl-C or SIGTERM may land while a commit is on its way: commit what was printed once more,
                # so the next member starts right after it; then leaving the block leaves the group.
                owned = cons.assignment()
                mine = {tp: off for tp, off in printed.items() if tp in owned}
                if mine and stop.gone is None:  # a broker gone takes no commit
                    try:
                        cons.commit(mine)
                    except (NotPartitionOwnerError, StaleMemberEpochError, UnknownMemberIdError):
                        pass
    return 0


def _consume_group(cons: Any, out: Any, remaining: int | None, printed: dict[tuple[str, int], int], render: Any,
                   tally: _Tally, end_of: Any) -> int | None:
    """Print batches and commit each once printed, until ``remaining`` records (forever if None), or with
    ``end_of`` (-e) until every partition this member owns is read up to its end as of its assignment."""
    reported = 0
    ends: dict[tuple[str, int], int] = {}
    while remaining is None or remaining > 0:
        # with -e, wake now and then: the assignment may change, or reach its end, with no record arriving
        records = cons.getmany(max_records=remaining, timeout_s=None if end_of is None else 0.2)
        out.write(render(records))
        out.flush()
        tally.records += len(records)
        reported = _report_skipped(cons, reported, {})
        batch: dict[tuple[str, int], int] = {}
        for r in records:
            batch[(r.topic, r.partition)] = r.offset + 1
        printed.update(batch)
        owned = cons.assignment()
        batch = {tp: off for tp, off in batch.items() if tp in owned}
        try:
            cons.commit(batch)
        except (NotPartitionOwnerError, StaleMemberEpochError, UnknownMemberIdError):
            pass  # revoked meanwhile: on_revoked committed what was printed
        if remaining is not None:
            remaining -= len(records)
        if end_of is not None and _owned_at_end(cons, ends, end_of):
            break
    return remaining


def _owned_at_end(cons: Any, ends: dict[tuple[str, int], int], end_of: Any) -> bool:
    """Whether this member owns partitions and has read each up to its end as of when it was assigned here
    (``ends``, kept across calls: taken on a partition's arrival, dropped when it leaves)."""
    owned = cons.assignment()
    for tp in [tp for tp in ends if tp not in owned]:
        del ends[tp]
    for tp in owned:
        if tp not in ends:
            ends[tp] = end_of(tp)
    return bool(owned) and all(cons.position(*tp) >= end for tp, end in ends.items())
