# Broker configuration: one frozen record, loaded from TOML (stdlib tomllib) and CLI flags. Unknown keys are an
# error, never ignored. A leaf module: knows nothing of the server or the cores' internals.
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from millpond.broker.wire.errors import InvalidConfigError

FSYNC_MODES = ("always", "interval", "never")
SYNC_METHODS = ("auto", "fsync", "syncfs")
STORAGE_KINDS = ("file", "memory")
DAY_S = 24 * 3600.0

# Keys that used to be milliseconds: each is refused with its new name, in a config file and in keyword arguments
# (DESIGN §6: seconds, float, in every config key; milliseconds only on the wire).
RENAMED_KEYS = {"fsync_interval_ms": "fsync_interval_s", "retention_check_interval_ms": "retention_check_interval_s",
                "retention_ms": "retention_s", "segment_ms": "segment_s"}


@dataclass(frozen=True, slots=True)
class TopicDefaults:
    """Defaults for topics created without their own config. Units: seconds (float) and bytes; -1 = no limit for
    the two retention settings (Kafka's ``retention.ms`` / ``retention.bytes`` and ``segment.ms``, in seconds)."""

    partitions: int = 1
    retention_s: float = 7 * DAY_S  # -1 = keep forever

    def __new__(cls, *args: Any, **kwargs: Any) -> "TopicDefaults":
        _refuse_renamed(kwargs, "topic_defaults.")
        return object.__new__(cls)

    retention_bytes: int = -1  # per partition; -1 = unlimited
    segment_bytes: int = 64 * 1024 * 1024
    segment_s: float = 7 * DAY_S
    index_interval_bytes: int = 4096

    def __post_init__(self) -> None:
        # The ranges of broker/core/log/topic_config.py, checked at load: a bad default would otherwise surface
        # only when a topic is created.
        for name, low in (("partitions", 1), ("retention_bytes", -1), ("segment_bytes", 1024),
                          ("index_interval_bytes", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidConfigError(f"topic_defaults.{name} must be an integer, got {value!r}")
            if value < low:
                bound = ">= 0, or -1 for no limit (keep forever)" if low == -1 else f">= {low}"
                raise InvalidConfigError(f"topic_defaults.{name} must be {bound}, got {value}")
        for name in ("retention_s", "segment_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
                raise InvalidConfigError(f"topic_defaults.{name} must be a number of seconds, got {value!r}")
        if self.retention_s != -1 and self.retention_s < 0:
            raise InvalidConfigError(f"topic_defaults.retention_s must be >= 0 seconds, or -1 to keep forever, got "
                                     f"{self.retention_s}")
        if self.segment_s < 0.001:
            raise InvalidConfigError(f"topic_defaults.segment_s must be >= 0.001 seconds, got {self.segment_s}")
        if self.segment_bytes > 2**31 - 1 or self.index_interval_bytes > 2**31 - 1:
            raise InvalidConfigError("topic_defaults.segment_bytes and index_interval_bytes must be < 2 GiB")

    def to_wire(self) -> dict[str, int]:
        """The topic config map in wire units (``retention_ms``, ``segment_ms``: milliseconds; sizes in bytes)."""
        return {"retention_ms": -1 if self.retention_s == -1 else round(self.retention_s * 1000),
                "retention_bytes": self.retention_bytes, "segment_bytes": self.segment_bytes,
                "segment_ms": round(self.segment_s * 1000), "index_interval_bytes": self.index_interval_bytes}


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Everything ``millpond serve`` and ``open_broker`` accept.

    ``data_dir=None`` (embedded only) means a temporary directory removed on exit. ``fsync``: ``"always"`` acks a
    produce after the grouped fsync that covers it; ``"interval"`` fsyncs every ``fsync_interval_s`` seconds;
    ``"never"`` leaves flushing to the OS. ``storage``: ``"file"`` keeps topics under ``data_dir/topics`` (locked by
    ``data_dir/broker.lock``); ``"memory"`` keeps them in memory only: no topic files and no lock (two memory
    brokers share nothing), everything gone when the broker stops.
    """

    data_dir: Path | None = None
    host: str = "127.0.0.1"

    def __new__(cls, *args: Any, **kwargs: Any) -> "BrokerConfig":
        _refuse_renamed(kwargs, "")
        return object.__new__(cls)

    port: int = 7420
    fsync: str = "always"
    # How a grouped sync makes files durable: "fsync", one fdatasync per file (split over threads from 4
    # partitions); "syncfs", one syncfs(2) of the data directory's filesystem for plans over 2 partitions or more
    # (Linux 5.8+); "auto", syncfs from 4 partitions where available, else as "fsync". A syncfs also waits for
    # other programs' dirty pages on that filesystem: with heavy writers beside the broker, choose "fsync" or give
    # data_dir a filesystem of its own.
    sync_method: str = "auto"
    storage: str = "file"
    fsync_interval_s: float = 0.1
    frame_bytes_max: int = 16 * 1024 * 1024
    batch_bytes_max: int = 8 * 1024 * 1024
    fetch_bytes_max: int = 8 * 1024 * 1024
    requests_in_flight_max: int = 1024
    # At most this many client connections; at start the broker also caps it at its open-file limit (RLIMIT_NOFILE,
    # soft limit raised to the hard one) minus ``fds_reserved`` (at most half the limit), kept for segment and index
    # files. One of the slots is kept for a loopback (administrator) connection. (Redis's maxclients default.)
    connections_max: int = 10_000
    fds_reserved: int = 256
    # A connection that has not completed the handshake within this is closed.
    handshake_timeout_s: float = 10.0
    # A connection that sent no request, had nothing sent to it and waited on the broker for nothing for this long
    # is closed (also a peer that stopped reading its answers); 0 turns it off.
    idle_timeout_s: float = 600.0
    # Answer bytes a connection may have waiting to be sent; past it the broker stops reading that connection's
    # requests and building its answers (a slow reader costs at most this plus one answer).
    connection_outbox_bytes_max: int = 32 * 1024 * 1024
    # The same bound over all connections together: each connection's is at most an equal share of this (never
    # below 1 MiB), so many slow readers together cost about this, plus one answer each.
    outbox_bytes_total_max: int = 256 * 1024 * 1024
    partitions_max: int = 1024
    retention_check_interval_s: float = 60.0  # how often time and size retention run
    shutdown_grace_s: float = 5.0
    # After serving a request the broker keeps polling its sockets (instead of sleeping in epoll) for this long, so
    # the next request of a client that waits for each answer meets a running broker, not one waking from sleep
    # (about half the latency of an awaited send on a 2-core machine). Costs CPU only within this window after
    # each request; 0 turns it off. Seconds. None: 0.0005 for `millpond serve`; 0 for a broker embedded in another
    # program (open_broker, run_broker), whose process, threads and GIL it shares.
    busy_poll_s: float | None = None
    topic_defaults: TopicDefaults = field(default_factory=TopicDefaults)
    # Limit policies from the config file ([[limits]] tables; see broker/core/limits/policy.py for the keys).
    limits: tuple = ()
    # The operator's limit algorithm plug-ins, name = "package.module:ClassName" ([limit_algorithms] table): the only
    # plug-ins a policy may name besides the built-ins and the "millpond.limits" entry points; a client can never make
    # the broker import anything else.
    limit_algorithms: dict = field(default_factory=dict)
    # The built-in per-client admission check, a leaky bucket (GCRA) on records; 0 turns it off.
    default_limit_records_per_s: int = 5_000_000
    # Messages one queue may hold (visible, in flight and delayed); a send past it is refused with QUEUE_FULL.
    queue_messages_max: int = 1_000_000
    # Hosts a webhook subscription may reach: host names and CIDRs (docs/fanout.md "Webhooks"); loopback only by
    # default. A listed name must resolve, at each delivery, to a listed network or a public address.
    webhook_allow: tuple = ("127.0.0.0/8", "::1/128", "localhost")
    # Webhook requests in flight over the broker (each holds a worker thread while it waits; trio lends 40).
    webhook_requests_max: int = 16

    def __post_init__(self) -> None:
        for name, kind in (("host", str), ("port", int), ("fsync", str), ("sync_method", str),
                           ("shutdown_grace_s", (int, float)), ("handshake_timeout_s", (int, float)),
                           ("idle_timeout_s", (int, float)),
                           ("fsync_interval_s", (int, float)), ("retention_check_interval_s", (int, float))):
            value = getattr(self, name)
            if not isinstance(value, kind) or isinstance(value, bool):
                want = "a string" if kind is str else "a number" if kind != int else "an integer"
                raise InvalidConfigError(f"{name} must be {want}, got {value!r}")
        if self.fsync not in FSYNC_MODES:
            raise InvalidConfigError(f"fsync must be one of {', '.join(FSYNC_MODES)}, got {self.fsync!r}")
        if self.sync_method not in SYNC_METHODS:
            raise InvalidConfigError(f"sync_method must be one of {', '.join(SYNC_METHODS)}, got {self.sync_method!r}")
        if not isinstance(self.storage, str) or self.storage not in STORAGE_KINDS:
            raise InvalidConfigError(f"storage must be one of {', '.join(STORAGE_KINDS)}, got {self.storage!r}")
        for name in ("frame_bytes_max", "batch_bytes_max", "fetch_bytes_max", "requests_in_flight_max",
                     "connections_max", "partitions_max", "connection_outbox_bytes_max", "outbox_bytes_total_max", "queue_messages_max",
                     "webhook_requests_max"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("fsync_interval_s", "retention_check_interval_s"):
            if not getattr(self, name) >= 0.001:
                raise InvalidConfigError(f"{name} must be >= 0.001 seconds, got {getattr(self, name)!r}")
        poll = self.busy_poll_s
        if poll is not None and (not isinstance(poll, (int, float)) or isinstance(poll, bool) or not 0 <= poll <= 1):
            raise InvalidConfigError(f"busy_poll_s must be 0-1 seconds (0 turns it off), got {poll!r}")
        for name in ("handshake_timeout_s", "idle_timeout_s"):
            if getattr(self, name) < 0:
                raise InvalidConfigError(f"{name} must be >= 0 seconds (0 turns it off), got {getattr(self, name)!r}")
        if not isinstance(self.fds_reserved, int) or isinstance(self.fds_reserved, bool) or self.fds_reserved < 0:
            raise InvalidConfigError(f"fds_reserved must be an integer >= 0, got {self.fds_reserved!r}")
        if self.batch_bytes_max > self.frame_bytes_max - 1024:
            raise InvalidConfigError("batch_bytes_max must be at least 1 KiB below frame_bytes_max")
        if not isinstance(self.default_limit_records_per_s, int) or self.default_limit_records_per_s < 0:
            raise InvalidConfigError("default_limit_records_per_s must be an integer >= 0 (0 turns it off)")
        if not isinstance(self.limits, (tuple, list)):
            raise InvalidConfigError("limits must be an array of tables ([[limits]])")
        object.__setattr__(self, "limits", tuple(self.limits))
        allow = self.webhook_allow
        if not isinstance(allow, (tuple, list)) or not all(isinstance(e, str) for e in allow):
            raise InvalidConfigError(f"webhook_allow must be an array of host names and CIDRs, got {allow!r}")
        object.__setattr__(self, "webhook_allow", tuple(allow))
        plugins = self.limit_algorithms
        if not isinstance(plugins, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in plugins.items()):
            raise InvalidConfigError(f"limit_algorithms must be a table of name = \"package.module:Class\", got {plugins!r}")
        object.__setattr__(self, "limit_algorithms", dict(plugins))
        if not (0 <= self.port <= 65535):
            raise InvalidConfigError(f"port must be 0-65535, got {self.port}")

    def replace(self, **changes: Any) -> "BrokerConfig":
        return dataclasses.replace(self, **changes)

    def default_limit_policy(self) -> dict[str, Any] | None:
        """The built-in policy: every client id gets its own leaky bucket of ``default_limit_records_per_s``
        records per second with one second of burst."""
        rate = self.default_limit_records_per_s
        if rate == 0:
            return None
        return {"name": "default", "scope": "client", "pattern": "*", "unit": "records",
                "algorithm": "leaky_bucket", "mode": "reject", "params": {"rate": rate, "burst": rate}}


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    _refuse_renamed(table, where)
    for key, value in table.items():
        if key not in known:
            raise InvalidConfigError(f"unknown config key '{where}{key}'; known keys: {', '.join(sorted(known))}")
        if key == "topic_defaults":
            if not isinstance(value, dict):
                raise InvalidConfigError(f"{where}topic_defaults must be a table")
            value = _build(TopicDefaults, value, "topic_defaults.")
        elif key == "data_dir":
            value = Path(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise InvalidConfigError(f"bad config in {where or 'top level'}: {exc}") from None


def _refuse_renamed(table: dict[str, Any], where: str) -> None:
    """Raise ``InvalidConfigError`` naming the new key for a key that used to be milliseconds."""
    for key, value in table.items():
        if key in RENAMED_KEYS:
            new = RENAMED_KEYS[key]
            raise InvalidConfigError(f"config key '{where}{key}' (milliseconds) is now '{where}{new}', in seconds "
                                     f"(a float): e.g. {where}{new} = {_example_s(key, value)}")


def _example_s(key: str, value: Any) -> str:
    """The old millisecond ``value`` in seconds, for the renamed key's message (its default if not a number)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "-1" if value == -1 and key == "retention_ms" else f"{value / 1000:g}"
    return "0.1" if key == "fsync_interval_ms" else "60"


def load_config(path: str | Path | None = None, **overrides: Any) -> BrokerConfig:
    """Read a TOML config file (or none), then apply ``overrides`` that are not None (CLI flags win).

    Raises ``InvalidConfigError`` naming an unknown key, a wrong type or an out-of-range value.
    """
    table: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                table = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidConfigError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise InvalidConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    for key, value in overrides.items():
        if value is not None:
            table[key] = value
    return _build(BrokerConfig, table, "")
