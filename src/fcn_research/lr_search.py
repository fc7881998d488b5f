"""The learning rate tuned per cell of a grid: one Optuna study per cell, kept in the sweep dir.

``python train.py -m hparams_search=lr activation=relu,tanh depth=3,5``: the comma lists are
the grid and each of their combinations is a *cell*. For every cell an Optuna study (in
``<sweep>/optuna.db``, SQLite) asks for learning rates on a log scale; a trial trains the
cell at that lr once per seed, each an ordinary job (own dir, TensorBoard run, result.json)
that the configured launcher runs, and its value is the mean final validation metric over
the seeds (``val/acc``, or ``-val/mse`` for regression: the study maximises). One trial of
every unfinished cell goes into each batch, so a launcher runs cells and seeds in parallel.

A trial fails (Optuna's ``FAIL``, which the sampler leaves out) when any of its seeds did not
complete with a finite metric (diverged, failed, missing): an lr that diverges for one seed is
no candidate. The study goes on. Re-running the command with ``hydra.sweep.dir=<sweep>``
resumes: finished trials are kept, a trial the interruption left running is re-run at its
own lr (its completed jobs are skipped by ``train()``), and only the missing trials are asked.

At the end ``best_lr.csv`` and ``best_lr.md`` list, for every study in ``optuna.db`` (so a
search extended to a few cells keeps the others' rows), each cell's best lr, its validation mean
and the test metric of the same jobs (``n/a`` where result.json has none); the test split
never chooses anything.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import random
import re
import statistics
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcn_research.config_checks import ConfigError
from fcn_research.results import RESULT_FILE, read_result, write_atomic
from fcn_research.sweeps import SEED_KEY, TUNED_KEY

log = logging.getLogger(__name__)

STORAGE_FILE = "optuna.db"
BEST_LR_CSV = "best_lr.csv"
BEST_LR_MD = "best_lr.md"
# The validation metric a trial maximises, and its sign: accuracy up, mean squared error down.
VAL_METRICS = {"val/acc": 1.0, "val/mse": -1.0}
TEST_METRICS = ("test/acc", "test/mse")
JOB_DIR = "job_dir"
# best_lr.csv's column of the job dirs the report shows for the cell, separated by JOBS_SEP.
JOBS = "jobs"
JOBS_SEP = ";"
# What each study keeps of its cell, so a later search can list it: its overrides and seeds.
OVERRIDES_ATTR = "overrides"
SEEDS_ATTR = "seeds"

Launch = Callable[[list[list[str]], int], Any]


@dataclass(frozen=True)
class SearchSettings:
    """The search's settings (``hydra.sweeper`` in ``conf/hparams_search/lr.yaml``)."""

    lr_min: float
    lr_max: float
    n_trials: int
    seeds: tuple[int, ...]
    n_startup_trials: int
    sampler_seed: int


