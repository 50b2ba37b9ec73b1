# Latency histograms (HDR, microseconds) and summaries over repeats (median and min-max). Must not know brokers,
# clients or how a figure was measured.
from __future__ import annotations

import statistics
from typing import Iterable

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 120_000_000  # two minutes: anything slower is a hang, not a latency
SIGNIFICANT_DIGITS = 3


def new_histogram() -> HdrHistogram:
    """An empty histogram of microseconds, 1 µs to 120 s, 3 significant digits."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def record_us(hist: HdrHistogram, value_us: float) -> None:
    """Record one latency in µs, clamped into the histogram's range (a sub-µs value counts as 1 µs)."""
    hist.record_value(min(HIGHEST_US, max(LOWEST_US, int(value_us))))


def encode(hist: HdrHistogram) -> bytes:
    return hist.encode() if hist.get_total_count() else b""


def merge(encoded: Iterable[bytes]) -> HdrHistogram:
    """One histogram holding every encoded histogram's samples (empty ones are skipped)."""
    total = new_histogram()
    for blob in encoded:
        if blob:
            total.add(HdrHistogram.decode(blob))
    return total


def latency_figures(hist: HdrHistogram) -> dict[str, float | None]:
    """``p50_ms``, ``p99_ms``, ``p999_ms``, ``max_ms`` (milliseconds) and ``samples``; None when nothing was recorded."""
    if not hist.get_total_count():
        return {"p50_ms": None, "p99_ms": None, "p999_ms": None, "max_ms": None, "samples": 0}
    return {
        "p50_ms": hist.get_value_at_percentile(50) / 1000,
        "p99_ms": hist.get_value_at_percentile(99) / 1000,
        "p999_ms": hist.get_value_at_percentile(99.9) / 1000,
        "max_ms": hist.get_max_value() / 1000,
        "samples": hist.get_total_count(),
    }


def summarize(values: list[float | None]) -> dict[str, float | None]:
    """``{"median", "min", "max"}`` of the repeats that produced a value (all None if none did)."""
    got = [v for v in values if v is not None]
    if not got:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(got), "min": min(got), "max": max(got)}
