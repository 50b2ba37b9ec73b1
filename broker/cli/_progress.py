# A live progress line on stderr for the streaming commands (produce, consume): rich's Live on a terminal (the
# `cli` extra; a plain redrawn line without it), nothing otherwise, and a signal-driven stop for `produce` and
# `consume` (Ctrl-C, SIGTERM, or the broker going away).
# Knows the terminal, threads and signals; what the line says is the caller's.
from __future__ import annotations

import signal
import threading
import time
from typing import Any, Callable

REFRESH_S = 0.5  # how often the live line is redrawn


class Rate:
    """Records per second over the last refresh interval: ``rate(total)`` with a running total."""

    def __init__(self) -> None:
        self.at = time.monotonic()
        self.total = 0
        self.value = 0.0

    def __call__(self, total: int) -> float:
        now = time.monotonic()
        if now - self.at >= REFRESH_S / 2:
            self.value = (total - self.total) / (now - self.at)
            self.at, self.total = now, total
        return self.value


class LiveLine:
    """Redraws ``text()`` on ``stream`` every REFRESH_S seconds from a thread of its own while ``stream`` is a
    terminal (and ``enabled``); ``note(line)`` prints a line above it; ``stop()`` clears it. Off a terminal it
    draws nothing."""

    def __init__(self, stream: Any, text: Callable[[], str], enabled: bool = True) -> None:
        self.stream = stream
        self.text = text
        self.live: Any = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self.tty = enabled and stream.isatty()
        if not self.tty:
            return
        try:
            from rich.console import Console
            from rich.live import Live
        except ImportError:  # rich is the `cli` extra: a plain line redrawn by our own thread
            self._thread = threading.Thread(target=self._redraw, name="millpond-progress", daemon=True)
            self._thread.start()
        else:
            # stdout is the command's own (records): rich must not take it over
            self.live = Live(get_renderable=self._renderable, console=Console(file=stream),
                             refresh_per_second=1 / REFRESH_S, transient=True, redirect_stdout=False,
                             redirect_stderr=False)
            self.live.start()

    def _renderable(self) -> Any:
        from rich.text import Text

        return Text(self.text(), no_wrap=True, overflow="ellipsis")

    def _redraw(self) -> None:
        while not self._done.wait(REFRESH_S):
            self.stream.write("\r\x1b[2K" + self.text())
            self.stream.flush()

    def note(self, line: str) -> None:
        if self.live is not None:
            self.live.console.print(line, highlight=False, markup=False)
        else:
            print(("\r\x1b[2K" if self._thread else "") + line, file=self.stream, flush=True)

    def stop(self) -> None:
        self._done.set()
        if self.live is not None:
            self.live.stop()
            self.live = None
        elif self._thread is not None:
            self._thread.join()
            self._thread = None
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


_caught = ["SIGINT"]  # the last stop signal a handler of this process caught


def caught(signum: int) -> str:
    """Note that signal ``signum`` stops the command (for ``signal_exit``); returns its name."""
    _caught[0] = signal.Signals(signum).name
    return _caught[0]


def signal_exit(name: str | None = None) -> int:
    """The shell's exit status for a command stopped by signal ``name`` (``"SIGINT"``, ``"SIGTERM"``; None: the
    last one caught, SIGINT if none): 128 + its number, so 130 after Ctrl-C and 143 after SIGTERM."""
    return 128 + signal.Signals[name or _caught[0]]


class Stop:
    """SIGINT and SIGTERM while installed (``with Stop() as stop:``): the first sets ``stop.signal`` (its name)
    and raises KeyboardInterrupt unless ``stop.deferred`` (a section that must not be cut in the middle checks
    ``stop.stopping`` after it instead); the second always raises KeyboardInterrupt, to abort at once.
    ``broker_gone(reason)``, from any thread, stops the main thread the same way wherever it waits (reading input,
    waiting on the broker), with ``stop.gone`` the reason."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self.gone: str | None = None
        self.count = 0
        self.deferred = False
        # Called on the second signal instead of raising, if set: it must end the process (os._exit). A second
        # KeyboardInterrupt can land inside the cleanup the first one started and leave it waiting forever.
        self.abort: Callable[[], None] | None = None
        self._old: dict[int, Any] = {}
        self._main = threading.main_thread().ident

    @property
    def stopping(self) -> bool:
        return self.signal is not None or self.gone is not None

    def broker_gone(self, reason: str) -> None:
        """Stop as a first signal would, because the broker went away: a signal to the main thread itself, so a
        read blocked on stdin or a wait on the client returns at once (EINTR) and raises there."""
        if self.gone is None and self.signal is None and self._old:  # installed: its handler takes the signal
            self.gone = reason
            signal.pthread_kill(self._main, GONE_SIGNAL)

    def _handler(self, signum: int, frame: Any) -> None:
        self.count += 1
        name = caught(signum)
        if self.signal is None:
            self.signal = name
        if self.count > 1 and self.abort is not None:
            self.abort()
        if self.count > 1 or not self.deferred:
            raise KeyboardInterrupt

    def _gone_handler(self, signum: int, frame: Any) -> None:
        if not self.deferred:
            raise KeyboardInterrupt

    def __enter__(self) -> Stop:
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handler)
        self._old[GONE_SIGNAL] = signal.signal(GONE_SIGNAL, self._gone_handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        old, self._old = self._old, {}
        for s, handler in old.items():
            # a broker_gone racing this exit must not meet the default action of its signal (ending the process)
            signal.signal(s, signal.SIG_IGN if s == GONE_SIGNAL else handler)


GONE_SIGNAL = signal.SIGUSR1  # what broker_gone sends the main thread: no user sends it to a millpond command
