# Driving the queue core with literal times: a QueueManager, the queues it woke, wall-clock ms derived from `now`.
from __future__ import annotations

from typing import Any

from millpond.broker.core.queues import QueueAttributes, QueueManager

T0_MS = 1_700_000_000_000


def ms(now: float) -> int:
    return T0_MS + round(now * 1000)


class Kit:
    def __init__(self) -> None:
        self.woken: list[str] = []
        self.m = QueueManager(self.woken.append)

    def create(self, name: str, now: float = 0.0, **attrs: Any) -> Any:
        attrs.setdefault("fifo", name.endswith(".fifo"))
        return self.m.create(name, QueueAttributes(**attrs), now, ms(now))

    def send(self, name: str, body: bytes, now: float = 0.0, **kw: Any) -> tuple[str, int | None]:
        return self.m.send(name, body, now, ms(now), **kw)

    def receive(self, name: str, now: float, n: int = 1, **kw: Any) -> list:
        return self.m.receive(name, n, now, ms(now), **kw)

    def bodies(self, name: str, now: float, n: int = 10, **kw: Any) -> list[bytes]:
        return [d.body for d in self.receive(name, now, n, **kw)]

    def counts(self, name: str, now: float) -> tuple[int, int, int]:
        return self.m.counts(name, now)
