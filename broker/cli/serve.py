# `millpond serve`: the broker as a daemon. SIGINT/SIGTERM stop it gracefully (stop accepting, answer what is in
# flight, fsync, close files) and it exits 0.
from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys

import trio

from millpond.broker.config import BrokerConfig, load_config
from millpond.broker.server.collector import run_collector
from millpond.broker.wire.errors import InvalidConfigError, MillpondError

# The daemon's own process: the garbage collector's oldest generation is collected a tenth as often as by default.
# Those passes scan every object the queues hold, and were a third of fan-out's CPU (bench/fanout_core.py, 10
# subscriptions: 5.2 -> 4.3 us a message, 32% -> 8% in collections); the young generation keeps its default, whose
# passes stay short (p99 0.4 ms there; a young generation of 5,000 or more took the p99 to 6-24 ms). What the broker
# allocates is nearly all freed by reference counting. The full passes run on the daemon's own schedule
# (broker/server/collector.py). An embedded broker leaves its host's settings.
GC_THRESHOLDS = (700, 10, 100)
# Seconds the daemon keeps polling after each request (BrokerConfig.busy_poll_s; embedded brokers: 0)
SERVE_BUSY_POLL_S = 0.0005


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the broker daemon", description="Run the broker daemon.")
    p.add_argument("--data-dir", help="where topics are stored (created if missing)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1: loopback only)")
    p.add_argument("--port", type=int, help="TCP port (default 7420; 0 picks a free port and prints it)")
    p.add_argument("--config", help="TOML config file; unknown keys are an error")
    p.add_argument("--fsync", choices=["always", "interval", "never"], help="durability mode (default always)")
    p.add_argument("--sync-method", choices=["auto", "fsync", "syncfs"],
                   help="how a grouped sync makes files durable (default auto: one syncfs from 4 partitions)")
    p.add_argument("--limit-algorithm", action="append", default=[], metavar="NAME=package.module:Class",
                   help="make a limit algorithm plug-in available to policies under NAME (repeatable; adds to the "
                        "config file's [limit_algorithms]); nothing else a client names is ever imported")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    p.set_defaults(func=run)


def daemon_config(config: BrokerConfig) -> BrokerConfig:
    """The daemon has its process to itself: it busy-polls between requests unless the config says otherwise."""
    return config.replace(busy_poll_s=SERVE_BUSY_POLL_S) if config.busy_poll_s is None else config


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(args.config, data_dir=args.data_dir, host=args.host, port=args.port, fsync=args.fsync,
                             sync_method=args.sync_method)
        if args.limit_algorithm:
            config = config.replace(limit_algorithms={**config.limit_algorithms, **_plugins(args.limit_algorithm)})
        config = daemon_config(config)
    except MillpondError as exc:
        print(f"millpond serve: {exc.message}", file=sys.stderr)
        return 2
    if config.data_dir is None:
        print("millpond serve: --data-dir (or data_dir in the config file) is required", file=sys.stderr)
        return 2
    from millpond.broker.server.broker import Broker

    try:
        broker = Broker(config, config.data_dir)
    except MillpondError as exc:
        print(f"millpond serve: {exc.message}", file=sys.stderr)
        return 2
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        trio.run(_serve, broker)
    except BaseException as exc:  # noqa: B902  (startup failures arrive wrapped in exception groups)
        leaf = _leaf(exc)
        if isinstance(leaf, MillpondError):
            print(f"millpond serve: {leaf.message}", file=sys.stderr)
            return 1
        if isinstance(leaf, OSError):
            print(f"millpond serve: {leaf.strerror or leaf}", file=sys.stderr)
            return 1
        raise
    return 0


def _plugins(items: list[str]) -> dict[str, str]:
    """``["capped=pkg.mod:Class", ...]`` as a table; InvalidConfigError names an item without ``NAME=``."""
    table = {}
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep or not name or not spec:
            raise InvalidConfigError(f"--limit-algorithm takes NAME=package.module:Class, got {item!r}")
        table[name] = spec
    return table


def _leaf(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (trio nurseries wrap errors)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def _serve(broker) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_collector)
            await nursery.start(broker.serve)
            # One machine-readable line on stdout too, for scripts that started us with --port 0.
            print(f"millpond listening on {broker.address}", flush=True)
            async for signum in signals:
                logging.getLogger("millpond").info("received %s, shutting down", signal.Signals(signum).name)
                await broker.shutdown()
                nursery.cancel_scope.cancel()
                break
