# README.md stays true: its config example loads (limit policies included), and the commands it shows exist.
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from millpond.broker.cli import build_parser
from millpond.broker.config import load_config
from millpond.broker.core.engine import Engine
from millpond.broker.core.outcomes import Context

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_the_config_example_is_a_valid_config(tmp_path):
    block = re.search(r"```toml\n(.*?)```", README, re.S).group(1)
    path = tmp_path / "millpond.toml"
    path.write_text(block)
    config = load_config(path, data_dir=str(tmp_path / "data"))
    assert config.fsync == "always" and config.default_limit_records_per_s == 5_000_000
    assert [p["name"] for p in config.limits] == ["ingest"]
    engine = Engine.for_directory(config, tmp_path / "data")
    engine.open(Context(1_700_000_000_000, 0.0))
    try:
        assert sorted(p.name for p in engine.limits.policies.policies()) == ["default", "ingest"]
    finally:
        engine.close()
    assert tomllib.loads(block)["topic_defaults"]["segment_bytes"] == 67108864
    assert (config.fsync_interval_s, config.topic_defaults.retention_s, config.topic_defaults.segment_s) == (
        0.1, 604_800, 604_800)


def test_every_millpond_command_in_the_readme_parses():
    commands = re.findall(r"^(millpond [^#\n]*?)\s*(?:#.*)?$", README, re.M)
    assert len(commands) >= 15
    for line in commands:
        words = [w.strip("'") for w in line.split("<")[0].split()[1:]]
        args = build_parser().parse_args(words)  # argparse exits (SystemExit) on an unknown command or flag
        # and it is the command the line names, dispatched to its handler
        assert args.command == words[0] and callable(args.func), line
        if hasattr(args, "action"):  # a command with subcommands: topics create, groups list, ...
            assert args.action == words[1], line


def test_the_embedded_example_runs_as_written(tmp_path):
    import subprocess
    import sys

    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    embedded = next(b for b in blocks if "open_broker" in b)
    script = tmp_path / "embedded.py"
    script.write_text(embedded)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # and quietly: no warning, no log line