def check_settings(
    lr_min: Any, lr_max: Any, n_trials: Any, seeds: Any, n_startup_trials: Any, sampler_seed: Any
) -> SearchSettings:
    """The settings, checked: each bad value is named with what would be right."""

    def number(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    def integer(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    where = "hydra.sweeper"
    if not (number(lr_min) and number(lr_max) and 0 < lr_min < lr_max and math.isfinite(lr_max)):
        raise ConfigError(
            f"{where}.lr_min and lr_max must be finite numbers with 0 < lr_min < lr_max "
            f"(the log-scale range searched), got lr_min={lr_min!r}, lr_max={lr_max!r}"
        )
    if not (integer(n_trials) and n_trials >= 1):
        raise ConfigError(
            f"{where}.n_trials must be an integer >= 1 (trials per cell), got {n_trials!r}"
        )
    seed_list = list(seeds) if isinstance(seeds, Sequence) and not isinstance(seeds, str) else None
    if not seed_list or not all(integer(s) and s >= 0 for s in seed_list):
        raise ConfigError(
            f"{where}.seeds must be a non-empty list of integers >= 0 (each trial trains one "
            f"job per seed), got {seeds!r}"
        )
    if len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"{where}.seeds must not repeat a seed, got {seed_list!r}")
    if not (integer(n_startup_trials) and n_startup_trials >= 1):
        raise ConfigError(
            f"{where}.n_startup_trials must be an integer >= 1 (spread over the range before TPE), "
            f"got {n_startup_trials!r}"
        )
    if not integer(sampler_seed):
        raise ConfigError(f"{where}.sampler_seed must be an integer, got {sampler_seed!r}")
    return SearchSettings(
        float(lr_min), float(lr_max), n_trials, tuple(seed_list), n_startup_trials, sampler_seed
    )


def lr_string(lr: float) -> str:
    """The lr as a job's override writes it: 3 significant digits keep job dir names short."""
    return f"{lr:.3g}"


@dataclass(frozen=True)
class Cell:
    """One cell of the grid: its jobs' overrides (less lr and seed) and its study's name."""

    overrides: tuple[str, ...]
    name: str


def make_cells(grid: Sequence[Sequence[str]], exclude: Collection[str] = ()) -> list[Cell]:
    """The grid's cells, each named by its overrides (sorted) as job dirs are: the keys in
    ``exclude`` (override_dirname's exclude_keys) left out; ``all`` when nothing is left."""
    cells: dict[str, Cell] = {}  # by name: a value listed twice is one cell, one study
    for overrides in grid:
        named = sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in exclude)
        name = ",".join(named) or "all"
        cells.setdefault(name, Cell(tuple(overrides), name))
    return list(cells.values())


def cell_of_study(name: str, attrs: dict[str, Any]) -> Cell:
    """A study's cell from what it keeps (``OVERRIDES_ATTR``), else from its name (overrides
    joined by commas, as a job dir is named; a value may hold commas, a key never)."""
    overrides = attrs.get(OVERRIDES_ATTR)
    if overrides is None:
        overrides = [] if name == "all" else re.split(r",(?=[^,=]+=)", name)
    return Cell(tuple(str(o) for o in overrides), name)


def trial_jobs(cell: Cell, lr: float, seeds: Sequence[int]) -> list[list[str]]:
    """The overrides of a trial's jobs: the cell's, the trial's lr and one seed each."""
    return [
        [*cell.overrides, f"{TUNED_KEY}={lr_string(lr)}", f"{SEED_KEY}={seed}"] for seed in seeds
    ]


def results_by_overrides(sweep_dir: Path) -> dict[frozenset[str], dict[str, Any]]:
    """Every job's result.json under ``sweep_dir``, keyed by the set of its overrides; its
    job dir (relative to ``sweep_dir``) under ``JOB_DIR``."""
    out = {}
    for path in sweep_dir.rglob(RESULT_FILE):
        result = read_result(path.parent)
        if result is not None:
            job_dir = path.parent.relative_to(sweep_dir).as_posix()
            out[frozenset(result.get("overrides") or [])] = {**result, JOB_DIR: job_dir}
    return out


def _val_metric(metrics: dict[str, Any]) -> tuple[str, float] | None:
    for key in VAL_METRICS:
        value = metrics.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            return key, float(value)
    return None


def trial_value(results: Sequence[dict[str, Any] | None]) -> tuple[float | None, str]:
    """A trial's value from its jobs' results (None when it failed) and a line saying why."""
    values, metric = [], ""
    for result in results:
        seed = (result or {}).get("hparams", {}).get(SEED_KEY, "?")
        status = (result or {}).get("status", "missing")
        found = _val_metric((result or {}).get("metrics") or {})
        if status != "completed" or found is None:
            return None, f"seed {seed} {status}" + ("" if found else ", no finite val metric")
        metric, value = found
        values.append(VAL_METRICS[metric] * value)
    mean = statistics.fmean(values)
    over = f"mean of {len(values)} seeds" if len(values) > 1 else "1 seed"
    return mean, f"{metric} {VAL_METRICS[metric] * mean:.4g} ({over})"


