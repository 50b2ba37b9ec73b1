"""millpond: an embedded message broker for Python.

``async with open_broker(...) as b`` runs the broker inside a Trio program; ``millpond serve`` runs it as a daemon.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so `import broker.wire` stays free of trio for the client.
    if name in ("open_broker", "serve_broker", "Broker"):
        from broker.server import embedded

        return getattr(embedded, name)
    raise AttributeError(name)
