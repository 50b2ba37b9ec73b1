# `millpond publish TOPIC VALUE`: one record; the command lives with the subscription commands (subscriptions.py).
from millpond.broker.cli.subscriptions import add_publish_parser as add_parser

__all__ = ["add_parser"]
