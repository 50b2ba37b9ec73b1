# A topic creation that fails leaves nothing on disk and the broker starts afterwards (issue 10 finding 7): under a
# low open-file limit a topic of 1,024 partitions cannot have its partitions open; the creation answers
# STORAGE_ERROR, its directory is gone, the broker keeps serving, stops and starts again under the same limit, and
# a smaller topic of that name can then be created. Growing a topic past the limit is undone the same way.
from __future__ import annotations

import sys

import pytest

from millpond.client.errors import StorageError
from millpond.client.sync import connect

from tests.daemon.test_hostile_daemon import start_limited

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ulimit -n")]

NOFILE = (256, 256)


def topic_dirs(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "data" / "topics").iterdir() if not p.name.startswith(("~", "__")))


def leftovers(tmp_path) -> list[str]:
    topics = tmp_path / "data" / "topics"
    return sorted(str(p.relative_to(topics)) for sub in ("~staging", "~trash") for p in (topics / sub).iterdir())


def test_a_creation_past_the_open_file_limit_is_undone_and_the_broker_starts_again(tmp_path):
    proc, port, log = start_limited(tmp_path, NOFILE)
    try:
        with connect(f"127.0.0.1:{port}", client_id="admin") as c:
            c.create_topic("small", partitions=2)
            with pytest.raises(StorageError, match="big"):
                c.create_topic("big", partitions=1024)
            assert topic_dirs(tmp_path) == ["small"] and leftovers(tmp_path) == []
            assert [t for t in c.list_topics() if not t.startswith("__")] == ["small"]
            with pytest.raises(StorageError, match="small"):
                c.add_partitions("small", 1024)
            assert len(c.describe_topic("small").partitions) == 2
            assert sorted(p.name for p in (tmp_path / "data" / "topics" / "small").iterdir()) == \
                ["0", "1", "topic.meta"]
            with c.producer() as producer:
                producer.send("small", b"still-served", partition=1)
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
        proc.stdout.close()
    text = log.read_text()
    assert "big" in text and "Too many open files" in text  # the failure is in the broker's log too
    proc, port, log = start_limited(tmp_path, NOFILE)  # the same limit: it starts
    try:
        with connect(f"127.0.0.1:{port}", client_id="admin") as c:
            assert [t for t in c.list_topics() if not t.startswith("__")] == ["small"] and len(c.describe_topic("small").partitions) == 2
            c.create_topic("big", partitions=8)
            assert topic_dirs(tmp_path) == ["big", "small"]
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
        proc.stdout.close()

