# A topic creation or growth that fails at any point leaves nothing behind and the next start is clean (issue 10
# finding 7), and storage failures are logged, once per episode (finding 9). File storage; literal times; failures
# injected at each step: making the partitions' directories, opening partition k, marking the creation final,
# and a crash after the rename (the creation never answered: the next start removes it).
from __future__ import annotations

import errno
import logging
import os

import pytest

from millpond.broker.core.log import file_store, file_topics
from millpond.broker.core.log.file_store import FilePartitionStore
from millpond.broker.wire.errors import StorageError

from logkit import T0, append, value_at

EMFILE = OSError(errno.EMFILE, os.strerror(errno.EMFILE))
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def on_disk(env) -> list[str]:
    """Every path under topics/ but the internal names, relative."""
    root = env.data_dir / "topics"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name not in ("~staging", "~trash"))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fail_on_call(monkeypatch, owner, name: str, k: int, error: OSError) -> None:
    """Make ``owner.name`` raise ``error`` on its k-th call (1-based), as one failing step."""
    real = getattr(owner, name)
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == k:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)


@pytest.mark.parametrize("point, k", [("dirs", 1), ("dirs", 3), ("open", 1), ("open", 4), ("created", 1)])
def test_a_failed_creation_leaves_nothing_and_the_name_free(env, monkeypatch, caplog, point, k):
    m = env.open()
    m.create_topic("keep", 1, None, T0)
    before_fds, before = open_fds(), on_disk(env)
    with monkeypatch.context() as patch:
        if point == "dirs":
            fail_on_call(patch, file_topics, "write_file", k, ENOSPC)
        elif point == "open":
            fail_on_call(patch, FilePartitionStore, "open", k, EMFILE)
        else:
            fail_on_call(patch, file_topics.os, "unlink", k, ENOSPC)
        with pytest.raises(StorageError, match="cannot create topic 'big'") as info:
            m.create_topic("big", 6, None, T0)
    assert os.strerror((ENOSPC if point != "open" else EMFILE).errno) in info.value.message
    assert on_disk(env) == before and open_fds() == before_fds
    assert sorted(m.topics) == ["keep"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "'big'" in r.getMessage()]
    assert len(errors) == 1  # the failure is in the log, not only in the answer
    m.create_topic("big", 2, None, T0)  # the name is free
    append(m.partition("big", 1), [b"v"])
    m.close()
    again = env.open()
    assert sorted(again.topics) == ["big", "keep"] and value_at(again.partition("big", 1), 0) == b"v"


def test_a_creation_cut_by_a_crash_after_the_rename_is_removed_at_the_next_start(env, monkeypatch, caplog):
    m = env.open()
    with monkeypatch.context() as patch:  # open fails, and so does the removal: the marker stays, as after a crash
        fail_on_call(patch, FilePartitionStore, "open", 2, EMFILE)
        fail_on_call(patch, file_topics.os, "rename", 2, ENOSPC)
        with pytest.raises(StorageError):
            m.create_topic("half", 3, None, T0)
    assert (env.data_dir / "topics" / "half" / file_topics.CREATING).exists()
    env.crash(m)
    again = env.open()
    assert "half" not in again.topics and on_disk(env) == []
    assert any("removing topic half: its creation did not finish" in r.getMessage() for r in caplog.records)
    again.create_topic("half", 1, None, T0)


@pytest.mark.parametrize("k", [1, 2])
def test_growth_whose_partitions_cannot_open_is_undone(env, monkeypatch, k):
    m = env.open()
    m.create_topic("t", 2, None, T0)
    append(m.partition("t", 0), [b"kept"])
    before = on_disk(env)
    with monkeypatch.context() as patch:
        fail_on_call(patch, FilePartitionStore, "open", k, EMFILE)
        with pytest.raises(StorageError, match="cannot add partitions to topic 't'"):
            m.add_partitions("t", 5, T0)
    assert len(m.topics["t"].partitions) == 2 and on_disk(env) == before
    m.close()
    again = env.open()
    assert len(again.topics["t"].partitions) == 2 and value_at(again.partition("t", 0), 0) == b"kept"
    again.add_partitions("t", 5, T0)
    assert len(again.topics["t"].partitions) == 5


# -- finding 9: a negative retention other than -1 is refused, never read as "forever" ---------------------------
@pytest.mark.parametrize("key, wire_key, scale", [("retention_s", "retention_ms", 1000),
                                                  ("retention_bytes", "retention_bytes", 1)])
@pytest.mark.parametrize("value, ok", [(-1, True), (0, True), (5, True), (-2, False), (-5000, False)])
def test_retention_below_minus_one_is_refused_everywhere_it_is_given(tmp_path, key, wire_key, scale, value, ok):
    from millpond.broker.config import TopicDefaults, load_config
    from millpond.broker.core.log.topic_config import TopicConfig
    from millpond.broker.wire.errors import InvalidConfigError

    config = tmp_path / "m.toml"
    config.write_text(f"[topic_defaults]\n{key} = {value}\n")
    wire = value if value == -1 else value * scale
    if ok:
        assert getattr(load_config(config).topic_defaults, key) == value
        assert getattr(TopicConfig.from_wire(None, load_config(config).topic_defaults), wire_key) == wire
        assert getattr(TopicConfig.from_wire({wire_key: wire}, TopicDefaults()), wire_key) == wire
        return
    with pytest.raises(InvalidConfigError, match=f"topic_defaults.{key} must be >= 0.*-1"):
        load_config(config)
    with pytest.raises(InvalidConfigError, match=f"topic config {wire_key} must be >= 0, or -1 for no limit"):
        TopicConfig.from_wire({wire_key: wire}, TopicDefaults())


@pytest.mark.parametrize("field, value, words", [
    ("retention_s", -5, "retention_s must be >= 0 seconds, or -1 to keep forever, got -5"),
    ("retention_s", -0.5, "retention_s must be >= 0 seconds, or -1 to keep forever, got -0.5"),
    ("segment_s", -1, "segment_s must be >= 0 seconds, got -1"),
])
def test_the_client_refuses_negative_seconds_instead_of_meaning_forever(field, value, words):
    from millpond.client._protocol import create_topic_body
    from millpond.client.errors import InvalidConfigError

    args = {"retention_s": None, "retention_bytes": None, "segment_bytes": None, "segment_s": None, field: value}
    with pytest.raises(InvalidConfigError, match=words):
        create_topic_body("t", 1, **args)
    assert create_topic_body("t", 1, -1, None, None, 2)["config"] == {"retention_ms": -1, "segment_ms": 2000}


@pytest.mark.parametrize("bad, words", [({"segment_bytes": 5}, "segment_bytes must be >= 1024"),
                                        ({"partitions": 0}, "partitions must be >= 1"),
                                        ({"segment_s": 0}, "segment_s must be >= 0.001 seconds"),
                                        ({"retention_s": "forever"}, "retention_s must be a number of seconds")])
def test_topic_defaults_are_checked_when_the_config_loads(bad, words):
    from millpond.broker.config import load_config
    from millpond.broker.wire.errors import InvalidConfigError

    with pytest.raises(InvalidConfigError, match=f"topic_defaults.{words}"):
        load_config(None, topic_defaults=bad)
