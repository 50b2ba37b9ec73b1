# The coverage-guided fuzzer (tests/fuzz/fuzz_native.py) runs for a bounded time in CI and finds nothing: libFuzzer
# exits 0 when no input crashed the codec or the engine, and writes the crashing input otherwise (named in the
# assertion). A longer run: python tests/fuzz/fuzz_native.py -max_total_time=600.
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ_S = 20  # seconds of fuzzing in CI


@pytest.mark.timeout(FUZZ_S + 120)
def test_the_native_front_door_and_the_engine_survive_coverage_guided_input(tmp_path):
    pytest.importorskip("atheris", reason="atheris is installed with the test extra on Linux only")
    script = Path(__file__).with_name("fuzz_native.py")
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(
        [sys.executable, str(script), f"-max_total_time={FUZZ_S}", "-seed=1", f"-artifact_prefix={tmp_path}/",
         "-print_final_stats=1"], capture_output=True, text=True, env=env, timeout=FUZZ_S + 100)
    crashes = sorted(p.name for p in tmp_path.iterdir())
    assert proc.returncode == 0 and not crashes, (crashes, proc.stderr[-4000:])
    runs = [line for line in proc.stderr.splitlines() if line.startswith("stat::number_of_executed_units:")]
    assert runs and int(runs[0].split(":")[-1]) > 1000, proc.stderr[-2000:]  # it ran, not just started
