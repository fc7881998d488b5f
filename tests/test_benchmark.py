"""The benchmark's case (e) on tiny sizes: every way runs and the table says what it measured."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from fcn_research.programs import benchmark


@pytest.fixture(autouse=True)
def _temp_under_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the benchmark's job dirs


def test_limit_case_prints_every_way_and_its_ratio_to_the_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rates = benchmark.limit_case([1, 2], steps=12)
    out = capsys.readouterr().out
    ways = ["plain loop x M", "stacked loop", "stack", "stack, no instr."]
    assert sorted(rates) == [1, 2]
    for m in (1, 2):
        assert sorted(rates[m]) == sorted(ways)
        assert all(rate > 0 for rate in rates[m].values())
        row = next(line for line in out.splitlines() if line.strip().startswith(f"M={m} "))
        assert all(way in row for way in ways)
    ratio_lines = [line for line in out.splitlines() if "time over the limit's" in line]
    assert len(ratio_lines) == 2
    assert all("stack, no instr." in line and "x" in line for line in ratio_lines)


def test_main_runs_case_e_alone_for_the_members_asked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["benchmark", "--cases", "", "--members", "", "--no-startup"]
    monkeypatch.setattr("sys.argv", [*argv, "--limit-members", "2", "--scale", "0.001"])
    monkeypatch.setattr(benchmark, "stack_rss_mib", lambda m, **_: 123.0)
    benchmark.main()
    out = capsys.readouterr().out
    assert "e: moons, 2-8-8-1 tanh" in out
    assert [line.split()[0] for line in out.splitlines() if line.startswith("  M=")] == ["M=2"]
    assert "peak RSS of one case-e stack of M=2: 123 MiB" in out
