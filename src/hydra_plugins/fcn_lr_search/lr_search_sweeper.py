"""``hydra/sweeper=lr_search``: the learning rate tuned per cell of the grid, on Optuna.

A thin Hydra shell over ``fcn_research.lr_search`` (which says what a cell, a trial and a
failed trial are): it parses the grid as Hydra's BasicSweeper does (``hydra.sweeper.params``,
then the command line's comma lists), hands every batch of jobs to the configured launcher
(local, ray, stacked ...) and writes ``best_lr.csv`` / ``best_lr.md`` at the end. Hydra
imports this module at every start to find its plugins, so Optuna is imported only in a sweep.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules without registering
# them in sys.modules, where dataclasses would look the string annotations up.
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


@dataclass
class LRSearchConf:
    """``hydra.sweeper`` for ``hydra/sweeper=lr_search`` (set in conf/hparams_search/lr.yaml)."""

    _target_: str = "hydra_plugins.fcn_lr_search.lr_search_sweeper.LRSearchSweeper"
    lr_min: float = 1e-4
    lr_max: float = 1.0
    n_trials: int = 8
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    n_startup_trials: int = 4  # lr spread over the range before TPE
    sampler_seed: int = 0
    # The grid from config, as BasicSweeper's params (experiments set it); the command line wins.
    params: dict[str, str] | None = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="lr_search", node=LRSearchConf, provider="fcn_research"
)


class LRSearchSweeper(Sweeper):
    """Per cell of the grid, an Optuna study of the learning rate; every trial's seeds are
    ordinary jobs run by the configured launcher."""

    def __init__(
        self,
        lr_min: float,
        lr_max: float,
        n_trials: int,
        seeds: list[int],
        n_startup_trials: int,
        sampler_seed: int,
        params: dict[str, str] | None = None,
    ) -> None:
        self.settings = dict(
            lr_min=lr_min,
            lr_max=lr_max,
            n_trials=n_trials,
            seeds=list(seeds) if seeds is not None else seeds,
            n_startup_trials=n_startup_trials,
            sampler_seed=sampler_seed,
        )
        self.params = dict(params or {})
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        """Search every cell's learning rate; return the rows of ``best_lr.csv``."""
        from fcn_research.config_checks import ConfigError, exit_refused
        from fcn_research.lr_search import (
            SEED_KEY,
            TUNED_KEY,
            check_settings,
            make_cells,
            search,
            write_best_lr,
        )
        from fcn_research.private_internals import split_sweep_arguments

        assert self.config is not None and self.launcher is not None
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides(
            [*(f"{k}={v}" for k, v in self.params.items()), *arguments]
        )
        settings = dict(self.settings)
        grid = []
        for override in overrides:
            key = override.key_or_group
            # optimizer.lr would beat the lr each trial sets (the group's own value wins).
            if key in (TUNED_KEY, f"optimizer.{TUNED_KEY}"):
                exit_refused(
                    f"{override.input_line}: hparams_search=lr searches lr itself; set its range "
                    "with hydra.sweeper.lr_min=... hydra.sweeper.lr_max=... instead"
                )
            if key == SEED_KEY:  # the replicate axis: a trial's seeds, not a grid axis
                values = (
                    list(override.sweep_string_iterator())
                    if override.is_sweep_override()
                    else [override.get_value_element_as_str()]
                )
                settings["seeds"] = [int(v) if v.isdigit() else v for v in values]
                continue
            grid.append(override)
        try:
            checked = check_settings(**settings)
        except ConfigError as err:
            exit_refused(str(err))
        exclude = self.config.hydra.job.config.override_dirname.exclude_keys or []
        cells = make_cells(split_sweep_arguments(grid)[0], exclude)

        # As BasicSweeper: the sweep's config beside its jobs (the report reads it).
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        def launch(batch: list[list[str]], initial_job_idx: int) -> Any:
            assert self.launcher is not None
            self.validate_batch_is_legal(batch)
            return self.launcher.launch(batch, initial_job_idx=initial_job_idx)

        rows = search(launch, cells, checked, sweep_dir)
        write_best_lr(sweep_dir, rows)
        return rows
