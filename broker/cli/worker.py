# `millpond worker MODULE:FUNCTION --queue Q`: a queue triggering a Python handler, as Lambda's SQS trigger, over
# the client's worker runner (client/worker.py). Imports the handler, runs the worker under Trio, shows progress on
# stderr (a live line with rich on a terminal, plain periodic lines otherwise) and stops gracefully on SIGTERM or
# Ctrl-C. Knows argparse, signals and the terminal; the protocol and the worker's rules are the client's business.
from __future__ import annotations

import argparse
import importlib
import inspect
import os
import signal
import sys
from typing import Any, Callable

from millpond.broker.cli._clientcmd import add_client_args, guarded
from millpond.client.worker import WAIT_S_DEFAULT

PROGRESS_TTY_S = 0.5  # how often the live line is redrawn


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker", help="run a Python handler on a queue's messages (as Lambda's SQS trigger)",
        description="Receive messages from --queue and call MODULE:FUNCTION with each batch (a list of messages; "
                    "--per-message: one at a time). A batch handler returns None when all succeeded, or Lambda's "
                    "{'batchItemFailures': [{'itemIdentifier': message_id}]}, or the failed messages; a raise fails "
                    "the whole batch. Successes are deleted; failures come back after their visibility timeout (or "
                    "--backoff-s). SIGTERM or Ctrl-C stops it: running handlers finish (up to --shutdown-grace-s), "
                    "what is still held is made visible again; a second Ctrl-C releases at once.")
    p.add_argument("handler", metavar="MODULE:FUNCTION", help="the handler, e.g. shop.jobs:handle (a plain "
                   "function runs in a worker thread, an async one on the event loop)")
    p.add_argument("--queue", "-q", required=True, help="the queue to take messages from")
    p.add_argument("--batch-size", type=int, default=10, help="messages per handler call, 1-10,000 (FIFO: 1-10; "
                                                              "default 10)")
    p.add_argument("--batch-window-s", type=float, default=0.0, help="gather a batch for up to this long, 0-300 "
                                                                     "(default 0; FIFO: 0)")
    p.add_argument("--concurrency", type=int, default=1, help="batches handled at once (default 1)")
    p.add_argument("--per-message", action="store_true", help="call the handler with one message at a time")
    p.add_argument("--visibility-timeout-s", type=float, help="hide received messages this long (default: the "
                                                              "queue's); extended while a handler runs")
    p.add_argument("--backoff-s", type=float, help="hide a failed message this long, doubled per receive")
    p.add_argument("--wait-s", type=float, default=WAIT_S_DEFAULT,
                   help=f"long-poll wait of each receive, 0-20 (default {WAIT_S_DEFAULT:g}: a stop waits for at most "
                        "this)")
    p.add_argument("--shutdown-grace-s", type=float, default=30.0, help="on stop, let running handlers finish for "
                                                                        "this long (default 30)")
    p.add_argument("--progress-interval-s", type=float, default=10.0, help="without a terminal, print a progress "
                                                                           "line this often (default 10)")
    add_client_args(p)
    p.set_defaults(func=guarded("worker", run))


def load_handler(spec: str) -> Callable[[Any], Any]:
    """The function ``spec`` names (``package.module:function``, dotted attributes allowed after the colon), the
    current directory importable first as ``python -m`` does. Raises ValueError with one line saying why not."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"the handler must be MODULE:FUNCTION (e.g. shop.jobs:handle), not {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raised while loading
        raise ValueError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{spec} is not callable (a {type(obj).__name__})")
    return obj


def run(args: argparse.Namespace) -> int:
    handler = load_handler(args.handler)
    if args.progress_interval_s <= 0:
        raise ValueError("--progress-interval-s must be more than 0")
    import trio

    return trio.run(_serve, args, handler)


async def _serve(args: argparse.Namespace, handler: Callable[[Any], Any]) -> int:
    import anyio
    import trio

    from millpond.client import connect
    from millpond.client.errors import MillpondError

    if not inspect.iscoroutinefunction(handler):
        plain = handler

        async def handler(arg: Any) -> Any:
            # a plain handler may block: off the event loop; past the grace its messages are released at once,
            # the thread left to finish on its own (a thread cannot be cancelled)
            return await anyio.to_thread.run_sync(plain, arg, abandon_on_cancel=True)

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with connect(args.broker, client_id=args.client_id) as client:
            q = client.queue(args.queue)
            await q.attributes()  # an unknown queue is one line, before anything starts
            worker = q.worker(handler, batch=not args.per_message, batch_size=args.batch_size,
                              batch_window_s=args.batch_window_s, concurrency=args.concurrency,
                              visibility_timeout_s=args.visibility_timeout_s, wait_s=args.wait_s,
                              backoff_s=args.backoff_s, shutdown_grace_s=args.shutdown_grace_s)
            progress = _Progress(sys.stderr, args.queue, args.progress_interval_s)
            error: BaseException | None = None
            with trio.CancelScope() as hard:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_on_signals, signals, worker, hard, progress)
                    async with worker:
                        nursery.start_soon(progress.run, worker)
                        try:
                            await worker.wait()
                        except (MillpondError, TypeError) as exc:  # the queue deleted, a malformed answer
                            error = exc
                        progress.note("stopping: running handlers finish, the rest is released")
                    nursery.cancel_scope.cancel()
            progress.close(worker.statistics())
            if error is not None:
                raise error
    return 0


async def _on_signals(signals: Any, worker: Any, hard: Any, progress: _Progress) -> None:
    stopping = False
    async for signum in signals:
        if not stopping:
            stopping = True
            worker.stop()
        else:  # a second one: cancel the handlers and release what they hold at once
            progress.note(f"{signal.Signals(signum).name} again: releasing at once")
            hard.cancel()
            return


class _Progress:
    """Progress on stderr: rich's live line on a terminal (a plain ``\\r`` line without rich), else a line every
    ``interval_s``."""

    def __init__(self, stream: Any, queue: str, interval_s: float) -> None:
        self.stream = stream
        self.queue = queue
        self.tty = stream.isatty()
        self.interval_s = PROGRESS_TTY_S if self.tty else interval_s
        self.live: Any = None
        if self.tty:
            try:
                from rich.console import Console
                from rich.live import Live
            except ImportError:  # rich is the `cli` extra
                pass
            else:
                self.live = Live("", console=Console(file=stream), refresh_per_second=4, transient=False)
                self.live.start()

    def text(self, stats: Any) -> str:
        return f"worker on {self.queue}: {stats.line()}"

    async def run(self, worker: Any) -> None:
        import trio

        while True:
            await trio.sleep(self.interval_s)
            self.show(self.text(worker.statistics()))

    def show(self, line: str) -> None:
        if self.live is not None:
            self.live.update(line)
        elif self.tty:
            self.stream.write("\r\x1b[2K" + line)
            self.stream.flush()
        else:
            print(line, file=self.stream, flush=True)

    def note(self, line: str) -> None:
        if self.live is not None:
            self.live.console.print(line)
        else:
            print(("\n" if self.tty else "") + line, file=self.stream, flush=True)

    def close(self, stats: Any) -> None:
        final = f"{self.text(stats)}  released {stats.released}  (stopped)"
        if self.live is not None:
            self.live.update(final)
            self.live.stop()
        else:
            print(("\r\x1b[2K" if self.tty else "") + final, file=self.stream, flush=True)


__all__ = ["add_parser", "load_handler", "run"]
