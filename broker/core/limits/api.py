# Limit policies at run time: the admin requests (set, list, delete), their persistence in the data directory (saved
# in a worker thread through Offload, answered once saved), and the admission check the produce path calls. Must
# not know about any wire protocol, sockets or trio.
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from millpond.broker.core.limits import COST_EXCEEDS_CAPACITY, ERROR, Decision, Policy, PolicySet
from millpond.broker.core.limits.registry import Algorithms
from millpond.broker.core.log.files import load_record, record_saver
from millpond.broker.wire.errors import (
    CostExceedsLimitError,
    InvalidConfigError,
    LimitPolicyFailedError,
    MillpondError,
    StorageError,
    ThrottledError,
    UnknownPolicyError,
)
from millpond.broker.core.outcomes import Answer, Context, Offload, Outcome


@dataclass(frozen=True, slots=True)
class LimitsSet:
    policy: dict[str, Any]  # Policy.from_dict's keys: name, scope, pattern, unit, algorithm, mode, params


@dataclass(frozen=True, slots=True)
class LimitsList:
    pass


@dataclass(frozen=True, slots=True)
class LimitsDelete:
    name: str


@dataclass(frozen=True, slots=True)
class PolicyApplied:
    policy: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Policies:
    policies: tuple[dict[str, Any], ...]

POLICIES_FILE = "limits.policies"


def refusal(decision: Decision) -> MillpondError:
    """The error a refused admission is answered with (DESIGN section 5: throttling is an answer, not a failure)."""
    if decision.reason == COST_EXCEEDS_CAPACITY:
        return CostExceedsLimitError(
            f"the request costs more {decision.unit} than limit policy {decision.policy!r} can ever admit "
            f"(at most {decision.max_cost}); split it",
            policy=decision.policy, unit=decision.unit, max_cost=decision.max_cost,
        )
    if decision.reason == ERROR:
        return LimitPolicyFailedError(decision.message or f"limit policy {decision.policy!r} failed",
                                      policy=decision.policy)
    return ThrottledError(
        f"limit policy {decision.policy!r} ({decision.unit}) refused the request; retry after "
        f"{decision.retry_after_ms} ms",
        policy=decision.policy, unit=decision.unit, retry_after_ms=decision.retry_after_ms,
        retry_after_s=decision.retry_after_ms / 1000,
    )


