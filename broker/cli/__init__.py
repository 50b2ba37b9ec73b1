# The `millpond` command: one argparse parser, one subcommand per module. Each module has
# `add_parser(subparsers)` that registers its subcommand and sets `func=run` (run(args) -> exit code).
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from millpond.broker.cli._progress import caught, signal_exit

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
    parser.add_argument("--broker", "-b", dest="global_broker", metavar="HOST:PORT",
                        help="broker address for the command that follows (as its own --broker; default "
                             "$MILLPOND_BROKER, else 127.0.0.1:7420)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS if only is None else (only,):
        try:
            module = importlib.import_module(f"millpond.broker.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"millpond.broker.cli.{name}":
                continue
            raise
        module.add_parser(sub)
    for command in sub.choices.values():
        _broker_between(command)
    return parser


def _broker_between(parser: argparse.ArgumentParser) -> None:
    """-b/--broker between a command and its action too (``millpond topics -b HOST:PORT list``)."""
    inner = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    if inner is None:
        return
    # SUPPRESS: unless given here, it leaves alone a -b given before the command
    parser.add_argument("--broker", "-b", dest="global_broker", metavar="HOST:PORT", default=argparse.SUPPRESS,
                        help="broker address for the action that follows (as its own --broker)")
    for action in inner.choices.values():
        _broker_between(action)


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    first = _command_word(words)
    parser = build_parser(first if first in _COMMANDS else None)
    args, unknown = parser.parse_known_args(words)
    if unknown:  # under the usage of the (sub)command it was given to, not millpond's
        before = unknown[0] in words and words.index(unknown[0]) < words.index(args.command)
        (parser if before else _innermost(parser, args)).error(f"unrecognized arguments: {' '.join(unknown)}")
    resolve_broker(args)
    if args.command != "serve":
        # SIGTERM (kill, timeout, a supervisor) stops a client command like Ctrl-C: a consumer commits and leaves
        # its group, a producer stops; instead of dying with a group member left behind until its session lapses.
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return signal_exit()
    except BrokenPipeError:
        # `millpond consume ... | head` closes stdout early; that is not an error (and nothing more to flush).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _command_word(words: list[str]) -> str | None:
    """The subcommand's name: the first word that is no option and no value of -b/--broker."""
    skip = False
    for w in words:
        if skip:
            skip = False
        elif w in ("-b", "--broker"):
            skip = True
        elif not w.startswith("-"):
            return w
    return None


def _innermost(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the deepest subcommand ``args`` names (``millpond topics create``: create's)."""
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        name = None if sub is None else getattr(args, sub.dest, None)
        if name not in (sub.choices if sub is not None else {}):
            return parser
        parser = sub.choices[name]


def resolve_broker(args: argparse.Namespace) -> None:
    """A command's own --broker, else one given before the command, else $MILLPOND_BROKER (client commands)."""
    if getattr(args, "broker", "") is None:
        args.broker = args.global_broker
        if args.broker is None and getattr(args, "client_command", False):
            from millpond.broker.cli._clientcmd import DEFAULT_ADDRESS

            args.broker = os.environ.get("MILLPOND_BROKER") or DEFAULT_ADDRESS


def _interrupt(signum: int, frame: object) -> None:
    caught(signum)  # its exit status is 128 + its number
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
