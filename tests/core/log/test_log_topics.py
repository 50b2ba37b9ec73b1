# Topic names, topic config, creation, growth and deletion (contract suite, every storage), and for the file store
# metadata persistence, crashes mid-create/delete and the data directory lock.
from __future__ import annotations

import os

import pytest

from millpond.broker.config import TopicDefaults
from millpond.broker.core.log import LogManager, TopicConfig, validate_topic_name
from millpond.broker.wire.errors import (
    StorageError,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicNameError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from logkit import T0, append, value_at

BAD_NAMES = ["../x", "", "a" * 250, ".", "..", "a/b", "a b", "tópico", "x\x00", "~trash", None, 7, b"abc", ["a"]]


def topic_entries(env) -> list[str]:
    root = env.data_dir / "topics"
    return sorted(e for e in os.listdir(root) if not e.startswith("~")) if root.exists() else []


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_invalid_topic_name_is_refused_and_nothing_is_created(anyenv, name):
    env = anyenv
    manager = env.open()
    with pytest.raises(InvalidTopicNameError):
        validate_topic_name(name)
    with pytest.raises(InvalidTopicNameError):
        manager.create_topic(name, 1, None, T0)
    assert manager.topics == {}
    assert topic_entries(env) == []
    if env.files:
        assert os.listdir(env.data_dir / "topics" / "~staging") == []
    assert not (env.data_dir.parent / "x").exists()


def test_longest_name_and_every_allowed_character_are_accepted(anyenv):
    env = anyenv
    manager = env.open()
    long_name = "a" * 249
    manager.create_topic(long_name, 1, None, T0)
    manager.create_topic("Az09._-", 1, None, T0)
    manager.create_topic("...", 1, None, T0)  # only "." and ".." are reserved
    assert sorted(manager.topics) == sorted(["...", "Az09._-", long_name])
    append(manager.partition(long_name, 0), [b"v"])
    if not env.files:
        assert not env.data_dir.exists()  # memory storage writes nothing at all
        return
    assert topic_entries(env) == sorted(["...", "Az09._-", long_name])
    manager.close()
    reopened = env.open()
    assert sorted(reopened.topics) == sorted(["...", "Az09._-", long_name])
    assert value_at(reopened.partition(long_name, 0), 0) == b"v"


def test_topic_config_from_wire_applies_defaults_and_round_trips():
    defaults = TopicDefaults(retention_s=1, segment_bytes=4096)  # seconds in the config, ms on the wire
    config = TopicConfig.from_wire({"retention_bytes": 10_000, "segment_ms": 60_000}, defaults)
    assert config == TopicConfig(
        retention_ms=1000, retention_bytes=10_000, segment_bytes=4096, segment_ms=60_000, index_interval_bytes=4096
    )
    assert TopicConfig.from_wire(config.to_wire(), TopicDefaults()) == config
    assert TopicConfig.from_wire(None, defaults).retention_ms == 1000
    assert TopicConfig.from_wire({"retention_ms": -1, "retention_bytes": -1}, defaults).retention_ms == -1


@pytest.mark.parametrize(
    "config, key",
    [
        ({"retention.ms": 5}, "retention.ms"),
        ({"segment_bytes": 1023}, "segment_bytes"),
        ({"segment_bytes": 2**31}, "segment_bytes"),
        ({"segment_bytes": "big"}, "segment_bytes"),
        ({"segment_ms": 0}, "segment_ms"),
        ({"retention_ms": -2}, "retention_ms"),
        ({"retention_bytes": 1.5}, "retention_bytes"),
        ({"index_interval_bytes": True}, "index_interval_bytes"),
        ({"index_interval_bytes": -1}, "index_interval_bytes"),
    ],
)
def test_bad_topic_config_is_refused_naming_the_key(anyenv, config, key):
    env = anyenv
    with pytest.raises(InvalidConfigError) as info:
        TopicConfig.from_wire(config, TopicDefaults())
    assert key in info.value.message
    manager = env.open()
    with pytest.raises(InvalidConfigError):
        manager.create_topic("t", 1, config, T0)
    assert topic_entries(env) == []


def test_config_that_is_not_a_map_is_refused():
    with pytest.raises(InvalidConfigError):
        TopicConfig.from_wire([("segment_ms", 5)], TopicDefaults())  # type: ignore[arg-type]


@pytest.mark.parametrize("partitions", [0, -1, 9, True, "2", 1.0, None])
def test_partition_count_out_of_range_is_refused(anyenv, partitions):
    env = anyenv
    manager = env.open(partitions_max=8)
    with pytest.raises(InvalidPartitionsError):
        manager.create_topic("t", partitions, None, T0)
    assert topic_entries(env) == [] and manager.topics == {}


def test_create_existing_topic_is_refused(anyenv):
    manager = anyenv.open()
    manager.create_topic("t", 2, None, T0)
    with pytest.raises(TopicAlreadyExistsError):
        manager.create_topic("t", 1, None, T0)
    assert len(manager.topics["t"].partitions) == 2


def test_topic_metadata_survives_reopen(env):
    manager = env.open(retention_s=5)
    manager.create_topic("orders", 3, {"segment_bytes": 2048, "retention_bytes": 99_999}, T0)
    manager.create_topic("events", 1, None, T0)
    append(manager.partition("orders", 2), [b"a", b"b"])
    manager.close()
    manager.close()  # idempotent
    reopened = env.open(retention_s=0.001)  # the stored config wins over changed defaults
    orders = reopened.topics["orders"]
    assert orders.name == "orders"
    assert [p.partition for p in orders.partitions] == [0, 1, 2]
    assert orders.config == TopicConfig(
        retention_ms=5000, retention_bytes=99_999, segment_bytes=2048, segment_ms=TopicDefaults().to_wire()["segment_ms"],
        index_interval_bytes=4096,
    )
    assert reopened.topics["events"].config.retention_ms == 5000
    assert reopened.partition("orders", 2).log_end_offset == 2
    assert reopened.partition("orders", 0).log_end_offset == 0


def test_metadata_file_is_self_checking(env, caplog):
    manager = env.open()
    manager.create_topic("good", 1, None, T0)
    manager.create_topic("rotten", 1, None, T0)
    manager.close()
    meta = env.data_dir / "topics" / "rotten" / "topic.meta"
    raw = bytearray(meta.read_bytes())
    raw[5] ^= 0xFF
    meta.write_bytes(bytes(raw))
    reopened = env.open()
    assert sorted(reopened.topics) == ["good"]  # the damaged one is skipped (and logged), the broker still starts
    assert "rotten" in caplog.text
    assert meta.exists()  # its data is left alone for an operator


def test_partition_lookup_errors_name_the_valid_range(anyenv):
    manager = anyenv.open()
    manager.create_topic("t", 3, None, T0)
    assert manager.partition("t", 2).partition == 2
    for bad in (3, -1, "0", None):
        with pytest.raises(UnknownTopicOrPartitionError) as info:
            manager.partition("t", bad)
        assert "0..2" in info.value.message
    with pytest.raises(UnknownTopicOrPartitionError) as info:
        manager.partition("nope", 0)
    assert "nope" in info.value.message


def test_delete_removes_files_and_stays_deleted_after_reopen(anyenv):
    env = anyenv
    manager = env.open()
    manager.create_topic("gone", 2, {"segment_bytes": 1024}, T0)
    manager.create_topic("kept", 1, None, T0)
    log = manager.partition("gone", 0)
    for _ in range(30):
        append(log, [b"x" * 100])
    assert log.segment_count > 1
    manager.delete_topic("gone")
    assert "gone" not in manager.topics
    if env.files:
        assert topic_entries(env) == ["kept"]
        assert os.listdir(env.data_dir / "topics" / "~trash") == []
    with pytest.raises(UnknownTopicOrPartitionError):
        manager.partition("gone", 0)
    with pytest.raises(UnknownTopicOrPartitionError):
        manager.delete_topic("gone")
    with pytest.raises(StorageError):
        append(log, [b"late"])  # a deleted partition refuses what its holders still try
    if not env.files:
        assert manager.create_topic("gone", 1, None, T0).partitions[0].log_end_offset == 0
        return
    manager.close()
    reopened = env.open()
    assert sorted(reopened.topics) == ["kept"]
    recreated = reopened.create_topic("gone", 1, None, T0)  # a fresh topic starts at offset 0 again
    assert recreated.partitions[0].log_end_offset == 0


def test_crash_after_delete_rename_finishes_the_delete_on_open(env):
    manager = env.open()
    manager.create_topic("t", 1, None, T0)
    append(manager.partition("t", 0), [b"x"])
    env.crash(manager)
    os.rename(env.data_dir / "topics" / "t", env.data_dir / "topics" / "~trash" / "0")  # crashed right here
    reopened = env.open()
    assert reopened.topics == {}
    assert os.listdir(env.data_dir / "topics" / "~trash") == []


def test_crash_during_create_leaves_no_topic(env):
    manager = env.open()
    env.crash(manager)
    half = env.data_dir / "topics" / "~staging" / "0" / "0"
    half.mkdir(parents=True)
    (half / f"{0:020d}.log").write_bytes(b"")
    reopened = env.open()
    assert reopened.topics == {}
    assert os.listdir(env.data_dir / "topics" / "~staging") == []


def test_add_partitions_keeps_records_and_survives_reopen(anyenv):
    env = anyenv
    m = env.open()
    m.create_topic("grow", 2, None, T0)
    append(m.partition("grow", 1), [b"a", b"b"])
    m.add_partitions("grow", 5, T0)
    assert [len(m.topics["grow"].partitions), m.partition("grow", 4).log_end_offset] == [5, 0]
    assert append(m.partition("grow", 4), [b"new"]) == 0
    assert value_at(m.partition("grow", 1), 1) == b"b"
    if not env.files:
        return
    env.crash(m)
    again = env.open()
    assert len(again.topics["grow"].partitions) == 5
    assert value_at(again.partition("grow", 1), 1) == b"b"
    assert value_at(again.partition("grow", 4), 0) == b"new"


@pytest.mark.parametrize("total", [2, 1, 9, "3"])
def test_add_partitions_refuses_a_total_that_does_not_grow_or_is_too_large(anyenv, total):
    env = anyenv
    m = env.open(partitions_max=8)
    m.create_topic("grow", 2, None, T0)
    with pytest.raises(InvalidPartitionsError, match="new total must be from 3 to 8"):
        m.add_partitions("grow", total, T0)
    assert len(m.topics["grow"].partitions) == 2
    assert not env.files or sorted(p.name for p in (env.data_dir / "topics" / "grow").iterdir() if p.is_dir()) == ["0", "1"]


def test_a_second_broker_cannot_open_a_data_directory_in_use(env, tmp_path):
    first = env.open()
    second = LogManager(env.data_dir, defaults=TopicDefaults(), batch_bytes_max=1 << 20, partitions_max=8,
                        fsync_mode="never")
    with pytest.raises(StorageError, match=rf"in use by another broker \(pid {os.getpid()}\)"):
        second.open(T0)
    first.close()
    third = LogManager(env.data_dir, defaults=TopicDefaults(), batch_bytes_max=1 << 20, partitions_max=8,
                       fsync_mode="never")
    third.open(T0)  # released by close (and by the OS when a broker dies)
    third.close()


def test_the_log_says_a_created_topics_config_in_seconds(anyenv, caplog):
    # seconds in everything a person reads (DESIGN); milliseconds only on the wire and in topic.json
    assert TopicConfig(604_800_000, -1, 1 << 30, 1_500, 4096).describe() == (
        "retention_s=604800, retention_bytes=-1, segment_bytes=1073741824, segment_s=1.5, index_interval_bytes=4096")
    assert TopicConfig(-1, 10, 1024, 1, 0).describe().startswith("retention_s=-1, retention_bytes=10, ")
    manager = anyenv.open()
    with caplog.at_level("INFO", logger="millpond"):
        manager.create_topic("t", 2, {"retention_ms": 3_600_000}, T0)
    [line] = [r.getMessage() for r in caplog.records if "created topic" in r.getMessage()]
    assert "retention_s=3600," in line and "_ms" not in line
