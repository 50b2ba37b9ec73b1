# `millpond receive QUEUE`: print received messages, delete them; the command lives with the queue commands (queues.py).
from millpond.broker.cli.queues import add_receive_parser as add_parser

__all__ = ["add_parser"]
