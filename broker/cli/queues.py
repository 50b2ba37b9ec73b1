# `millpond queues create|list|describe|delete|purge|redrive`, `millpond send QUEUE` (one message per stdin line) and
# `millpond receive QUEUE` (prints bodies, deletes them unless --no-delete): queues from the shell, through the
# blocking client. Knows argparse, stdin and output formatting; the protocol is the client's business.
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from millpond.broker.cli._clientcmd import add_client_args, fail, guarded
from millpond.broker.wire.errors import InvalidParameterValueError, InvalidRequestError, MissingParameterError
from millpond.client.sync import SyncQueue, connect

SEND_BATCH = 10  # messages per send request (SQS's batch size)
# Bodies per send request at most, well under the broker's 1 MiB for a batch's bodies and attributes together
# (SQS SendMessageBatch's bound): a longer line goes in a request of its own, so a refusal names that line.
SEND_BATCH_BYTES = 256 * 1024
LINE_ERRORS = (InvalidParameterValueError, InvalidRequestError, MissingParameterError)  # about a line, not the queue


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("queues", help="create, list, describe, purge and delete queues",
                       description="Create, list, describe, purge and delete SQS-style queues.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    c = actions.add_parser("create", help="create a queue (a name ending .fifo makes a FIFO queue)")
    c.add_argument("name")
    c.add_argument("--visibility-timeout-s", type=float, help="hide a received message this long (default 30)")
    c.add_argument("--delay-s", type=float, help="hide a sent message this long first (0-900)")
    c.add_argument("--retention-s", type=float, help="keep a message at most this long (default 4 days)")
    c.add_argument("--message-bytes-max", type=int, help="largest message body and attributes (default 1 MiB)")
    c.add_argument("--receive-wait-s", type=float, help="default long-poll wait of a receive (0-20)")
    c.add_argument("--dead-letter-queue", metavar="QUEUE", help="move a message here after --max-receive-count")
    c.add_argument("--max-receive-count", type=int, help="receives before a message moves to the dead-letter queue")
    c.add_argument("--content-based-deduplication", action="store_true",
                   help="FIFO: deduplicate by the SHA-256 of the body")

    ls = actions.add_parser("list", help="list queue names")
    ls.add_argument("--prefix", default="", help="only names starting with this")
    ls.add_argument("--json", action="store_true", help="one JSON array instead of one name per line")

    d = actions.add_parser("describe", help="a queue's attributes and message counts")
    d.add_argument("name")
    d.add_argument("--json", action="store_true", help="JSON object instead of lines")

    rm = actions.add_parser("delete", help="delete a queue and its messages")
    rm.add_argument("name")

    pg = actions.add_parser("purge", help="delete every message of a queue, in flight and delayed too")
    pg.add_argument("name")

    rd = actions.add_parser(
        "redrive", help="move a dead-letter queue's messages back to their source queues",
        description="Start a redrive task (as SQS StartMessageMoveTask): the messages the dead-letter queue holds now "
                    "move back to the queue each came from (or --to QUEUE) at --rate messages per second, in the "
                    "broker, which keeps going after this command returns. --status shows the queue's recent "
                    "tasks; --cancel stops its running one.")
    rd.add_argument("name", metavar="SOURCE_DLQ")
    rd.add_argument("--to", metavar="QUEUE", help="move every message here instead of to its own source queue")
    rd.add_argument("--rate", type=int, metavar="N", help="messages per second, 1-10,000 (default 500; SQS: 1-500)")
    how = rd.add_mutually_exclusive_group()
    how.add_argument("--cancel", action="store_true", help="stop the queue's running redrive task")
    how.add_argument("--status", action="store_true", help="show the queue's recent redrive tasks, newest first")
    for sp in (c, ls, d, rm, pg, rd):
        add_client_args(sp)
    p.set_defaults(func=guarded("queues", run))


def add_send_parser(sub: argparse._SubParsersAction) -> None:
    """`millpond send` (registered by broker/cli/send.py)."""
    s = sub.add_parser("send", help="send stdin lines as queue messages",
                       description="Send one message per stdin line (the trailing newline is stripped).")
    s.add_argument("queue")
    s.add_argument("--group-id", help="FIFO: the message group of every message")
    s.add_argument("--delay-s", type=float, help="hide each message this long first")
    s.add_argument("--on-error", choices=("stop", "skip"), default="stop",
                   help="a line the queue refuses (empty, too large): stop after its batch (default) or skip it "
                        "and go on; either way it is reported with its line number")
    add_client_args(s)
    s.set_defaults(func=guarded("send", run_send))


def add_receive_parser(sub: argparse._SubParsersAction) -> None:
    """`millpond receive` (registered by broker/cli/receive.py)."""
    r = sub.add_parser("receive", help="receive queue messages and print their bodies",
                       description="Receive messages, print one body per line, and delete them (unless "
                                   "--no-delete). Stops after --max messages, or when a long poll brings none.")
    r.add_argument("queue")
    r.add_argument("--max", "-n", type=int, default=10, help="stop after this many messages (default 10)")
    r.add_argument("--wait-s", type=float, default=1.0, help="long-poll this long for the next messages "
                                                              "(default 1; 0-20)")
    r.add_argument("--visibility-timeout-s", type=float, help="hide each received message this long")
    r.add_argument("--no-delete", action="store_true", help="leave the messages to come back after their "
                                                            "visibility timeout")
    r.add_argument("--json", action="store_true", help="one JSON object per message (body as text, handle, "
                                                       "receive count...) instead of the body")
    add_client_args(r)
    r.set_defaults(func=guarded("receive", run_receive))


def run(args: argparse.Namespace) -> int:
    with connect(args.broker, client_id=args.client_id) as c:
        if args.action == "create":
            attrs = {name: getattr(args, name) for name in (
                "visibility_timeout_s", "delay_s", "retention_s", "message_bytes_max", "receive_wait_s",
                "dead_letter_queue", "max_receive_count") if getattr(args, name) is not None}
            if args.content_based_deduplication:
                attrs["content_based_deduplication"] = True
            info = c.create_queue(args.name, **attrs)
            print(f"created {'FIFO ' if info.fifo else ''}queue {info.name}")
        elif args.action == "list":
            names = c.list_queues(args.prefix)
            if args.json:
                print(json.dumps(names))
            for name in [] if args.json else names:
                print(name)
        elif args.action == "describe":
            info = c.queue_attributes(args.name)
            if args.json:
                print(json.dumps(dataclasses.asdict(info), indent=2))
            else:
                print(f"queue {info.name}{' (FIFO)' if info.fifo else ''}: {info.messages_visible} visible, "
                      f"{info.messages_in_flight} in flight, {info.messages_delayed} delayed")
                for f in dataclasses.fields(info):
                    if f.name not in ("name", "fifo") and not f.name.startswith("messages_"):
                        print(f"{f.name}: {getattr(info, f.name)}")
        elif args.action == "delete":
            c.delete_queue(args.name)
            print(f"deleted queue {args.name}")
        elif args.action == "purge":
            c.queue(args.name).purge()
            print(f"purged queue {args.name}")
        elif args.action == "redrive":
            redrive(c.queue(args.name), args)
    return 0


def redrive(q: SyncQueue, args: argparse.Namespace) -> None:
    if (args.cancel or args.status) and (args.to is not None or args.rate is not None):
        raise ValueError("--to and --rate start a task: they go without --cancel and --status")
    if args.status:
        tasks = q.redrive_tasks()
        if not tasks:
            print(f"queue {q.name} has no redrive tasks")
        for t in tasks:
            print(f"{t.task_handle}: {t.line()}")
    elif args.cancel:
        moved = q.cancel_redrive()
        print(f"cancelled the redrive task of {q.name}: {moved} message(s) moved, the rest stay")
    else:
        handle = q.start_redrive(to=args.to, messages_per_second=args.rate)
        mine = [t for t in q.redrive_tasks(1) if t.task_handle == handle]
        what = f"{mine[0].messages_to_move} message(s)" if mine else "its messages"
        print(f"started redrive task {handle}: {what} from {q.name} to {args.to or 'their source queues'} at "
              f"{args.rate or 500}/s (millpond queues redrive {q.name} --status to follow)")


def run_send(args: argparse.Namespace) -> int:
    started = time.monotonic()
    count = size = 0
    stopped: str | None = None  # the refusal that ended reading (--on-error stop)
    extra = {k: v for k, v in (("group_id", args.group_id), ("delay_s", args.delay_s)) if v is not None}
    with connect(args.broker, client_id=args.client_id) as c:
        q = c.queue(args.queue)
        fifo = args.queue.endswith(".fifo")
        attrs = c.queue_attributes(args.queue)  # raises UNKNOWN_QUEUE before reading stdin
        if fifo and args.group_id is None:  # every line would be refused: say it once, before reading
            return fail("send", f"MISSING_PARAMETER: queue {args.queue!r} is FIFO: give --group-id (each message "
                                "belongs to a message group)")
        batch: list[tuple[int, dict]] = []  # (line number, entry)

        def flush() -> str | None:
            """Send the batch and report each refused line; the first refusal, if reading stops there."""
            nonlocal count, size
            try:
                results: list = q.send_batch([entry for _, entry in batch])
            except LINE_ERRORS as exc:
                if len(batch) > 1:
                    raise
                results = [exc]  # a request of one line: its refusal is that line's
            first = None
            for (lineno, entry), result in zip(batch, results):
                if isinstance(result, Exception) and not isinstance(result, LINE_ERRORS):
                    raise result  # the queue's, not the line's (deleted meanwhile, full): no line number
                if not isinstance(result, Exception):
                    count += 1
                    size += len(entry["body"])
                elif args.on_error == "skip":
                    print(f"millpond send: line {lineno}: {result.name}: {result.message}: skipped",
                          file=sys.stderr, flush=True)
                elif first is None:
                    first = (f"line {lineno}: {result.name}: {result.message}; stopped after line "
                             f"{batch[-1][0]}, the last of its request")
            batch.clear()
            return first

        batch_bytes = 0
        for n, line in enumerate(sys.stdin.buffer, start=1):
            if line.endswith(b"\n"):
                line = line[:-1]
            if batch and batch_bytes + len(line) > SEND_BATCH_BYTES:
                stopped, batch_bytes = flush(), 0
                if stopped is not None:
                    break
            entry = {"body": line, **extra}
            if fifo and not attrs.content_based_deduplication:
                entry["dedup_id"] = f"{started:.6f}-{n}"  # each line is a message of its own
            batch.append((n, entry))
            batch_bytes += len(line)
            if len(batch) == SEND_BATCH:
                stopped, batch_bytes = flush(), 0
                if stopped is not None:
                    break
        if batch and stopped is None:
            stopped = flush()
    print(f"sent {count} message(s), {size} bytes, to {args.queue} in {time.monotonic() - started:.3f} s",
          file=sys.stderr)
    if stopped is not None:
        return fail("send", f"{stopped} (--on-error skip goes on past such lines)")
    return 0


def run_receive(args: argparse.Namespace) -> int:
    if args.max < 1:
        raise ValueError(f"--max must be at least 1, not {args.max}")
    out = sys.stdout.buffer
    done = 0
    with connect(args.broker, client_id=args.client_id) as c:
        q = c.queue(args.queue)
        while done < args.max:
            got = q.receive(min(10, args.max - done), wait_s=args.wait_s,
                            visibility_timeout_s=args.visibility_timeout_s)
            if not got:
                break
            for m in got:
                if args.json:
                    row = dataclasses.asdict(m)
                    row["body"] = m.body.decode("utf-8", "backslashreplace")
                    row["attributes"] = {k: v.decode("latin-1") if isinstance(v, bytes) else v
                                         for k, v in m.attributes.items()}
                    out.write(json.dumps(row).encode() + b"\n")
                else:
                    out.write(m.body + b"\n")
            out.flush()  # printed before deleted: a crash in between redelivers, never loses
            if not args.no_delete:
                for m, error in zip(got, q.delete_batch(got)):
                    if error is not None:
                        raise error
            done += len(got)
    return 0