def startup_lr(settings: SearchSettings, k: int) -> float:
    """The lr of a cell's trial ``k`` < ``n_startup_trials``: the base-2 van der Corput point k
    (0, 1/2, 1/4, 3/4 ...), shifted by an offset drawn from ``sampler_seed`` (mod 1), on the log
    range. Few points spread over the range where a few random draws may cluster, and trial k
    gets the same lr whether the search was resumed or not, whatever earlier trials gave."""
    u = random.Random(settings.sampler_seed).random()
    bit = 0.5
    while k:
        u, k, bit = u + bit * (k & 1), k >> 1, bit / 2
    low, high = math.log(settings.lr_min), math.log(settings.lr_max)
    return math.exp(low + (u % 1.0) * (high - low))


def search(
    launch: Launch, cells: Sequence[Cell], settings: SearchSettings, sweep_dir: Path
) -> list[dict[str, Any]]:
    """Run the studies until every cell has ``n_trials`` finished trials; return best_lr's rows.

    ``launch(batch, initial_job_idx)`` runs a batch of jobs (Hydra's launcher).
    """
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial instead
    storage = f"sqlite:///{(sweep_dir / STORAGE_FILE).resolve()}"
    space = {TUNED_KEY: FloatDistribution(settings.lr_min, settings.lr_max, log=True)}
    studies = [
        optuna.create_study(
            study_name=cell.name, storage=storage, direction="maximize", load_if_exists=True
        )
        for cell in cells
    ]
    for cell, study in zip(cells, studies, strict=True):
        study.set_user_attr(OVERRIDES_ATTR, list(cell.overrides))
        study.set_user_attr(SEEDS_ATTR, list(settings.seeds))
    finished_states = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    job_idx = 0
    while True:
        pending: list[tuple[int, int, float]] = []  # (cell index, trial number, lr)
        for i, study in enumerate(studies):
            trials = study.get_trials(deepcopy=False)
            running = [t for t in trials if t.state == TrialState.RUNNING]
            finished = sum(t.state in finished_states for t in trials)
            if running:  # left running by an interrupted search: re-run at its own lr
                pending.append((i, running[0].number, float(running[0].params[TUNED_KEY])))
            elif finished < settings.n_trials:
                if len(trials) < settings.n_startup_trials:
                    study.enqueue_trial({TUNED_KEY: startup_lr(settings, len(trials))})
                # Seeded by the trial count, so a resumed study asks what an uninterrupted
                # one would have asked.
                study.sampler = optuna.samplers.TPESampler(
                    seed=settings.sampler_seed + len(trials),
                    n_startup_trials=settings.n_startup_trials,
                )
                trial = study.ask(space)
                pending.append((i, trial.number, float(trial.params[TUNED_KEY])))
        if not pending:
            break
        batch = [job for i, _, lr in pending for job in trial_jobs(cells[i], lr, settings.seeds)]
        launch(batch, job_idx)
        job_idx += len(batch)
        results = results_by_overrides(sweep_dir)
        for i, number, lr in pending:
            jobs = trial_jobs(cells[i], lr, settings.seeds)
            value, why = trial_value([results.get(frozenset(job)) for job in jobs])
            if value is None:
                studies[i].tell(number, state=TrialState.FAIL)
            else:
                studies[i].tell(number, value)
            log.info(
                "%s trial %d: lr %s -> %s",
                cells[i].name,
                number,
                lr_string(lr),
                why if value is not None else f"failed ({why})",
            )
    return all_best_rows(storage, settings, sweep_dir)


def all_best_rows(storage: str, settings: SearchSettings, sweep_dir: Path) -> list[dict[str, Any]]:
    """best_lr's rows for every study in ``storage``, those of earlier searches in the same
    sweep dir included, in the order they were first made."""
    import optuna

    cells, studies, seeds = [], [], []
    for name in optuna.study.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        cells.append(cell_of_study(name, study.user_attrs))
        studies.append(study)
        seeds.append(tuple(study.user_attrs.get(SEEDS_ATTR) or settings.seeds))
    return best_rows(cells, studies, seeds, sweep_dir)


