# The streaming commands' terminal helpers: the plain live line when rich is not installed, no line off a terminal,
# and the two-signal stop (the first deferred past a section that must not be cut, the second at once).
from __future__ import annotations

import io
import signal
import sys
import threading

import pytest

from millpond.broker.cli._progress import LiveLine, Stop


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_without_rich_a_plain_line_is_redrawn_in_place(monkeypatch):
    monkeypatch.setitem(sys.modules, "rich.console", None)  # import fails as if the cli extra were missing
    monkeypatch.setitem(sys.modules, "rich.live", None)
    drawn = threading.Event()
    calls = []

    def text() -> str:
        calls.append(1)
        if len(calls) == 2:
            drawn.set()
        return f"line {len(calls)}"

    stream = Terminal()
    live = LiveLine(stream, text)
    assert drawn.wait(10)
    live.note("a note")
    live.stop()
    out = stream.getvalue()
    assert out.startswith("\r\x1b[2Kline 1\r\x1b[2Kline 2") and "\r\x1b[2Ka note\n" in out
    assert out.endswith("\r\x1b[2K")  # cleared: the summary line that follows starts on a clean line


@pytest.mark.parametrize("stream", [io.StringIO(), Terminal()])
def test_no_line_off_a_terminal_or_when_disabled(stream):
    live = LiveLine(stream, lambda: "never drawn", enabled=not stream.isatty())
    live.note("a note")
    live.stop()
    assert stream.getvalue() == "a note\n"


def test_the_first_signal_waits_for_a_deferred_section_and_the_second_does_not():
    before = signal.getsignal(signal.SIGTERM)
    with Stop() as stop:
        stop.deferred = True
        signal.raise_signal(signal.SIGTERM)
        assert stop.signal == "SIGTERM" and stop.count == 1  # noted, not raised: the section goes on
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        assert stop.signal == "SIGTERM" and stop.count == 2
    assert signal.getsignal(signal.SIGTERM) is before
    with Stop() as stop:
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        assert stop.signal == "SIGINT"
