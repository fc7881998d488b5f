"""hparams_search=lr: the learning rate tuned per grid cell, trials as ordinary jobs, resumable."""

from __future__ import annotations

import csv
import itertools
import math
import statistics
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from fcn_research.lr_search import (
    BEST_LR_CSV,
    BEST_LR_MD,
    STORAGE_FILE,
    SearchSettings,
    cell_of_study,
    startup_lr,
)
from fcn_research.results import read_result, update_result

# 2 cells x 2 trials x 2 seeds, one epoch each on moons.
SEARCH = [
    "-m",
    "hparams_search=lr",
    "hydra.sweeper.n_trials=2",
    "hydra.sweeper.seeds=[0,1]",
    "max_epochs=1",
    "trainer.enable_progress_bar=false",
]


def _job_dirs(sweep: Path) -> dict[str, float]:
    """Job dir name -> mtime of its result.json."""
    return {p.parent.name: p.stat().st_mtime for p in sweep.glob("*/result.json")}


def _trials(sweep: Path) -> dict[str, list[optuna.trial.FrozenTrial]]:
    storage = f"sqlite:///{sweep / STORAGE_FILE}"
    return {
        s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).trials
        for s in optuna.get_all_study_summaries(storage)
    }


def _best_rows(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / BEST_LR_CSV) as f:
        return list(csv.DictReader(f))


def _rows_test(sweep: Path) -> tuple[str, str]:
    (row,) = _best_rows(sweep)
    return row["test_metric"], row["test_mean"]


