# Topic names and per-topic configuration: what a name may be before it becomes a directory, and the validated
# retention/segment settings of one topic. Must not know about files, segments or the wire format.
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from millpond.broker.config import TopicDefaults
from millpond.broker.wire.errors import InvalidConfigError, InvalidTopicNameError

TOPIC_NAME_CHARS_MAX = 249  # Kafka's limit; leaves room for suffixes within a 255-byte file name
_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")
_INT32_MAX = 2**31 - 1  # index entries store positions and relative offsets in 32 bits, like Kafka
# Names the broker keeps for its own topics (e.g. committed offsets), as Kafka keeps "__consumer_offsets".
INTERNAL_TOPIC_PREFIX = "__millpond_"


def is_internal_topic(name: str) -> bool:
    """True for a name reserved for the broker's own topics (``__millpond_*``)."""
    return name.startswith(INTERNAL_TOPIC_PREFIX)


def validate_topic_name(name: object, *, internal: bool = False) -> None:
    """Raise ``InvalidTopicNameError`` unless ``name`` is a str of 1-249 chars of ``[A-Za-z0-9._-]``, not ``.``/``..``,
    and not reserved (``__millpond_*``) unless ``internal`` (the broker creating or loading its own topic).
    """
    if not isinstance(name, str):
        raise InvalidTopicNameError(f"topic name must be a string, got {type(name).__name__}")
    if _NAME_RE.fullmatch(name) is None or name in (".", ".."):
        shown = name if len(name) <= 60 else name[:60] + "..."
        raise InvalidTopicNameError(
            f"invalid topic name {shown!r} ({len(name)} chars): use 1-{TOPIC_NAME_CHARS_MAX} characters of "
            "[A-Za-z0-9._-], not '.' or '..'"
        )
    if not internal and is_internal_topic(name):
        raise InvalidTopicNameError(f"topic names starting with {INTERNAL_TOPIC_PREFIX!r} are reserved for the broker")


# key -> (minimum, maximum, meaning of -1 if allowed). Kafka's bounds where they exist.
_BOUNDS: dict[str, tuple[int, int]] = {
    "retention_ms": (-1, 2**63 - 1),  # -1 = keep forever
    "retention_bytes": (-1, 2**63 - 1),  # per partition; -1 = unlimited
    "segment_bytes": (1024, _INT32_MAX),
    "segment_ms": (1, 2**63 - 1),
    "index_interval_bytes": (0, _INT32_MAX),
}


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """Per-topic settings. Units: milliseconds and bytes; ``-1`` = unlimited for the two retention settings."""

    retention_ms: int
    retention_bytes: int
    segment_bytes: int
    segment_ms: int
    index_interval_bytes: int

    @classmethod
    def from_wire(cls, config: dict[str, Any] | None, defaults: TopicDefaults) -> "TopicConfig":
        """Build from a wire/file map laid over ``defaults`` (the broker's config, in seconds: converted here).

        Raises ``InvalidConfigError`` naming the key: unknown key, non-integer value, or value out of range.
        """
        values = defaults.to_wire()
        if config is not None:
            if not isinstance(config, dict):
                raise InvalidConfigError(f"topic config must be a map, got {type(config).__name__}")
            for key, value in config.items():
                if key not in _BOUNDS:
                    raise InvalidConfigError(
                        f"unknown topic config key {key!r}; known keys: {', '.join(sorted(_BOUNDS))}", key=str(key)
                    )
                values[key] = value
        for key, value in values.items():
            low, high = _BOUNDS[key]
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidConfigError(f"topic config {key} must be an integer, got {value!r}", key=key)
            if low == -1 and value < -1:
                raise InvalidConfigError(f"topic config {key} must be >= 0, or -1 for no limit (keep forever), got "
                                         f"{value}", key=key)
            if not low <= value <= high:
                raise InvalidConfigError(f"topic config {key}={value} is out of range {low}..{high}", key=key)
        return cls(**values)

    def to_wire(self) -> dict[str, int]:
        return asdict(self)

    def describe(self) -> str:
        """For a person (the broker's log): times in seconds, as every setting outside the wire."""
        return ", ".join(f"{k[:-3]}_s={'-1' if v < 0 else f'{v / 1000:g}'}" if k.endswith("_ms") else f"{k}={v}"
                         for k, v in asdict(self).items())
