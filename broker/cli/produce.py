# `millpond produce TOPIC`: one record per stdin line (kcat -P style), binary-safe: stdin is read as bytes and
# only the trailing b"\n" of each line is removed. The first Ctrl-C or SIGTERM stops reading and flushes what is
# buffered for up to --stop-timeout-s, the second aborts at once; a broker that goes away ends it within
# BROKER_GONE_S with the counts; a line that cannot be sent is reported with its number and what limits it. Knows
# argparse, stdin and signals; batching is the client producer's.
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from typing import Any

from millpond.broker.cli._clientcmd import BROKER_GONE_S, add_client_args, fail, guarded, missing_topic
from millpond.broker.cli._progress import LiveLine, Rate, Stop, signal_exit
from millpond.broker.wire.errors import CostExceedsLimitError, MillpondError, RecordTooLargeError, ThrottledError
from millpond.client.sync import connect

# Records the command lets wait for acknowledgement before it stops reading: it waits on them itself (where a
# signal may cut in) rather than in send() (where one must not); well below the producer's own bound.
BUFFERED_MAX = 100_000
CHECK_EVERY = 1024  # lines between looks at which records have been settled


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("produce", help="produce stdin lines as records",
                       description="Produce one record per stdin line (the trailing newline is stripped). The "
                                   "first Ctrl-C or SIGTERM stops reading and sends what is buffered (for up to "
                                   "--stop-timeout-s); a second one aborts at once.")
    p.add_argument("topic")
    p.add_argument("--key-separator", "-K", metavar="SEP",
                   help="split each line at the first SEP into key and value (lines without SEP get no key)")
    p.add_argument("--partition", "-p", type=int, help="send every record to this partition")
    p.add_argument("--header", "-H", action="append", default=[], metavar="NAME=VALUE",
                   help="a header on every record (repeatable)")
    p.add_argument("--on-error", choices=("stop", "skip"), default="stop",
                   help="a line that cannot be sent: stop there (default; what was read before it is still sent) "
                        "or skip it and go on; either way it is reported with its line number")
    p.add_argument("--linger-s", type=float, default=0.005, help="batch linger in seconds (default 0.005)")
    p.add_argument("--stop-timeout-s", type=float, default=2.0,
                   help="after Ctrl-C or SIGTERM, wait this long for buffered records (default 2)")
    add_client_args(p)
    p.set_defaults(func=guarded("produce", run))


def parse_headers(items: list[str]) -> dict[str, bytes] | None:
    """``["a=1", "b=x=y"]`` -> ``{"a": b"1", "b": b"x=y"}``; raises ``ValueError`` for an item without ``=``."""
    headers: dict[str, bytes] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise ValueError(f"--header takes NAME=VALUE, got {item!r}")
        headers[name] = value.encode()
    return headers or None


def limited_by(exc: BaseException) -> str:
    """What limits a record that failed with ``exc``, and where to change it, for the error line."""
    details = getattr(exc, "details", {}) or {}
    if isinstance(exc, RecordTooLargeError):
        return (f"larger than the broker's batch_bytes_max ({details.get('batch_bytes_max', '?')} bytes; "
                f"batch_bytes_max in the broker's config file)")
    if isinstance(exc, CostExceedsLimitError):
        policy = details.get("policy", "?")
        return (f"costs more than limit policy {policy!r} ever admits ({details.get('max_cost', '?')} "
                f"{details.get('unit', '')}; millpond limits set {policy} ...)")
    if isinstance(exc, ThrottledError):
        return f"throttled by limit policy {details.get('policy', '?')!r} for longer than throttle_wait_max_s"
    return str(exc)


class _Feed:
    """Reads lines, sends them, and tracks the line number of every record not yet settled, so a failure names
    its line."""

    def __init__(self, args: argparse.Namespace, producer: Any, stop: Stop) -> None:
        self.args = args
        self.p = producer
        self.stop = stop
        self.lines = 0  # lines read and handed to the producer
        self.skipped = 0
        self.failed_later = 0  # records handed over that failed (reported with their lines)
        self.pending: deque[tuple[int, Any]] = deque()
        self.error: str | None = None  # the reason reading stopped early, if a line failed
        self.error_line = 0
        self.read = 0  # lines read when reading ended

    def run(self, stream: Any) -> None:
        args = self.args
        sep = args.key_separator.encode() if args.key_separator else None
        headers = parse_headers(args.header)
        send, topic, partition, stop, pending = self.p.send, args.topic, args.partition, self.stop, self.pending
        lineno = 0
        for line in stream:
            lineno += 1
            if line.endswith(b"\n"):
                line = line[:-1]
            key = None
            if sep is not None:
                k, found, v = line.partition(sep)
                if found:
                    key, line = k, v
            stop.deferred = True  # a signal in the middle of send() would leave the producer half-changed
            try:
                handle = send(topic, line, key=key, headers=headers, partition=partition)
            except (RecordTooLargeError, ValueError, TypeError) as exc:
                handle = None
                failure: BaseException | None = exc
            else:
                failure = None
            finally:
                stop.deferred = False
            if stop.stopping:
                raise KeyboardInterrupt
            if failure is not None:
                if self.failed(lineno, failure):
                    break
                continue
            self.lines += 1
            pending.append((lineno, handle))
            if lineno % CHECK_EVERY == 0 and self.settle(BUFFERED_MAX):
                break
        self.read = lineno

    def failed(self, lineno: int, exc: BaseException) -> bool:
        """Report line ``lineno``; True if reading stops there (--on-error stop)."""
        reason = f"line {lineno}: {limited_by(exc)}"
        if self.args.on_error == "skip":
            self.skipped += 1
            print(f"millpond produce: {reason}: skipped", file=sys.stderr, flush=True)
            return False
        self.error, self.error_line = reason, lineno
        return True

    def settle(self, keep: int) -> bool:
        """Look at settled records from the oldest; wait while more than ``keep`` are unsettled. True if a failed
        one stops reading."""
        pending = self.pending
        while pending:
            lineno, handle = pending[0]
            if not handle.done():
                if len(pending) <= keep:
                    return False
                try:
                    handle.result(0.2)
                except MillpondError:
                    pass
                except TimeoutError:
                    continue
            pending.popleft()
            try:
                handle.result(0)
            except MillpondError as exc:
                self.failed_later += 1
                if self.failed(lineno, exc):
                    return True
        return False


