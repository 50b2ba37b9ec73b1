# Issue 9's spread goal: keyed produce over many partitions against over one, measured side by side in one run
# (`millpond bench produce --keys N --partitions 1,64`) and judged on the ratio of the two rows' medians.
from __future__ import annotations

import pytest

from millpond.bench import cli, report

from tests.bench.test_send_await_and_revisions import _row


def _keyed(partitions, fsync, per_repeat, keys=1000):
    rows = _row("millpond", "produce", 100, fsync, per_repeat)
    for r in rows:
        r.update(partitions=partitions, keys=keys, step=f"millpond produce 100 B keys={keys:,} "
                                                         f"partitions={partitions} fsync={fsync}")
    return rows


def test_several_partition_counts_make_one_step_each_per_fsync_mode_in_turn():
    args = cli.build_parser().parse_args(["produce", "--keys", "1000", "--partitions", "1,64",
                                          "--fsync", "never,always"])
    steps, _ = cli.plan(args)
    assert [(s.params.fsync, s.params.partitions, s.params.keys) for s in steps] == [
        ("never", 1, 1000), ("never", 64, 1000), ("always", 1, 1000), ("always", 64, 1000)]
    assert steps[1].label() == "produce 100 B keys=1,000 partitions=64 fsync=never"
    (one,), _ = cli.plan(cli.build_parser().parse_args(["produce", "--partitions", "8"]))
    assert one.params.partitions == 8


@pytest.mark.parametrize("argv, why", [
    (["produce", "--partitions", "0,4"], "partition counts are integers >= 1, comma-separated; got '0,4'"),
    (["produce", "--partitions", "x"], "partition counts are integers >= 1, comma-separated; got 'x'"),
    (["quick", "--partitions", "1,64"], "several --partitions go with a single workload, e.g. `millpond bench produce "
                                        "--keys 1000 --partitions 1,64`"),
])
def test_bad_partition_counts_are_bad_usage_naming_the_fault(capsys, argv, why):
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own usage error
        code = exc.code
    assert code == 2
    assert why in capsys.readouterr().err


def test_the_spread_goal_is_the_ratio_of_the_keyed_rows_medians_at_each_fsync_mode():
    summary = report.summarize(
        _keyed(1, "never", [100_000, 100_000, 100_000]) + _keyed(64, "never", [95_000, 85_000, 92_000])
        + _keyed(1, "always", [80_000, 80_000, 80_000]) + _keyed(64, "always", [60_000, 56_000, 64_000])
        + _row("millpond", "produce", 100, "never", [900_000, 900_000, 900_000]))
    judged = {g["goal"]: g for g in report.goals(summary)}
    never = judged["keyed produce over 64 partitions >= 90% of 1 partition's records/s, fsync=never"]
    assert never["value"] == pytest.approx(0.92) and never["met"]
    assert never["step"] == ("millpond produce 100 B keys=1,000 partitions=64 fsync=never / "
                             "millpond produce 100 B keys=1,000 partitions=1 fsync=never")
    always = judged["keyed produce over 64 partitions >= 90% of 1 partition's records/s, fsync=always"]
    assert always["value"] == pytest.approx(0.75) and not always["met"]
    # the 1M records/s goal is about the unkeyed row alone; keyed rows are judged by the spread goal only
    million = [g for g in report.goals(summary) if g["goal"].startswith(">= 1M")]
    assert [g["value"] for g in million] == [900_000]


def test_a_keyed_row_without_its_one_partition_row_or_with_other_keys_is_not_judged():
    summary = report.summarize(_keyed(64, "never", [95_000] * 3) + _keyed(1, "always", [100_000] * 3)
                               + _keyed(1, "never", [100_000] * 3, keys=10))
    assert not [g for g in report.goals(summary) if g["goal"].startswith("keyed")]


def test_the_table_names_each_keyed_row_by_its_keys_and_partitions():
    summary = report.summarize(_keyed(1, "never", [100_000] * 3) + _keyed(64, "never", [95_000] * 3))
    text = report.table("produce", {"cores": 2, "cpu_model": "cpu", "os": "os", "python": "py"}, summary, 3)
    assert "produce keys=1,000 partitions=1 " in text and "produce keys=1,000 partitions=64 " in text


def test_several_partition_counts_without_keys_are_rows_of_their_own(capsys):
    # Not one row with the two runs as its repeats: each count is its own step, named by it.
    args = cli.build_parser().parse_args(["consume", "--partitions", "1,64"])
    steps, _ = cli.plan(args)
    assert [s.label() for s in steps] == ["consume 100 B fsync=always", "consume 100 B partitions=64 fsync=always"]
    rows = _row("millpond", "consume", 100, "always", [800_000] * 2)
    rows[1].update(partitions=64, step="millpond consume 100 B partitions=64 fsync=always")
    summary = report.summarize(rows)
    assert [len(g["repeats"]) for g in summary] == [1, 1]
    text = report.table("consume", {"cores": 2, "cpu_model": "cpu", "os": "os", "python": "py"}, summary, 1)
    assert "consume partitions=64 " in text