class LimitApi:
    """The broker's limit policies. Start: policies saved at runtime (the data directory), then the config file's
    (they replace saved ones of the same name), then the built-in ``default`` policy unless one by that name
    exists. Every runtime change is saved before it is answered. ``algorithms``: what a policy may name (the
    operator's plug-ins; see ``registry.Algorithms``), for every policy alike, whoever sets it."""

    def __init__(self, data_dir: Path | None, configured: list[Mapping[str, Any]], default: Mapping[str, Any] | None,
                 algorithms: Algorithms | None = None):
        self.path = None if data_dir is None else Path(data_dir) / POLICIES_FILE
        self.configured = configured
        self.default = default
        self.policies = PolicySet(algorithms=algorithms)

    def open(self) -> None:
        """Load the saved policies and apply the configured ones. Raises ``InvalidConfigError``, ``StorageError``."""
        saved = load_record(self.path) if self.path is not None and self.path.parent.exists() else None
        if saved is not None:
            if not isinstance(saved, list):
                raise StorageError(f"{self.path} does not hold a list of policies")
            for item in saved:
                self.policies.set(item)
        for item in self.configured:
            self.policies.set(item)
        if self.default is not None and "default" not in self.policies:
            self.policies.set(self.default)

    def _saved(self, undo: Callable[[], None], answer: Callable[[], Outcome]) -> Outcome:
        """Save the policies as they are now in a worker thread, then ``answer()``; if the save fails, ``undo()``
        the change and answer ``STORAGE_ERROR``."""
        if self.path is None:
            return answer()
        path, snapshot = self.path, self.policies.to_dicts()

        def saved(ctx: Context, result: Any) -> Outcome:
            if isinstance(result, BaseException):
                undo()
                if isinstance(result, MillpondError):
                    raise result
                raise StorageError(f"cannot save limit policies: {result}")
            return answer()

        return Offload(record_saver(path, snapshot), saved)  # versioned: of two saves in flight the later wins

    def handlers(self) -> dict[type, Callable[[Any, Context], Outcome]]:
        return {LimitsSet: self.set, LimitsList: self.list, LimitsDelete: self.delete}

    def admit(self, ctx: Context, *, topic: str | None = None, queue: str | None = None, records: int = 1,
              nbytes: int = 0) -> float:
        """Check and charge one request. Returns the shaping delay in seconds (0: go on now); raises
        ``ThrottledError`` (details ``retry_after_s``), ``CostExceedsLimitError`` (details ``max_cost``, ``unit``)
        or ``LimitPolicyFailedError``, having charged nothing."""
        decision = self.policies.admit(int(ctx.now * 1e9), client_id=ctx.client_id, topic=topic, queue=queue,
                                       records=records, nbytes=nbytes)
        if not decision.allowed:
            raise refusal(decision)
        return decision.delay_ns / 1e9

    def receivable(self, ctx: Context, *, queue: str, wanted: int) -> int:
        """How many messages (1 to ``wanted``) a receive from ``queue`` may hand out now under the ``receive``
        policies (scopes ``client:ID``, ``queue:NAME``, ``global``), charging nothing; see
        ``PolicySet.receivable``. Raises ``ThrottledError`` (details ``retry_after_s``) when not one may go now,
        ``LimitPolicyFailedError``."""
        n, decision = self.policies.receivable(int(ctx.now * 1e9), client_id=ctx.client_id, queue=queue,
                                               wanted=wanted)
        if n <= 0:
            raise refusal(decision)
        return n

    def received(self, ctx: Context, *, queue: str, records: int) -> None:
        """Charge an answered receive (one request, ``records`` messages) to the ``receive`` policies."""
        self.policies.charge_receive(int(ctx.now * 1e9), client_id=ctx.client_id, queue=queue, records=records)

    # -- admin ---------------------------------------------------------------------------------------------------
    def set(self, req: LimitsSet, ctx: Context) -> Outcome:
        name = req.policy.get("name")
        previous = self.policies.get(name) if isinstance(name, str) and name in self.policies else None
        applied = self.policies.set(req.policy)

        def undo() -> None:
            if applied.name not in self.policies or self.policies.get(applied.name) is not applied:
                return  # changed again meanwhile: the later change stands
            if previous is None:
                self.policies.delete(applied.name)
            else:
                self.policies.set(previous)

        return self._saved(undo, lambda: Answer(PolicyApplied(applied.to_dict())))

    def delete(self, req: LimitsDelete, ctx: Context) -> Outcome:
        if req.name not in self.policies:
            raise UnknownPolicyError(f"no limit policy named {req.name!r}")
        removed = self.policies.delete(req.name)

        def undo() -> None:
            if req.name not in self.policies:
                self.policies.set(removed)

        return self._saved(undo, lambda: Answer(None))

    def list(self, req: LimitsList, ctx: Context) -> Outcome:
        stats = self.policies.statistics()
        out = []
        for policy in self.policies.policies():
            item = policy.to_dict()
            s = stats.get(policy.name)
            if s is not None:
                d = asdict(s)
                d["throttled_by_key"] = {str(k): v for k, v in s.throttled_by_key.items()}
                item["stats"] = d
            out.append(item)
        return Answer(Policies(tuple(out)))


def check_policies(items: object, algorithms: Algorithms | None = None) -> list[dict[str, Any]]:
    """Validate the config file's ``[[limits]]`` tables now, so a misspelt key stops the broker at start; the
    operator's plug-ins in ``algorithms`` are imported here too, so a wrong module path does the same."""
    if not isinstance(items, list):
        raise InvalidConfigError("limits must be an array of tables ([[limits]])")
    algorithms = algorithms or Algorithms()
    try:
        algorithms.load_all()
    except LookupError as exc:
        raise InvalidConfigError(f"limit_algorithms: {exc}") from None
    for item in items:
        Policy.from_dict(item).build(algorithms)
    return items
