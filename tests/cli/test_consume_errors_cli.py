# `millpond consume` and `produce` failing before anything was read say only the error (no "consumed 0 records"
# line beside it); a missing topic gets the same advice from both, a partition the topic lacks is caught up front.
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


def test_produce_to_a_partition_the_topic_lacks_is_one_line_before_reading(daemon):
    assert mp("topics", "create", "edge", "--partitions", "2", "-b", daemon).returncode == 0
    r = mp("produce", "edge", "-p", "5", "-b", daemon, stdin=b"x\n")
    assert r.returncode == 1
    assert r.stderr.decode().splitlines() == [
        "millpond produce: topic 'edge' has partitions 0-1, not 5 (add some with: millpond topics add-partitions "
        "edge --partitions N)"]


@pytest.mark.parametrize("n", ["0", "-1", "x"])
def test_max_takes_one_or_more(daemon, n):
    r = mp("consume", "t", "--max", n, "-b", daemon)
    assert r.returncode == 2 and b"usage: millpond consume" in r.stderr and b"--max" in r.stderr, r.stderr


def test_an_offset_out_of_range_is_said_and_reading_starts_at_the_nearest_end(daemon):
    assert mp("topics", "create", "few", "-b", daemon).returncode == 0
    assert mp("produce", "few", "-b", daemon, stdin=b"a\nb\nc\n").returncode == 0
    r = mp("consume", "few", "-o", "5000000", "-e", "-b", daemon)
    assert r.returncode == 0 and r.stdout == b""
    assert "millpond consume: offset 5000000 is out of range: few/0 ends at 3; reading from there" in \
        r.stderr.decode().splitlines()
    r = mp("consume", "few", "-o", "1", "-e", "-b", daemon)  # in range: nothing said
    assert r.stdout == b"b\nc\n" and b"out of range" not in r.stderr
