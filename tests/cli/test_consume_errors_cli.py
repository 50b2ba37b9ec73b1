# `millpond consume` failing before it read anything says only the error (no "consumed 0 records" line before or
# after it), and a missing topic gets the same advice as `produce` gives.
from __future__ import annotations

import pytest

from clikit import mp

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("extra", [[], ["--group", "g"], ["-e"], ["-o", "beginning", "-e"]])
def test_a_missing_topic_is_one_line_with_what_to_do(daemon, extra):
    r = mp("consume", "nosuch", *extra, "-b", daemon)
    assert r.returncode == 1
    assert r.stderr.decode().splitlines() == [
        "millpond consume: topic 'nosuch' does not exist (create it with: millpond topics create nosuch)"]


def test_a_usage_error_is_not_followed_by_a_summary(daemon):
    assert mp("topics", "create", "t", "-b", daemon).returncode == 0
    r = mp("consume", "t", "--group", "g", "-o", "-2", "-b", daemon)
    assert r.returncode != 0 and b"consumed" not in r.stderr, r.stderr
