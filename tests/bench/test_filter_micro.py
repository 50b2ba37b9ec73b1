# The filter policy micro-benchmark runs and reports a rate for each of its policies (a few records: a smoke test,
# not a measurement).
from __future__ import annotations

from millpond.bench import filter_micro


def test_every_case_reports_a_positive_rate():
    figures = filter_micro.run(records=200, repeat=1)
    assert set(figures["matches_per_s"]) == set(filter_micro.CASES)
    assert all(rate > 0 for rate in figures["matches_per_s"].values())
    assert figures["records"] == 200


def test_main_prints_one_line_per_case(capsys):
    assert filter_micro.main(["--records", "100", "--repeat", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(filter_micro.CASES)
    assert lines[0].startswith("filter policies, Python ")
