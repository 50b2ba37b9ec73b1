# A git revision of millpond in `millpond bench fanout` (`--against REV`, `--target millpond@REV`): as for the
# queues benchmark (bench.targets.revision_queues), the revision's broker and client driven by this tree's fan-out
# loops in a child process (`python -m millpond.bench fanout --peers none --json` with the revision's package on
# the import path and this tree's bench folder linked into it). A revision whose client has no fan-out is skipped
# with the child's error. Must not know how figures are summarised.
from __future__ import annotations

from millpond.bench.targets import revision_queues


class RevisionFanout(revision_queues.RevisionQueues):
    """``millpond@REV`` in the fan-out benchmark: ``rows(mode, args)`` runs every row in a child process."""

    workload, rows_name = "fanout", "fan-out"

    def describe(self) -> dict[str, str]:
        about = super().describe()
        about["client"] = "its own client and broker, driven by this tree's fan-out loops in a child process"
        return about

    def missing(self) -> str | None:
        why = super().missing()
        return why.replace("(and queues)", "(and fan-out)") if why else None
