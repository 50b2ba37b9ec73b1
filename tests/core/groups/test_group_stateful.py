# A hypothesis stateful model of one consumer group: after any sequence of joins (dynamic and static), leaves,
# expiries, static restarts and topic growth, once the members heartbeat with what they were told, every partition
# is owned by exactly one member, no partition ever has two holders, the epoch moves once per change (never for a
# static restart), and the sticky assignor moved no more partitions than balance required.
from __future__ import annotations

import random

from groupkit import Harness
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from millpond.broker.core.groups import MemberState

TOPICS = ["a", "b"]
SESSION_S = 10.0


class GroupModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h = Harness({"a": 3, "b": 2}, session_timeout_s=SESSION_S)
        self.now = 0.0
        self.settled: dict[str, frozenset] = {}
        self.static: dict[str, str] = {}  # instance id -> member id
        self.instances = 0

    # -- helpers ---------------------------------------------------------------------------------------------------

    def live(self) -> list[str]:
        return list(self.settled)

    def settle(self, rnd: random.Random) -> None:
        ids = self.h.members("g") if self.h.coord.state("g").value != "dead" else []
        for _ in range(30):
            order = list(ids)
            rnd.shuffle(order)
            answers = [self.h.beat("g", mid, self.now) for mid in order]
            self.check_single_holders()
            if all(a.state is MemberState.STABLE for a in answers):
                break
        else:
            raise AssertionError("the group did not settle")
        new = {mid: frozenset(self.h.told[mid].assignment) for mid in ids}
        self.check_minimal_moves(self.settled, new)
        self.settled = new

    def check_single_holders(self) -> None:
        group = self.h.coord._groups.get("g")
        if group is None:
            return
        seen: set = set()
        for m in group.members.values():
            held = m.assigned | m.revoking
            assert not (held & seen), "a partition has two holders"
            seen |= held

    def check_minimal_moves(self, old: dict[str, frozenset], new: dict[str, frozenset]) -> None:
        everything = sorted(p for tps in new.values() for p in tps)
        total = sum(self.h.topics[t] for t in TOPICS)
        assert len(everything) == len(set(everything)) == (total if new else 0), "not every partition exactly once"
        if not new:
            return
        base, extra = divmod(total, len(new))
        kept = sorted((len(old.get(mid, ())) for mid in new), reverse=True)
        quotas = [base + 1] * extra + [base] * (len(new) - extra)
        least = sum(max(0, c - q) for c, q in zip(kept, quotas))
        moved = sum(len(old[mid] - new[mid]) for mid in new if mid in old)
        assert moved == least, f"moved {moved} partitions from survivors, balance needed only {least}"
        counts = [len(v) for v in new.values()]
        assert max(counts) - min(counts) <= 1

    def epoch(self) -> int:
        return self.h.epoch("g") if self.h.coord.state("g").value != "dead" else 0

    # -- rules -----------------------------------------------------------------------------------------------------

    @precondition(lambda self: len(self.settled) < 6)
    @rule(static=st.booleans(), rnd=st.randoms(use_true_random=False))
    def join(self, static: bool, rnd: random.Random) -> None:
        self.now += 1.0
        instance = None
        if static:
            self.instances += 1
            instance = f"i{self.instances}"
        answer = self.h.join("g", TOPICS, self.now, group_instance_id=instance)
        if instance is not None:
            self.static[instance] = answer.member_id
        self.settle(rnd)

    @precondition(lambda self: self.settled)
    @rule(data=st.data(), rnd=st.randoms(use_true_random=False))
    def leave(self, data: st.DataObject, rnd: random.Random) -> None:
        mid = data.draw(st.sampled_from(sorted(self.settled)))
        before = self.epoch()
        self.now += 1.0
        self.h.coord.leave("g", mid, self.now)
        self.forget(mid)
        assert self.epoch() in (before + 1, 0)
        self.settle(rnd)

    @precondition(lambda self: self.settled)
    @rule(data=st.data(), rnd=st.randoms(use_true_random=False))
    def expire(self, data: st.DataObject, rnd: random.Random) -> None:
        mid = data.draw(st.sampled_from(sorted(self.settled)))
        before = self.epoch()
        for other in self.settled:  # everyone else heartbeats half way through mid's silence
            if other != mid:
                self.h.beat("g", other, self.now + SESSION_S / 2)
        self.now += SESSION_S
        assert self.h.coord.expire(self.now) == [("g", mid)]
        assert self.h.coord.expire(self.now + 0.1) == []
        self.forget(mid)
        assert self.epoch() in (before + 1, 0)
        self.settle(rnd)

    @precondition(lambda self: self.static)
    @rule(data=st.data(), rnd=st.randoms(use_true_random=False))
    def static_restart(self, data: st.DataObject, rnd: random.Random) -> None:
        instance = data.draw(st.sampled_from(sorted(self.static)))
        old = self.static[instance]
        before, epoch = self.settled[old], self.epoch()
        self.now += 1.0
        answer = self.h.join("g", TOPICS, self.now, group_instance_id=instance)
        assert frozenset(answer.assignment) == before and self.epoch() == epoch
        del self.settled[old]
        self.h.told.pop(old)
        self.settled[answer.member_id] = before
        self.static[instance] = answer.member_id
        self.settle(rnd)
        assert self.epoch() == epoch

    @precondition(lambda self: sum(self.h.topics.values()) < 24)
    @rule(topic=st.sampled_from(TOPICS), more=st.integers(1, 4), rnd=st.randoms(use_true_random=False))
    def grow(self, topic: str, more: int, rnd: random.Random) -> None:
        before = self.epoch()
        self.h.topics[topic] += more
        bumped = self.h.coord.topics_changed()
        assert bumped == (["g"] if self.settled else [])
        assert self.epoch() == (before + 1 if self.settled else before)
        self.settle(rnd)

    def forget(self, mid: str) -> None:
        del self.settled[mid]
        self.h.told.pop(mid, None)
        for instance, member in list(self.static.items()):
            if member == mid:
                del self.static[instance]

    @invariant()
    def deadlines_match_members(self) -> None:
        group = self.h.coord._groups.get("g")
        members = set(group.members) if group is not None else set()
        assert {mid for _, _, mid in self.h.coord._deadlines} == members == set(self.settled)


TestGroupModel = GroupModel.TestCase
TestGroupModel.settings = settings(
    max_examples=150, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
