# The progress line on stderr while a benchmark runs: "[2/5] produce 100 B fsync=always  [#####-----]  48%".
# Redrawn in place at most 10 times a second on a terminal; elsewhere (a log file, CI) one line per finished step,
# so logs stay readable. Must not know what is being measured.
from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 24
REDRAW_S = 0.1


class Progress:
    def __init__(self, total_steps: int, *, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()
        self.total_steps = total_steps
        self.step_no = 0
        self.label = ""
        self._drawn = 0.0
        self._started = 0.0

    def step(self, label: str) -> None:
        """Begin the next step (a workload run); draws it at 0%."""
        self.step_no += 1
        self.label = label
        self._started = time.perf_counter()
        self._drawn = 0.0
        self.update(0.0, force=True)

    def update(self, fraction: float, detail: str = "", *, force: bool = False) -> None:
        """Show ``fraction`` (0..1) of the current step done. Cheap when called often: redraws at most 10/s."""
        if not self.live:
            return
        now = time.perf_counter()
        if not force and now - self._drawn < REDRAW_S:
            return
        self._drawn = now
        fraction = min(1.0, max(0.0, fraction))
        filled = int(fraction * WIDTH)
        bar = "#" * filled + "-" * (WIDTH - filled)
        self.stream.write(f"\r\x1b[2K[{self.step_no}/{self.total_steps}] {self.label}  [{bar}] {fraction:4.0%}"
                          f"  {detail}")
        self.stream.flush()

    def done(self, summary: str) -> None:
        """End the current step with a one-line summary (kept on screen / in the log)."""
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self._started
        prefix = "\r\x1b[2K" if self.live else ""
        self.stream.write(f"{prefix}[{self.step_no}/{self.total_steps}] {self.label}: {summary} ({elapsed:.1f} s)\n")
        self.stream.flush()

    def line(self, text: str) -> None:
        """A line of running output (a soak's per-second figures), kept on screen; nothing when disabled."""
        if self.enabled:
            self.note(text)

    def note(self, text: str) -> None:
        """A message that must be seen (a skipped target, a warning), on its own line."""
        prefix = "\r\x1b[2K" if self.live else ""
        self.stream.write(f"{prefix}{text}\n")
        self.stream.flush()
