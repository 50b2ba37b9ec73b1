# Running the broker inside a Trio program: `async with open_broker(...) as b` owns the broker's tasks and, with
# data_dir=None, a temporary data directory removed on exit.
from __future__ import annotations

import shutil
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import trio

from millpond.broker.config import BrokerConfig, load_config
from millpond.broker.server.broker import Broker, BrokerStatistics

__all__ = ["open_broker", "serve_broker", "Broker", "BrokerStatistics"]


async def serve_broker(config: BrokerConfig, *, task_status: trio.TaskStatus[Broker] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled (trio's ``serve_*`` convention; ``nursery.start(serve_broker, cfg)`` returns the
    ``Broker`` once it listens). ``config.data_dir`` must be set."""
    if config.data_dir is None:
        raise ValueError("serve_broker needs config.data_dir; open_broker(data_dir=None) makes a temporary one")
    broker = Broker(config, config.data_dir)
    await broker.serve(task_status=task_status)


@asynccontextmanager
async def open_broker(
    data_dir: str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    config: BrokerConfig | None = None,
    **overrides: Any,
) -> AsyncIterator[Broker]:
    """Run a broker in this Trio program for the duration of the block.

    ``data_dir=None``: a temporary directory, removed on exit. ``port=0`` picks a free port; ``b.address`` is
    ``(host, port)`` where it listens. ``overrides`` are ``BrokerConfig`` fields (``fsync="never"``, ...); an unknown
    one raises ``InvalidConfigError``. On exit the broker shuts down gracefully (in-flight requests answered).
    """
    base = config if config is not None else load_config()
    tmp = None
    if data_dir is None and base.data_dir is None:
        tmp = tempfile.mkdtemp(prefix="millpond-")
        data_dir = tmp
    cfg = load_config(None, **{**_as_table(base), "host": host, "port": port, **overrides,
                               **({"data_dir": str(data_dir)} if data_dir is not None else {})})
    try:
        async with trio.open_nursery() as nursery:
            broker: Broker = await nursery.start(serve_broker, cfg)
            try:
                yield broker
            finally:
                with trio.CancelScope(shield=True):
                    await broker.shutdown()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _as_table(cfg: BrokerConfig) -> dict[str, Any]:
    from dataclasses import asdict

    table = asdict(cfg)
    if table["data_dir"] is None:
        del table["data_dir"]
    else:
        table["data_dir"] = str(table["data_dir"])
    return table
