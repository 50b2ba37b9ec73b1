# Broker configuration keys: durations in seconds (float) with the unit in the name; the old millisecond keys are
# refused wherever a key is given (config file, keyword arguments, serve's --config) with a message naming the new one.
from __future__ import annotations

import subprocess
import sys

import pytest

from millpond.broker.config import RENAMED_KEYS, BrokerConfig, TopicDefaults, load_config
from millpond.broker.core.log.topic_config import TopicConfig
from millpond.broker.wire.errors import InvalidConfigError

# (table, old key, old value in ms, new key, the value the message suggests)
OLD_KEYS = [
    ("", "fsync_interval_ms", 250, "fsync_interval_s", "0.25"),
    ("", "retention_check_interval_ms", 60_000, "retention_check_interval_s", "60"),
    ("topic_defaults", "retention_ms", 604_800_000, "retention_s", "604800"),
    ("topic_defaults", "retention_ms", -1, "retention_s", "-1"),
    ("topic_defaults", "segment_ms", 1500, "segment_s", "1.5"),
]


def test_every_renamed_key_is_listed():
    assert {(t, old, new) for t, old, _, new, _ in OLD_KEYS} >= {
        ("topic_defaults" if old in ("retention_ms", "segment_ms") else "", old, new)
        for old, new in RENAMED_KEYS.items()}


def _message(table: str, old: str, new: str, shown: str) -> str:
    where = f"{table}." if table else ""
    return (f"config key '{where}{old}' (milliseconds) is now '{where}{new}', in seconds (a float): "
            f"e.g. {where}{new} = {shown}")


@pytest.mark.parametrize("table, old, value, new, shown", OLD_KEYS)
def test_an_old_millisecond_key_in_a_config_file_names_its_new_one(tmp_path, table, old, value, new, shown):
    path = tmp_path / "millpond.toml"
    path.write_text((f"[{table}]\n" if table else "") + f"{old} = {value}\n")
    with pytest.raises(InvalidConfigError) as info:
        load_config(path)
    assert info.value.message == _message(table, old, new, shown)


@pytest.mark.parametrize("table, old, value, new, shown", OLD_KEYS)
def test_an_old_millisecond_keyword_names_its_new_one(table, old, value, new, shown):
    kwargs = {table: {old: value}} if table else {old: value}
    with pytest.raises(InvalidConfigError) as info:
        load_config(None, **kwargs)
    assert info.value.message == _message(table, old, new, shown)


def test_run_broker_refuses_an_old_key_naming_the_new_one():
    from millpond import run_broker

    with pytest.raises(InvalidConfigError, match="'fsync_interval_ms' \\(milliseconds\\) is now 'fsync_interval_s'"):
        run_broker(fsync="interval", fsync_interval_ms=50)


def test_serve_refuses_an_old_key_in_its_config_file(tmp_path):
    path = tmp_path / "millpond.toml"
    path.write_text("fsync_interval_ms = 100\n")
    r = subprocess.run([sys.executable, "-m", "millpond.broker.cli", "serve", "--data-dir", str(tmp_path / "d"),
                        "--config", str(path)], capture_output=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.decode() == "millpond serve: " + _message("", "fsync_interval_ms", "fsync_interval_s", "0.1") + "\n"
    assert not (tmp_path / "d").exists()


def test_seconds_keys_load_and_reach_the_wire_in_milliseconds(tmp_path):
    path = tmp_path / "millpond.toml"
    path.write_text("fsync = \"interval\"\nfsync_interval_s = 0.25\nretention_check_interval_s = 1.5\n"
                    "[topic_defaults]\nretention_s = 3600.5\nsegment_s = 0.75\n")
    config = load_config(path)
    assert (config.fsync_interval_s, config.retention_check_interval_s) == (0.25, 1.5)
    assert (config.topic_defaults.retention_s, config.topic_defaults.segment_s) == (3600.5, 0.75)
    topic = TopicConfig.from_wire(None, config.topic_defaults)
    assert (topic.retention_ms, topic.segment_ms) == (3_600_500, 750)
    assert TopicConfig.from_wire(None, TopicDefaults(retention_s=-1)).retention_ms == -1
    assert TopicDefaults().to_wire()["retention_ms"] == 7 * 86_400_000  # Kafka's default, a week


@pytest.mark.parametrize("changes, words", [
    ({"fsync_interval_s": 0}, "fsync_interval_s must be >= 0.001 seconds, got 0"),
    ({"fsync_interval_s": "1"}, "fsync_interval_s must be a number, got '1'"),
    ({"retention_check_interval_s": -1.0}, "retention_check_interval_s must be >= 0.001 seconds, got -1.0"),
    ({"topic_defaults": {"retention_s": -0.5}}, "topic_defaults.retention_s must be >= 0 seconds, or -1 to keep "
                                                "forever, got -0.5"),
    ({"topic_defaults": {"segment_s": 0.0001}}, "topic_defaults.segment_s must be >= 0.001 seconds, got 0.0001"),
])
def test_bad_seconds_are_refused_naming_the_key(changes, words):
    with pytest.raises(InvalidConfigError) as info:
        load_config(None, **changes)
    assert info.value.message == words


def test_the_python_defaults_are_seconds():
    config = BrokerConfig()
    assert (config.fsync_interval_s, config.retention_check_interval_s) == (0.1, 60.0)
    assert (config.topic_defaults.retention_s, config.topic_defaults.segment_s) == (604_800.0, 604_800.0)


@pytest.mark.parametrize("table, old, value, new, shown", OLD_KEYS)
def test_an_old_millisecond_keyword_of_the_config_classes_names_its_new_one(table, old, value, new, shown):
    cls = TopicDefaults if table else BrokerConfig
    for make in (lambda: cls(**{old: value}), lambda: cls().replace(**{old: value}) if cls is BrokerConfig
                 else cls(**{old: value})):
        with pytest.raises(InvalidConfigError) as info:
            make()
        assert info.value.message == _message(table, old, new, shown)
