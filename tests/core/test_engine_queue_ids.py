# Message ids across a restart: the replayed messages keep theirs, and the new start mints ids with a new random
# part, so no id of the earlier run is given again (broker/core/queues/ids.py).
from __future__ import annotations

from millpond.broker.core.queues.api import CreateQueue, ReceiveMessages, SendEntry, SendMessage, SendMessageBatch

from enginekit import answer, make_engine


def test_ids_are_unique_across_restarts_and_replayed_messages_keep_theirs(tmp_path):
    sent: list[str] = []
    prefixes = set()
    for run in range(3):
        engine = make_engine(tmp_path, opened_at=float(run), fsync="never")
        answer(engine, CreateQueue("q"), float(run))
        prefixes.add(engine.queues.manager._ids.prefix)
        sent.append(answer(engine, SendMessage("q", b"run%d" % run), float(run)).message_id)
        batch = answer(engine, SendMessageBatch("q", tuple(SendEntry(str(i), b"b%d" % i) for i in range(10))),
                       float(run))
        assert [e.id for e in batch.successful] == [str(i) for i in range(10)] and not batch.failed
        sent.extend(e.message_id for e in batch.successful)
        engine.close()
    assert len(prefixes) == 3 and len(sent) == len(set(sent)) == 33
    engine = make_engine(tmp_path, opened_at=5.0, fsync="never")
    got = answer(engine, ReceiveMessages("q", max_messages=100), 5.0).messages
    assert [m.message_id for m in got] == sent
    engine.close()
