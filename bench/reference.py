# The issues' goals a run is checked against, each judged only on figures measured in that run: a threshold on a
# millpond row, or on the ratio millpond / peer (or this tree / revision) of rows measured side by side. Must not know
# how millpond is driven.
from __future__ import annotations

from typing import NamedTuple


class Goal(NamedTuple):
    """A figure of this tree's millpond rows against a threshold: ``workload`` at ``record_bytes`` (None: any) and
    ``fsync``, at ``rate_per_s`` for the fixed-rate workloads (None: any)."""

    workload: str
    record_bytes: int | None
    fsync: str
    figure: str
    op: str  # ">=", "<" or "<="
    threshold: float
    text: str
    rate_per_s: int | None = None


# The goals issues 2, 5 and 8 set, against which a run is reported.
GOALS = (
    Goal("e2e", None, "always", "p99_ms", "<", 3.0, "e2e p99 < 3 ms at 5k rec/s, fsync=always", 5000),
    Goal("produce", 100, "never", "records_per_s", ">=", 1_000_000, ">= 1M rec/s produce, fsync=never"),
    Goal("send_await", 100, "never", "records_per_s", ">=", 5_000, "awaited send >= 5,000 rec/s, fsync=never"),
    Goal("send_await", 100, "always", "records_per_s", ">=", 1_000, "awaited send >= 1,000 rec/s, fsync=always"),
    Goal("e2e", 100, "never", "p50_ms", "<=", 0.35, "e2e p50 <= 0.35 ms at 5k rec/s, fsync=never", 5000),
    Goal("e2e", 100, "never", "p99_ms", "<=", 1.5, "e2e p99 <= 1.5 ms at 5k rec/s, fsync=never", 5000),
    Goal("e2e", 100, "always", "p50_ms", "<=", 1.0, "e2e p50 <= 1.0 ms at 5k rec/s, fsync=always", 5000),
)



class PeerGoal(NamedTuple):
    """The ratio millpond / ``peer`` of ``figure`` for ``workload`` at ``record_bytes``, millpond at ``fsync``, both
    rows measured in the same run (``millpond bench compare``); not judged when the run has no such pair."""

    workload: str
    record_bytes: int
    fsync: str
    peer: str  # the target name of the peer's row
    figure: str
    op: str
    threshold: float  # on the ratio
    text: str


# Issue 2's goals against Redis Streams (its default configuration, the `redis` target).
PEER_GOALS = (
    PeerGoal("produce", 100, "always", "redis", "records_per_s", ">=", 3.0, "3x Redis Streams produce"),
    PeerGoal("consume", 100, "always", "redis", "records_per_s", ">=", 3.0, "3x Redis Streams consume"),
)

# Issue 9: keyed records spread over many partitions cost the producer no more per record than over one, judged on
# the ratio of a keyed produce row over N partitions to the row over 1 partition of the same run (`millpond bench
# produce --keys 1000 --partitions 1,64`): (workload, figure, op, threshold on the ratio, text).
SPREAD_GOALS = (
    ("produce", "records_per_s", ">=", 0.90, "keyed produce over {n} partitions >= 90% of 1 partition's records/s"),
)


# Issue 8: throughput no worse than the previous main's, judged on the ratio this tree / revision of rows measured
# side by side in one run (`--against REV`), at each fsync mode both ran: (workload, record_bytes, figure, op,
# threshold on the ratio, text).
REVISION_GOALS = tuple(
    (workload, size, "records_per_s", ">=", 0.95, f"{workload} {size:,} B within 5% of the revision or better")
    for workload in ("produce", "consume") for size in (100, 1024))
