# The blocking client against a broker subprocess over TCP, in real time: limit admin calls, and the threaded
# producer splitting a batch bigger than the burst and waiting out THROTTLED until everything is delivered in order.
from __future__ import annotations

import time

import pytest

from millpond.client.errors import UnknownPolicyError
from millpond.client.sync import connect

pytestmark = pytest.mark.slow


def test_the_blocking_producer_splits_and_waits_out_throttling(daemon):
    with connect(daemon, client_id="admin") as admin, connect(daemon, client_id="app-9") as app:
        admin.create_topic("t")
        applied = admin.set_limit("app", scope="client:app-*", unit="records", rate=1000, burst=100)
        assert (applied.scope, applied.pattern, applied.params) == ("client", "app-*", {"rate": 1000, "burst": 100})
        start = time.monotonic()
        with app.producer() as p:
            handles = [p.send("t", b"%d" % i, partition=0) for i in range(1500)]
        elapsed = time.monotonic() - start
        assert [h.result(0).offset for h in handles] == list(range(1500))
        # 100 records at once (the burst), then 1400 at 1000/s: 1.4 s; the upper bound allows a loaded machine
        assert 1.35 <= elapsed <= 3.0, elapsed
        s = p.statistics()
        assert s.records_failed == 0 and s.batches_split >= 1 and s.throttled >= 10
        stats = {x.name: x.stats for x in admin.list_limits()}["app"]
        assert stats.throttled == s.throttled and stats.throttled_by_key == {"app-9": s.throttled}
        admin.delete_limit("app")
        with pytest.raises(UnknownPolicyError):
            admin.delete_limit("app")