def _summary(stats: Any, started: float, signalled: str | None, aborted: bool, lines: int) -> None:
    elapsed = time.monotonic() - started
    throttled = f", throttled {stats.throttle_time_s:.1f} s by policy {stats.throttle_policy}" \
        if stats.throttle_time_s else ""
    print(f"produced {stats.records_sent} records in {elapsed:.3f} s{throttled}", file=sys.stderr)
    if signalled is not None:
        print(f"millpond produce: {'aborted' if aborted else 'stopped'} by {signalled}: {lines} record(s) read, "
              f"{stats.records_sent} acknowledged, {lines - stats.records_sent} not acknowledged", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    with connect(args.broker, client_id=args.client_id, reconnect_timeout_s=BROKER_GONE_S) as c:
        counts = c.metadata([args.topic])
        if args.topic not in counts:
            return missing_topic("produce", args.topic)
        if args.partition is not None and not 0 <= args.partition < counts[args.topic]:
            return fail("produce", f"topic {args.topic!r} has partitions 0-{counts[args.topic] - 1}, not "
                                   f"{args.partition} (add some with: millpond topics add-partitions {args.topic} "
                                   f"--partitions N)")
        parse_headers(args.header)  # a malformed -H is a usage error before anything is read
        with Stop() as stop:
            c.watch(BROKER_GONE_S, stop.broker_gone)
            p = c.producer(linger_s=args.linger_s, max_buffered_records=2 * BUFFERED_MAX)
            feed = _Feed(args, p, stop)
            rate = Rate()

            def abort() -> None:
                """The second signal: say what was acknowledged and end now, whatever the cleanup is doing."""
                live.stop()
                _summary(p.statistics(), started, stop.signal, True, feed.lines)
                sys.stderr.flush()
                os._exit(signal_exit(stop.signal))

            def line() -> str:
                st = p.statistics()
                text = f"produce {args.topic}: {st.records_sent:,} records  {rate(st.records_sent):,.0f}/s"
                if st.throttle_time_s:
                    text += f"  throttled {st.throttle_time_s:.1f} s by policy {st.throttle_policy}"
                return text

            live = LiveLine(sys.stderr, line, enabled=not sys.stdin.isatty())  # not over lines being typed
            stop.abort = abort
            aborted = False
            try:
                try:
                    feed.run(sys.stdin.buffer)
                    p.flush()  # a first signal meanwhile bounds what is left, as one while reading does
                except KeyboardInterrupt:
                    if stop.gone is not None:
                        raise  # nothing buffered can reach it now
                    buffered = p.statistics().records_buffered
                    live.note(f"millpond produce: {stop.signal or 'SIGINT'}: stopped reading after {feed.lines} "
                              f"record(s); sending {buffered} buffered for up to {args.stop_timeout_s:g} s "
                              f"(again to abort)")
                    p.close(timeout_s=args.stop_timeout_s)
                else:
                    p.close()
            except KeyboardInterrupt:
                aborted = True  # close() failed what was left
                if stop.gone is not None:
                    p.close(timeout_s=0)
            finally:
                live.stop()
            if not aborted and not stop.stopping:
                feed.settle(0)  # every record is settled now: report the lines that failed
            stats = p.statistics()
    _summary(stats, started, stop.signal, aborted, feed.lines)
    if stop.gone is not None:
        return fail("produce", f"{stop.gone}; {feed.lines} record(s) read, {stats.records_sent} acknowledged, "
                               f"{feed.lines - stats.records_sent} not acknowledged")
    if stop.signal is not None:
        return signal_exit(stop.signal)
    if feed.error is not None:
        if feed.read == feed.error_line:
            where = f"stopped there: {stats.records_sent} record(s) before it acknowledged"
        else:  # its answer came once later lines were sent too
            where = f"stopped after line {feed.read}: {stats.records_sent} record(s) acknowledged"
        return fail("produce", f"{feed.error}; {where} (--on-error skip goes on past such lines)")
    if stats.records_failed > feed.failed_later:
        return fail("produce", f"{stats.records_failed} of {feed.lines} record(s) failed: {stats.last_error}")
    return 0
