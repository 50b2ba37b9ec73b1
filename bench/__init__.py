# The benchmark product: `millpond bench` and `python -m millpond.bench`. Workloads (what is measured and how the
# figures are made honest) are separate from targets (how one broker is started and driven by its own Python
# client), so a peer broker is one more target with the same workload interface. Must not know the broker's
# internals: millpond is driven only through the public `client` package and the `millpond serve` daemon.
"""millpond benchmarks: ``python -m millpond.bench [quick|full|compare|WORKLOAD] [options]``."""
from millpond.bench.cli import main

__all__ = ["main"]