def test_search_runs_each_cell_as_jobs_and_writes_its_best_lr(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    run_cli(*SEARCH, "activation=relu,tanh", f"hydra.sweep.dir={sweep}")

    jobs = _job_dirs(sweep)
    assert len(jobs) == 8, sorted(jobs)  # 2 cells x 2 trials x 2 seeds, each its own job dir
    for name in jobs:
        assert name.startswith(("activation=relu,lr=", "activation=tanh,lr=")), name
        assert name.endswith((",max_epochs=1,seed=0", ",max_epochs=1,seed=1")), name
        assert list((sweep / name).glob("events.out.tfevents.*")), name
    trials = _trials(sweep)
    assert sorted(trials) == ["activation=relu,max_epochs=1", "activation=tanh,max_epochs=1"]
    assert all(
        len(t) == 2 and {x.state for x in t} == {TrialState.COMPLETE} for t in trials.values()
    )

    rows = _best_rows(sweep)
    assert [r["activation"] for r in rows] == ["relu", "tanh"]
    for row in rows:
        # The best lr is the tried one whose seeds' mean final val/acc is highest.
        means = {}
        for lr in {n.split("lr=")[1].split(",")[0] for n in jobs if f"={row['activation']}," in n}:
            results = [
                read_result(sweep / f"activation={row['activation']},lr={lr},max_epochs=1,seed={s}")
                for s in (0, 1)
            ]
            means[lr] = statistics.fmean(r["metrics"]["val/acc"] for r in results)
        assert row["lr"] == max(means, key=means.get), (row, means)
        assert float(row["val_mean"]) == pytest.approx(means[row["lr"]], abs=1e-4)
        assert row["val_metric"] == "val/acc" and row["trials_complete"] == "2"
        assert row["test_mean"] == "n/a" or 0 <= float(row["test_mean"]) <= 1
    assert "| relu |" in (sweep / BEST_LR_MD).read_text()

    # The report shows each cell at its best lr: those jobs only, averaged over the seeds.
    out = run_cli(str(sweep), script="scripts/report.py").stdout
    assert "each cell at its best learning rate (best_lr.csv: 2 cells, 4 of 8 jobs shown)" in out
    with open(sweep / "report" / "summary.csv") as f:
        shown = sorted(row["job"] for row in csv.DictReader(f))
    assert shown == sorted(
        f"activation={r['activation']},lr={r['lr']},max_epochs=1,seed={s}"
        for r in rows
        for s in (0, 1)
    )


def test_resumed_search_redoes_nothing_and_finishes_an_interrupted_trial(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    args = [*SEARCH, "hydra.sweeper.seeds=[0]", f"hydra.sweep.dir={sweep}"]
    run_cli(*args)
    metric, mean = _rows_test(sweep)  # moons holds out a test split: the best lr's jobs' mean
    assert metric == "test/acc" and 0 <= float(mean) <= 1
    # Set apart, to see which jobs' test metric the table takes: the best lr's.
    for i, job in enumerate(sorted(sweep.glob("*/result.json"))):
        update_result(job.parent, metrics={**read_result(job.parent)["metrics"], "test/acc": i})
    before = _job_dirs(sweep)
    assert len(before) == 2

    run_cli(*args)  # the same command again: every trial is finished
    assert _job_dirs(sweep) == before  # no new dir, no result.json rewritten
    assert [len(t) for t in _trials(sweep).values()] == [2]
    (row,) = _best_rows(sweep)
    best_job = f"lr={row['lr']},max_epochs=1,seed=0"
    assert _rows_test(sweep) == (
        "test/acc",
        str(read_result(sweep / best_job)["metrics"]["test/acc"]),
    )

    # An interruption leaves a trial RUNNING in the study, its lr chosen, its jobs unfinished.
    storage = f"sqlite:///{sweep / STORAGE_FILE}"
    study = optuna.load_study(study_name="max_epochs=1", storage=storage)
    study.enqueue_trial({"lr": 0.05})
    study.ask({"lr": FloatDistribution(1e-4, 1.0, log=True)})
    run_cli(*args, "hydra.sweeper.n_trials=3")
    after = _job_dirs(sweep)
    assert {k: v for k, v in after.items() if k in before} == before
    assert sorted(set(after) - set(before)) == ["lr=0.05,max_epochs=1,seed=0"]
    trials = _trials(sweep)["max_epochs=1"]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3


def test_diverging_trials_are_recorded_as_failed_and_the_study_goes_on(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    # Plain SGD at lr 1e5..1e6 blows up on moons within an epoch.
    run_cli(
        *SEARCH,
        "optimizer=sgd",
        "hydra.sweeper.seeds=[0]",
        "hydra.sweeper.lr_min=1e5",
        "hydra.sweeper.lr_max=1e6",
        f"hydra.sweep.dir={sweep}",
    )
    statuses = [read_result(sweep / name)["status"] for name in _job_dirs(sweep)]
    assert len(statuses) == 2 and "diverged" in statuses
    trials = _trials(sweep)["max_epochs=1,optimizer=sgd"]
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]  # both were run
    (row,) = _best_rows(sweep)
    assert row["lr"] == "n/a" and row["trials_failed"] == "2" and row["trials_complete"] == "0"


def test_extended_search_lists_every_study_of_the_sweep(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    args = [*SEARCH, "hydra.sweeper.seeds=[0]", "hydra.sweeper.n_trials=1"]
    run_cli(*args, "activation=relu,tanh", f"hydra.sweep.dir={sweep}")
    first = {r["activation"]: r for r in _best_rows(sweep)}
    assert sorted(first) == ["relu", "tanh"]

    # Extended on some cells: relu has its trial, sigmoid is new; tanh is not named.
    run_cli(*args, "activation=relu,sigmoid", f"hydra.sweep.dir={sweep}")
    assert len(_job_dirs(sweep)) == 3
    rows = {r["activation"]: r for r in _best_rows(sweep)}
    assert list(rows) == ["relu", "tanh", "sigmoid"]
    assert rows["tanh"]["lr"] == first["tanh"]["lr"] != "n/a"
    assert rows["tanh"]["jobs"] == f"activation=tanh,lr={first['tanh']['lr']},max_epochs=1,seed=0"
    assert rows["sigmoid"]["trials_complete"] == "1"
    assert "| tanh |" in (sweep / BEST_LR_MD).read_text()
    out = run_cli(str(sweep), script="scripts/report.py").stdout
    assert "(best_lr.csv: 3 cells, 3 of 3 jobs shown)" in out

    # A study made before cells were kept in it: the cell from its name.
    cell = cell_of_study("activation=relu,width=[32,16]", {})
    assert cell.overrides == ("activation=relu", "width=[32,16]")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials must be an integer >= 1"),
        (
            ["hydra.sweeper.lr_min=1", "hydra.sweeper.lr_max=0.001"],
            "0 < lr_min < lr_max (the log-scale range searched), got lr_min=1.0, lr_max=0.001",
        ),
        (["hydra.sweeper.seeds=[]"], "hydra.sweeper.seeds must be a non-empty list"),
        (["lr=0.1,0.01"], "lr=0.1,0.01: hparams_search=lr searches lr itself"),
        (["optimizer.lr=0.1"], "optimizer.lr=0.1: hparams_search=lr searches lr itself"),
    ],
)
def test_bad_search_settings_are_refused_before_anything_runs(
    run_cli, tmp_path, overrides, message
):
    proc = run_cli("-m", "hparams_search=lr", *overrides, check=False)
    assert proc.returncode == 1
    assert message in proc.stderr, proc.stderr
    assert not (tmp_path / "outputs").exists()  # no sweep dir, no optuna.db left behind


def test_tuned_experiments_search_their_grid(make_cfg):
    cfg = make_cfg("experiment=glorot_bengio_mnist_tuned")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("LRSearchSweeper")
    assert (sweeper.lr_min, sweeper.lr_max, sweeper.n_trials) == (1e-3, 0.3, 6)
    assert dict(sweeper.params) == {
        "activation": "sigmoid,tanh",
        "initializer": "default,xavier_uniform",
    }
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.width == 1000


def test_tuned_activation_zoo_runs_reduced_from_the_cli(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    # The command line narrows the zoo's grid and seeds (it beats hydra.sweeper.params).
    run_cli(
        "-m",
        "experiment=activation_zoo_tuned",
        "activation=relu,tanh",
        "data=spiral",
        "seed=0",
        "hydra.sweeper.n_trials=1",
        "max_epochs=1",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweep}",
    )
    assert sorted(_job_dirs(sweep)) == [
        f"activation={a},data=spiral,experiment=activation_zoo_tuned,lr={lr},max_epochs=1,seed=0"
        for a, lr in sorted((r["activation"], r["lr"]) for r in _best_rows(sweep))
    ]
    assert [r["cell"].split(",")[0] for r in _best_rows(sweep)] == [
        "activation=relu",
        "activation=tanh",
    ]


def test_startup_learning_rates_spread_over_the_log_range():
    settings = SearchSettings(1e-4, 1.0, 8, (0,), 4, 0)
    logs = sorted(math.log10(startup_lr(settings, k)) for k in range(4))
    assert logs[0] >= -4 and logs[-1] <= 0
    # A quarter of the range (1 decade of 4) apart, wherever the seeded offset puts them.
    assert [b - a for a, b in itertools.pairwise(logs)] == pytest.approx([1.0, 1.0, 1.0])
    other = SearchSettings(1e-4, 1.0, 8, (0,), 4, 1)
    assert startup_lr(other, 0) != pytest.approx(startup_lr(settings, 0))


def test_a_search_runs_its_trials_through_the_stacked_launcher(run_cli, tmp_path):
    # Each batch is one trial per cell with its seeds: the seeds of a trial share a stack.
    sweep = tmp_path / "sweep"
    run_cli(*SEARCH, "launcher=stacked", "activation=relu,tanh", f"hydra.sweep.dir={sweep}")
    jobs = _job_dirs(sweep)
    assert len(jobs) == 8, sorted(jobs)
    stacks = {read_result(sweep / name)["stack"]["members"] for name in jobs}
    assert stacks == {2}  # a trial's two seeds
    assert [r["activation"] for r in _best_rows(sweep)] == ["relu", "tanh"]
    assert all({x.state for x in t} == {TrialState.COMPLETE} for t in _trials(sweep).values())
