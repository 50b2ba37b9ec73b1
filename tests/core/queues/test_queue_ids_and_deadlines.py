# Message ids (broker/core/queues/ids.py: a UUID string, a random part per start and a counter) and the queues'
# timer: rescheduled once when the deadlines are read, not per message, and still exact, retention included.
from __future__ import annotations

import math
import re
import uuid

from millpond.broker.core.queues.ids import MessageIds

from queuekit import Kit

UUID_V8 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_ids_are_version_8_uuid_strings_counting_up_after_a_fixed_random_part():
    ids = MessageIds(random_bits=0x123456789ABCDEF)
    first, second = ids.next(), ids.next()
    assert (first, second) == ("12345678-9abc-8def-8000-000000000000", "12345678-9abc-8def-8000-000000000001")
    parsed = uuid.UUID(second)
    assert (parsed.version, parsed.variant, str(parsed)) == (8, uuid.RFC_4122, second)


def test_ids_of_one_start_never_repeat_and_each_start_draws_a_new_random_part():
    starts = [MessageIds() for _ in range(50)]
    assert len({s.prefix for s in starts}) == 50
    minted = [s.next() for s in starts for _ in range(200)]
    assert len(set(minted)) == len(minted) == 10_000
    assert all(UUID_V8.fullmatch(m) for m in minted)


def test_the_counter_rolling_over_draws_a_new_random_part_instead_of_repeating():
    ids = MessageIds(random_bits=5)
    ids._n = (1 << 62) - 1
    last, after = ids.next(), ids.next()
    assert last == "00000000-0000-8005-bfff-ffffffffffff"
    assert after.endswith("-8000-000000000000") and not after.startswith("00000000-0000-8005-")


def test_a_queue_manager_hands_out_its_ids_in_order_on_sends():
    kit = Kit()
    kit.create("q")
    mids = [kit.send("q", b"m%d" % i)[0] for i in range(3)]
    assert [m[-12:] for m in mids] == ["000000000000", "000000000001", "000000000002"]
    assert len({m[:19] for m in mids}) == 1
    assert [d.message_id for d in kit.receive("q", 1.0, 3)] == mids


def test_the_deadline_after_a_batch_of_changes_is_the_earliest_timer_left():
    kit = Kit()
    kit.create("q", visibility_timeout_s=10.0, retention_s=600.0)
    kit.create("r", delay_s=4.0, retention_s=700.0)
    assert kit.m.next_deadline() == math.inf
    for i in range(5):
        kit.send("q", b"m%d" % i, now=0.0, delay_s=float(5 - i))  # delays end at 5, 4, 3, 2, 1
    assert kit.m.next_deadline() == 1.0
    kit.send("r", b"x", now=0.5)  # visible at 4.5
    assert kit.m.next_deadline() == 1.0
    kit.m.tick(3.0)  # three delays ended
    assert sorted(kit.woken) == ["q"] and kit.m.next_deadline() == 4.0
    got = kit.receive("q", 3.0, 3)  # in flight until 13
    assert kit.m.next_deadline() == 4.0
    kit.m.tick(5.0)
    assert kit.m.next_deadline() == 13.0
    for d in got:
        kit.m.delete_message("q", d.receipt_handle, 6.0)
    assert kit.m.next_deadline() == 600.0  # what is left: retention of the two visible messages of q and r's
    kit.m.delete("q", 7.0)
    assert kit.m.next_deadline() == 700.5  # r's message, sent at 0.5, kept 700 s
    kit.m.tick(700.5)
    assert kit.counts("r", 700.5) == (0, 0, 0) and kit.m.next_deadline() == math.inf


def test_retention_after_many_deletes_is_exact():
    kit = Kit()
    q = kit.create("q", retention_s=100.0, visibility_timeout_s=1000.0)
    kit.send("q", b"first", now=0.0)
    kit.send("q", b"second", now=10.0)
    [first] = kit.receive("q", 11.0)
    kit.m.delete_message("q", first.receipt_handle, 11.0)
    assert kit.m.next_deadline() == 110.0  # the deleted message's retention is no deadline
    for i in range(0, 3000, 100):
        for j in range(100):
            kit.send("q", b"m%d" % (i + j), now=20.0)
        for d in kit.receive("q", 20.0, 100):
            kit.m.delete_message("q", d.receipt_handle, 20.0)
    kit.send("q", b"last", now=30.0)
    # each round took the oldest 100 ("second" in the first): m2999 (sent at 20) and "last" are left
    assert kit.counts("q", 30.0) == (2, 0, 0)
    assert kit.m.next_deadline() == 120.0
    kit.m.tick(119.9)
    assert kit.counts("q", 119.9) == (2, 0, 0)
    kit.m.tick(120.0)
    assert kit.counts("q", 120.0) == (1, 0, 0) and kit.m.next_deadline() == 130.0
    assert [d.body for d in kit.receive("q", 120.0)] == [b"last"]
    kit.m.tick(129.9)
    assert kit.counts("q", 129.9) == (0, 1, 0)
    kit.m.tick(130.0)  # retention ends in flight too
    assert kit.counts("q", 130.0) == (0, 0, 0) and kit.m.next_deadline() == math.inf
    assert len(q.messages) == 0
