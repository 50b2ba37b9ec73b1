# Running the broker inside a program: `async with open_broker(...) as b` in a Trio program owns the broker's
# tasks; `with run_broker(...) as b` runs it on Trio in a background thread, for asyncio programs, plain scripts and
# test suites that are not Trio's. With data_dir=None, a temporary data directory removed on exit.
from __future__ import annotations

import shutil
import tempfile
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import trio

from millpond.broker.config import BrokerConfig, load_config
from millpond.broker.server.broker import Broker, BrokerStatistics

__all__ = ["open_broker", "run_broker", "serve_broker", "Broker", "BrokerStatistics", "ThreadedBroker"]

START_TIMEOUT_S = 60  # run_broker: opening a large data directory (recovery) may take a while


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
    ``"HOST:PORT"`` where it listens (``b.host``, ``b.port``). ``overrides`` are ``BrokerConfig`` fields
    (``fsync="never"``, ...); an unknown one raises ``InvalidConfigError``. On exit the broker shuts down gracefully
    (in-flight requests answered). Outside Trio (asyncio, a plain script) it raises ``RuntimeError`` naming
    ``run_broker``, which runs the broker in a thread of its own.
    """
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:  # asyncio, or no event loop at all: Trio's own error would come later and say less
        raise RuntimeError(
            "open_broker runs the broker inside a Trio program (trio.run); from asyncio or a plain script use "
            "millpond.run_broker(), a broker in a background thread: `with millpond.run_broker() as b:` and "
            "connect(b.address)") from None
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


class ThreadedBroker:
    """A broker running on Trio in a background thread; what ``run_broker`` returns. ``address`` is
    ``"HOST:PORT"`` (``host``, ``port``: its parts), ``data_dir`` where it stores its data (a temporary directory,
    removed on ``close()``, when ``data_dir=None``). ``close()`` (leaving ``with``) shuts it down gracefully and
    waits for the thread; closing twice does nothing."""

    def __init__(self, data_dir: str | Path | None, options: dict[str, Any]) -> None:
        self._args = (data_dir, options)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._token: Any = None
        self._stop: trio.Event | None = None
        self._broker: Broker | None = None
        self._thread = threading.Thread(target=self._run, name="millpond-broker", daemon=True)
        self.address = self.host = self.port = self.data_dir = None  # type: Any

    def start(self, timeout_s: float = START_TIMEOUT_S) -> ThreadedBroker:
        """Start the thread and wait until the broker listens; raises what stopped it from starting, or
        ``TimeoutError`` after ``timeout_s`` seconds."""
        self._thread.start()
        if not self._ready.wait(timeout_s):
            self.close()
            raise TimeoutError(f"the broker did not start within {timeout_s:g} s")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to start(), in the caller's thread, without Trio's wrapping
            while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                exc = exc.exceptions[0]
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        data_dir, options = self._args
        async with open_broker(data_dir, **options) as b:
            self._broker = b
            self._stop = trio.Event()
            self._token = trio.lowlevel.current_trio_token()
            self.address, self.host, self.port, self.data_dir = b.address, b.host, b.port, b.data_dir
            self._ready.set()
            await self._stop.wait()

    @property
    def broker(self) -> Broker:
        """The running ``Broker`` (its ``statistics()``, ``config``); call its async methods through trio's
        ``trio.from_thread`` with this broker's token only."""
        if self._broker is None:
            raise RuntimeError("the broker is not running")
        return self._broker

    def close(self) -> None:
        if self._token is not None and self._stop is not None:
            try:
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass  # it stopped already
            self._token = None
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> ThreadedBroker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def run_broker(data_dir: str | Path | None = None, *, host: str = "127.0.0.1", port: int = 0,
               config: BrokerConfig | None = None, **overrides: Any) -> ThreadedBroker:
    """Start a broker in a background thread and return it once it listens; for asyncio programs, plain scripts
    and test suites that are not Trio's: ``with millpond.run_broker() as b: connect(b.address)``.

    Arguments as ``open_broker`` (``data_dir=None``: a temporary directory; ``port=0``: a free port; ``overrides``:
    ``BrokerConfig`` fields, ``fsync="never"``...). Raises what stops the broker from starting (``OSError`` for a
    taken port, ``InvalidConfigError``), or ``TimeoutError`` if it does not listen within 60 s. Leaving the
    ``with`` block (or ``close()``) shuts it down gracefully."""
    return ThreadedBroker(data_dir, {"host": host, "port": port, "config": config, **overrides}).start()


def _as_table(cfg: BrokerConfig) -> dict[str, Any]:
    from dataclasses import asdict

    table = asdict(cfg)
    if table["data_dir"] is None:
        del table["data_dir"]
    else:
        table["data_dir"] = str(table["data_dir"])
    return table