def best_rows(
    cells: Sequence[Cell],
    studies: Sequence[Any],
    seeds: Sequence[Sequence[int]],
    sweep_dir: Path,
) -> list[dict[str, Any]]:
    """One row per cell: its best lr, validation mean, test mean (or n/a) and trial counts;
    ``seeds``: each cell's trial seeds."""
    from optuna.trial import TrialState

    results = results_by_overrides(sweep_dir)
    values = [dict(o.lstrip("+~").split("=", 1) for o in cell.overrides) for cell in cells]
    # The grid's axes: the keys whose value differs between cells.
    axes = [
        k
        for k in dict.fromkeys(k for v in values for k in v)
        if len({v.get(k) for v in values}) > 1
    ]
    rows = []
    for cell, study, cell_values, cell_seeds in zip(cells, studies, values, seeds, strict=True):
        trials = study.get_trials(deepcopy=False)
        row: dict[str, Any] = {"cell": cell.name}
        row.update((k, cell_values.get(k, "")) for k in axes)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        tried = [
            results[frozenset(job)][JOB_DIR]
            for t in trials
            if TUNED_KEY in t.params
            for job in trial_jobs(cell, float(t.params[TUNED_KEY]), cell_seeds)
            if frozenset(job) in results
        ]
        row.update(
            lr="n/a",
            val_metric="n/a",
            val_mean="n/a",
            test_metric="n/a",
            test_mean="n/a",
            n_seeds=len(cell_seeds),
            trials_complete=len(complete),
            trials_failed=sum(t.state == TrialState.FAIL for t in trials),
            # Where no trial completed, every job tried, so the report shows how they ended.
            jobs=JOBS_SEP.join(dict.fromkeys(tried)),
        )
        if complete:
            best = max(complete, key=lambda t: t.value)
            lr = float(best.params[TUNED_KEY])
            jobs = [results.get(frozenset(j)) or {} for j in trial_jobs(cell, lr, cell_seeds)]
            metrics = [job.get("metrics") or {} for job in jobs]
            row[JOBS] = JOBS_SEP.join(job[JOB_DIR] for job in jobs if JOB_DIR in job)
            val = _val_metric(metrics[0])
            row.update(lr=lr_string(lr), val_metric=val[0] if val else "n/a")
            if val:
                row["val_mean"] = f"{VAL_METRICS[val[0]] * best.value:.4g}"
            for key in TEST_METRICS:
                tests = [m.get(key) for m in metrics]
                if all(isinstance(t, int | float) and math.isfinite(t) for t in tests):
                    row.update(test_metric=key, test_mean=f"{statistics.fmean(tests):.4g}")
                    break
        rows.append(row)
    return rows


def write_best_lr(sweep_dir: Path, rows: Sequence[dict[str, Any]]) -> list[Path]:
    """``best_lr.csv`` and ``best_lr.md`` in the sweep dir (each written atomically)."""
    fields = list(dict.fromkeys(k for row in rows for k in row))
    shown = [f for f in fields if f != JOBS]  # job dir names: for the report, too long to read
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    lines = [
        "# Learning rate tuned per cell",
        "",
        "Best lr per cell by the mean final validation metric over the seeds (test: same jobs,"
        " never used to choose).",
        "",
        "| " + " | ".join(shown) + " |",
        "|" + "---|" * len(shown),
        *("| " + " | ".join(str(row.get(f, "")) for f in shown) + " |" for row in rows),
    ]
    paths = [sweep_dir / BEST_LR_CSV, sweep_dir / BEST_LR_MD]
    for path, text in zip(paths, [buffer.getvalue(), "\n".join(lines) + "\n"], strict=True):
        write_atomic(path, text)
    return paths
