# The `millpond` command: one argparse parser, one subcommand per module. Each module has
# `add_parser(subparsers)` that registers its subcommand and sets `func=run` (run(args) -> exit code).
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

# Subcommand modules, in the order `millpond --help` lists them.
_COMMANDS = ("serve", "topics", "produce", "consume", "groups", "queues", "send", "receive", "worker",
             "subscriptions", "publish", "limits", "bench")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; ``only`` imports just that subcommand's module (so `millpond serve` never loads the client)."""
    parser = argparse.ArgumentParser(
        prog="millpond",
        description="An embedded message broker: a partitioned log, consumer groups and rate limits.",
    )
    from millpond import __version__

    parser.add_argument("--version", action="version", version=f"millpond {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS if only is None else (only,):
        try:
            module = importlib.import_module(f"millpond.broker.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"millpond.broker.cli.{name}":
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    first = next((w for w in words if not w.startswith("-")), None)
    parser = build_parser(first if first in _COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command != "serve":
        # SIGTERM (kill, timeout, a supervisor) stops a client command like Ctrl-C: a consumer commits and leaves
        # its group, a producer stops; instead of dying with a group member left behind until its session lapses.
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `millpond consume ... | head` closes stdout early; that is not an error (and nothing more to flush).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
