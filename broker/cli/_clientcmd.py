# Shared plumbing of the client subcommands (topics, produce, consume): the --broker/--client-id flags and turning
# expected failures into one clear line on stderr and an exit code. Knows the client's error classes, not the wire.
from __future__ import annotations

import argparse
import sys
from typing import Callable

from millpond.broker.wire.errors import ConnectionClosedError, MillpondError

# A broker whose connection ended and that does not take a new one within this is gone: produce and consume say
# so and exit, rather than retrying for the client's reconnect and delivery timeouts (minutes). A restart within it
# is waited out.
BROKER_GONE_S = 5.0

# The client's default, spelt here so building the parser (and `millpond serve`) never imports the client.
DEFAULT_ADDRESS = "127.0.0.1:7420"


def add_client_args(p: argparse.ArgumentParser) -> None:
    # None: the one given before the command, else $MILLPOND_BROKER, else the default (resolved by main())
    p.add_argument("--broker", "-b", metavar="HOST:PORT",
                   help=f"broker address (default $MILLPOND_BROKER, else {DEFAULT_ADDRESS}); may come before "
                        f"the command too")
    p.set_defaults(client_command=True)
    p.add_argument("--client-id", default="millpond-cli", help="client id sent in the handshake")


def guarded(command: str, body: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap ``body`` so broker errors, bad input and refused connections print ``millpond CMD: reason`` and exit 1
    (2 for usage errors) instead of a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return body(args)
        except ConnectionClosedError as exc:
            if exc.message.startswith("cannot connect to ") and exc.message.endswith(": connection refused"):
                return fail(command, f"{exc.message} (is a broker running there? millpond serve starts one)")
            return fail(command, exc.message)
        except MillpondError as exc:
            return fail(command, f"{exc.name}: {exc.message}")
        except (ValueError, TypeError) as exc:
            return fail(command, str(exc), code=2)
        except BrokenPipeError:
            raise  # `| head` closed stdout: main() exits quietly
        except OSError as exc:  # stdin/stdout problems other than a closed pipe
            return fail(command, exc.strerror or str(exc))

    return run


def missing_topic(command: str, topic: str) -> int:
    """``fail`` for a topic that does not exist, with how to create it (as every command that reads or writes one)."""
    return fail(command, f"topic {topic!r} does not exist (create it with: millpond topics create {topic})")


def fail(command: str, message: str, code: int = 1) -> int:
    print(f"millpond {command}: {message}", file=sys.stderr)
    return code
