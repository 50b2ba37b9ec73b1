# Topic creation, growth and deletion in two phases (begin on the loop, build in a worker thread, finish on the
# loop): what a reserved name refuses meanwhile, that nothing blocking happens on the caller's thread, and failures
# releasing the name (or, for a delete, bringing the topic back).
from __future__ import annotations

import errno
import os
import threading

import pytest

from millpond.broker.wire.errors import (
    StorageError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from logkit import T0, append, flush, value_at


def in_thread(work):
    """``work()`` in a worker thread, as the server runs it: its result or the exception it raised."""
    out = []

    def run():
        try:
            out.append(work())
        except Exception as exc:
            out.append(exc)

    t = threading.Thread(target=run, name="worker")
    t.start()
    t.join()
    return out[0]


@pytest.fixture
def fsyncs(monkeypatch):
    """Names of the threads that called os.fsync/os.fdatasync."""
    calls: list[str] = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda fd, real=real: calls.append(threading.current_thread().name) or real(fd))
    return calls


def test_a_pending_creation_reserves_the_name_with_no_io(anyenv, fsyncs):
    manager = anyenv.open()
    pending = manager.begin_create_topic("t", 2, {"segment_bytes": 2048}, T0)
    assert pending.blocking == anyenv.files
    assert "t" not in manager.topics
    if anyenv.files:
        assert not (anyenv.data_dir / "topics" / "t").exists()
        assert os.listdir(anyenv.data_dir / "topics" / "~staging") == []
    with pytest.raises(TopicAlreadyExistsError, match="being created"):
        manager.begin_create_topic("t", 1, None, T0)
    with pytest.raises(UnknownTopicOrPartitionError, match="being created"):
        manager.begin_delete_topic("t")
    with pytest.raises(UnknownTopicOrPartitionError, match="being created"):
        manager.begin_add_partitions("t", 3, T0)
    assert fsyncs == []
    topic = manager.finish_create_topic(pending, in_thread(pending.build))
    assert set(fsyncs) <= {"worker"} and (fsyncs != []) == anyenv.files
    assert manager.topics["t"] is topic and len(topic.partitions) == 2
    assert topic.config.segment_bytes == 2048
    assert append(manager.partition("t", 1), [b"a"]) == 0
    with pytest.raises(TopicAlreadyExistsError, match="already exists"):
        manager.begin_create_topic("t", 1, None, T0)


def test_a_failed_creation_releases_the_name(env, monkeypatch):
    manager = env.open()
    pending = manager.begin_create_topic("t", 1, None, T0)
    monkeypatch.setattr(os, "rename", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    result = in_thread(pending.build)
    monkeypatch.undo()
    assert isinstance(result, StorageError)
    with pytest.raises(StorageError, match="cannot create topic 't'"):
        manager.finish_create_topic(pending, result)
    assert "t" not in manager.topics and os.listdir(env.data_dir / "topics" / "~staging") == []
    again = manager.begin_create_topic("t", 1, None, T0)  # the name is free again
    with pytest.raises(StorageError, match="Input/output"):  # a bare OSError from a build becomes a StorageError
        manager.finish_create_topic(again, OSError(errno.EIO, "Input/output error"))
    assert manager.create_topic("t", 1, None, T0).name == "t"


def test_a_pending_deletion_hides_the_topic_at_once_and_keeps_the_name(anyenv, fsyncs):
    env = anyenv
    manager = env.open(fsync_mode="always")
    manager.create_topic("t", 2, None, T0)
    log = manager.partition("t", 0)
    append(log, [b"a"])
    plan = manager.sync_plan()  # built before the deletion began
    fsyncs.clear()
    pending = manager.begin_delete_topic("t")
    assert "t" not in manager.topics
    with pytest.raises(StorageError):
        append(log, [b"b"])  # whoever still holds a partition is refused
    with pytest.raises(StorageError):
        log.read(0, 100)
    assert manager.sync_plan() is None  # nothing of a topic being deleted is synced
    with pytest.raises(TopicAlreadyExistsError, match="being deleted"):
        manager.begin_create_topic("t", 1, None, T0)
    with pytest.raises(UnknownTopicOrPartitionError):
        manager.begin_delete_topic("t")
    assert fsyncs == []
    if plan is not None:
        assert manager.synced(plan, in_thread(plan.run)) == []  # an older plan still runs; nothing to mark
    assert manager.finish_delete_topic(pending, in_thread(pending.build)) is None
    assert set(fsyncs) <= {"worker"}
    if env.files:
        assert not (env.data_dir / "topics" / "t").exists()
        assert os.listdir(env.data_dir / "topics" / "~trash") == []
    assert manager.create_topic("t", 1, None, T0).partitions[0].log_end_offset == 0


def test_a_failed_deletion_brings_the_topic_back(env, monkeypatch):
    manager = env.open(fsync_mode="always")
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    append(log, [b"a"])
    pending = manager.begin_delete_topic("t")
    monkeypatch.setattr(os, "rename", lambda *a: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only")))
    result = in_thread(pending.build)
    monkeypatch.undo()
    with pytest.raises(StorageError, match="cannot delete topic 't'"):
        manager.finish_delete_topic(pending, result)
    assert manager.partition("t", 0) is log
    assert append(log, [b"b"]) == 1 and value_at(log, 0) == b"a"
    assert flush(manager) == [log] and log.high_watermark == 2  # synced again like any partition
    manager.delete_topic("t")
    assert "t" not in manager.topics


def test_a_pending_growth_refuses_other_changes_of_the_topic(anyenv):
    manager = anyenv.open()
    manager.create_topic("t", 1, None, T0)
    pending = manager.begin_add_partitions("t", 3, T0)
    assert len(manager.topics["t"].partitions) == 1  # visible once finished
    with pytest.raises(StorageError, match="getting partitions") as info:
        manager.begin_add_partitions("t", 4, T0)
    assert info.value.retriable
    with pytest.raises(StorageError, match="getting partitions"):
        manager.begin_delete_topic("t")
    with pytest.raises(TopicAlreadyExistsError):
        manager.begin_create_topic("t", 1, None, T0)
    topic = manager.finish_add_partitions(pending, in_thread(pending.build))
    assert [p.partition for p in topic.partitions] == [0, 1, 2]
    assert append(manager.partition("t", 2), [b"x"]) == 0
    manager.add_partitions("t", 4, T0)  # free again
    assert len(manager.topics["t"].partitions) == 4


def test_a_failed_growth_changes_nothing(env, monkeypatch):
    manager = env.open()
    manager.create_topic("t", 1, None, T0)
    pending = manager.begin_add_partitions("t", 2, T0)
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    result = in_thread(pending.build)
    monkeypatch.undo()
    with pytest.raises(StorageError, match="cannot add partitions"):
        manager.finish_add_partitions(pending, result)
    assert len(manager.topics["t"].partitions) == 1
    env.crash(manager)
    assert len(env.open().topics["t"].partitions) == 1  # the metadata still says one
