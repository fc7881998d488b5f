"""docs/experiments.md: written by scripts/experiments.py from the experiments' result.json
files; the slow tests re-run each experiment and compare with what is written."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml
from scipy import stats

from fcn_research.programs.experiment_page import compared, fmt, load, verdict
from fcn_research.programs.experiments import BY_NAME, ROOT, run, section
from fcn_research.results import write_json_atomic

DOC = ROOT / "docs" / "experiments.md"
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def documented_section(name: str) -> str:
    """The section ``## <name>`` of docs/experiments.md."""
    text = DOC.read_text()
    match = re.search(rf"^## {name}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"docs/experiments.md has no section {name}"
    return f"## {name}\n{match.group(1)}"


def assert_same_but_rounding(written: str, fresh: str) -> None:
    """The same text, numbers equal to the 3 significant digits they are written with."""
    assert NUMBER.sub("#", written) == NUMBER.sub("#", fresh)
    for a, b in zip(NUMBER.findall(written), NUMBER.findall(fresh), strict=True):
        assert math.isclose(float(a), float(b), rel_tol=1e-2, abs_tol=1e-3), (a, b)


def test_script_writes_an_experiment_section_from_a_real_sweep(run_cli, tmp_path):
    sweeps = tmp_path / "sweeps"
    run_cli(
        "-m",
        "experiment=dying_relu",
        "max_epochs=1",
        "data.num_samples=200",
        "seed=0,1",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweeps / 'dying_relu' / '0'}",
    )
    out = tmp_path / "experiments.md"
    run_cli(str(sweeps), "--only", "dying_relu", "--out", str(out), script="scripts/experiments.py")
    text = out.read_text()
    assert "python train.py -m experiment=dying_relu seed=0,1,2" in text
    # fix_bias=true kills the layer at both target layers and both seeds: 4 runs.
    assert "exactly 0: holds in all 4 runs." in text
    rows = [
        line for line in text.splitlines() if re.match(r"\| [23] \| (true|false) \| 2 \|", line)
    ]
    assert len(rows) == 4, text


def test_script_refuses_a_missing_sweep_naming_it(run_cli, tmp_path):
    proc = run_cli(str(tmp_path), "--only", "pruning", script="scripts/experiments.py", check=False)
    assert proc.returncode == 2
    assert f"no result.json under {tmp_path / 'pruning' / '0'}" in proc.stderr


def _results(accs: dict[int, float]) -> list[dict]:
    return [{"hparams": {"seed": s}, "metrics": {"val/acc": v}} for s, v in accs.items()]


def test_a_verdict_is_the_reports_test_named_with_its_p_value():
    # Ranges that do not overlap, yet three paired differences that vary: not told apart.
    a, b = [0.90, 0.91, 0.99], [0.80, 0.89, 0.895]
    p = stats.ttest_rel(a, b).pvalue
    assert 0.05 < p < 0.2 and min(a) > max(b)
    text = verdict(
        "a", "b", compared(_results(dict(enumerate(a))), _results(dict(enumerate(b))), "val/acc")
    )
    assert text == f"not distinguishable (paired t, n = 3, p = {fmt(p)})"
    # Different seeds: Welch's test; the higher one named.
    low = _results({5: 0.70, 6: 0.71, 7: 0.69})
    p = stats.ttest_ind(a, [0.70, 0.71, 0.69], equal_var=False).pvalue
    text = verdict("a", "low", compared(_results(dict(enumerate(a))), low, "val/acc"))
    assert text == f"a higher (Welch t, n = 3 vs 3, p = {fmt(p)})"


def test_a_sweep_with_a_job_not_run_is_refused_naming_it(tmp_path):
    """The page reads a sweep as the report does: a job multirun.yaml lists but that never ran
    is named, not left out of the seeds quietly."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(
        yaml.safe_dump({"hydra": {"overrides": {"task": ["seed=0,1"]}}})
    )
    result = {"status": "completed", "overrides": ["seed=0"], "hparams": {"seed": 0}, "metrics": {}}
    write_json_atomic(sweep / "seed=0" / "result.json", result)
    with pytest.raises(ValueError, match="job seed=1: status 'not started', expected completed"):
        load(sweep)


@pytest.mark.parametrize("name", list(BY_NAME))
def test_every_experiment_has_its_documented_section(name):
    commands = documented_section(name).split("\n\n")[1]
    assert commands.split("\n") == [f"    {c}" for c in BY_NAME[name].commands()]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BY_NAME))
def test_documented_numbers_are_what_the_experiment_gives(tmp_path: Path, name):
    run(BY_NAME[name], tmp_path)
    fresh = "\n".join(section(BY_NAME[name], tmp_path))
    assert_same_but_rounding(documented_section(name).rstrip("\n"), fresh.rstrip("\n"))
