# Rate limits, sans-IO: the limiter contract (base), the five built-in algorithms, the plug-in registry and the
# policy layer the server calls once per request. Time is an integer nanosecond count passed in; nothing here
# reads a clock, sleeps, or knows about trio, sockets or the wire format.
from millpond.broker.core.limits.base import (
    ADMITTED,
    COST_EXCEEDS_CAPACITY,
    DEFAULT_MAX_KEYS,
    ERROR,
    NS_PER_S,
    QUEUE_FULL,
    RATE,
    Algorithm,
    Decision,
    KeyedAlgorithm,
)
from millpond.broker.core.limits.leaky_bucket import LeakyBucket
from millpond.broker.core.limits.policy import MODES, SCOPES, UNITS, Policy, PolicySet, PolicyStatistics
from millpond.broker.core.limits.registry import ALGORITHMS, ENTRY_POINT_GROUP, UnknownAlgorithm, register, resolve
from millpond.broker.core.limits.token_bucket import TokenBucket
from millpond.broker.core.limits.windows import FixedWindow, SlidingLog, SlidingWindow

__all__ = [
    "ADMITTED", "ALGORITHMS", "COST_EXCEEDS_CAPACITY", "DEFAULT_MAX_KEYS", "ENTRY_POINT_GROUP", "ERROR", "MODES",
    "NS_PER_S", "QUEUE_FULL", "RATE", "SCOPES", "UNITS", "Algorithm", "Decision", "FixedWindow", "KeyedAlgorithm",
    "LeakyBucket", "Policy", "PolicySet", "PolicyStatistics", "SlidingLog", "SlidingWindow", "TokenBucket",
    "UnknownAlgorithm", "register", "resolve",
]
