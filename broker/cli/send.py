# `millpond send QUEUE`: one queue message per stdin line; the command lives with the queue commands (queues.py).
from millpond.broker.cli.queues import add_send_parser as add_parser

__all__ = ["add_parser"]
