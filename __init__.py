"""millpond: an embedded message broker for Python.

    from millpond import connect, open_broker

``async with open_broker(...) as b`` runs the broker inside a Trio program, ``with run_broker(...) as b`` in a
background thread (asyncio programs, plain scripts); ``millpond serve`` runs it as a daemon;
``connect("HOST:PORT")`` is the async client (``millpond.client.sync`` the blocking one).
"""
# The package root: the public names, loaded lazily so `import millpond` costs nothing and the client never pulls
# in the broker's Trio server. The repository's top-level folders are its subpackages (millpond.broker, .client,
# .bench), mapped in pyproject.toml.

__version__ = "0.1.0"

_LAZY = {
    "connect": "millpond.client",
    "Client": "millpond.client",
    "open_broker": "millpond.broker.server.embedded",
    "run_broker": "millpond.broker.server.embedded",
    "serve_broker": "millpond.broker.server.embedded",
    "Broker": "millpond.broker.server.embedded",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'millpond' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
