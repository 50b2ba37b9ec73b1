# Driving the engine as the server would, with literal times and no Trio: offloaded work runs inline, fsync plans
# run when the test says so.
from __future__ import annotations

from pathlib import Path
from typing import Any

from millpond.broker.config import load_config
from millpond.broker.core.engine import Engine
from millpond.broker.core.log import LogManager
from millpond.broker.core.outcomes import Answer, Context, Offload, Outcome, Wait

T0_MS = 1_700_000_000_000


def make_engine(tmp_path: Path, opened_at: float = 0.0, **overrides: Any) -> Engine:
    """An engine over ``tmp_path`` with config ``overrides``, opened at ``ctx(opened_at)``."""
    config = load_config(None, data_dir=str(tmp_path), **{"default_limit_records_per_s": 0, **overrides})
    log = LogManager(tmp_path, defaults=config.topic_defaults, batch_bytes_max=config.batch_bytes_max,
                     partitions_max=config.partitions_max, fsync_mode=config.fsync)
    engine = Engine(config, log)
    engine.open(ctx(opened_at))
    return engine


def ctx(now: float, client_id: str = "app") -> Context:
    return Context(T0_MS + int(now * 1000), now, client_id, "127.0.0.1")


def settle(outcome: Outcome, now: float = 0.0) -> Outcome:
    """Run offloaded work inline (as the server's worker thread would) until the outcome is not an Offload."""
    while isinstance(outcome, Offload):
        try:
            result: Any = outcome.work()
        except Exception as exc:  # the server hands the exception to resume as a value
            result = exc
        outcome = outcome.resume(ctx(now), result)
    return outcome


def handle(engine: Engine, request: Any, now: float = 0.0, client_id: str = "app") -> Outcome:
    return settle(engine.handle(request, ctx(now, client_id)), now)


def answer(engine: Engine, request: Any, now: float = 0.0) -> Any:
    outcome = handle(engine, request, now)
    assert isinstance(outcome, Answer), outcome
    return outcome.value


def flush(engine: Engine) -> set:
    """One fsync plan, run and applied; returns the keys it woke."""
    plan = engine.sync_plan()
    return engine.take_woken() if plan is None else engine.synced(plan, plan.run())  # as RequestLoop.flush


def settled(engine: Engine, request: Any, now: float = 0.0) -> Any:
    """The answer of a request under fsync="always": held until its journal is durable, then resumed."""
    outcome = handle(engine, request, now)
    if isinstance(outcome, Wait):
        flush(engine)
        outcome = outcome.resume(ctx(now), False)
    assert isinstance(outcome, Answer), outcome
    return outcome.value
