"""A metric of the user's own: a callback from outside the repo, added from the command line."""

from __future__ import annotations

import csv
import os
import textwrap
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fcn_research.results import read_result

MY_METRICS = """
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from fcn_research.recording import Recorded


    class WeightRMS(Callback, Recorded):
        '''mine/weight_rms/layer_XX: the RMS of each Linear's weights, at every epoch's end;
        mine/weight_norm: the norm of all of them, at step 0 and at the end (Recorded).'''

        def __init__(self) -> None:
            self.init: list[dict[str, float]] = []
            self.final: list[dict[str, float]] = []

        def init_values(self) -> list[dict[str, float]]:
            return self.init

        def final_values(self) -> list[dict[str, float]]:
            return self.final

        def _norm(self, pl_module: L.LightningModule) -> list[dict[str, float]]:
            squares = sum(lin.weight.detach().pow(2).sum() for lin in pl_module.model.linears)
            return [{"mine/weight_norm": float(squares.sqrt())}]

        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.init = self._norm(pl_module)

        def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.final = self._norm(pl_module)

        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            for i, linear in enumerate(pl_module.model.linears, 1):
                rms = linear.weight.detach().pow(2).mean().sqrt()
                pl_module.log(f"mine/weight_rms/layer_{i:02d}", rms)
"""


@pytest.fixture
def outside_callback(tmp_path, monkeypatch) -> Path:
    """``my_metrics.WeightRMS`` in a directory outside the repo, on the PYTHONPATH."""
    ext = tmp_path / "ext"
    ext.mkdir()
    (ext / "my_metrics.py").write_text(textwrap.dedent(MY_METRICS))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ext), os.environ.get("PYTHONPATH")]))
    )
    return ext


def test_a_callback_from_outside_reaches_tensorboard_result_json_and_the_report(
    run_cli, tmp_path, outside_callback
):
    sweep = tmp_path / "sweep"
    run_cli(
        "-m",
        "+callbacks.mine._target_=my_metrics.WeightRMS",
        "seed=0,1",
        "max_epochs=3",
        "data.num_samples=200",
        "trainer.enable_progress_bar=false",
        "trainer.accelerator=cpu",
        f"hydra.sweep.dir={sweep}",
    )
    jobs = sorted(p.parent for p in sweep.glob("*/result.json"))
    assert len(jobs) == 2
    for job in jobs:
        result = read_result(job)
        assert result["status"] == "completed", result.get("error")
        events = EventAccumulator(str(job))
        events.Reload()
        for layer in (1, 2, 3):
            tag = f"mine/weight_rms/layer_{layer:02d}"
            points = events.Scalars(tag)
            # At every epoch end, on the optimizer-step axis: 120 training samples, 2 steps each.
            assert [p.step for p in points] == [2, 4, 6]
            assert result["metrics"][tag] == pytest.approx(points[-1].value, rel=1e-6)
            assert result["metrics"][tag] > 0
        # Its Recorded values: at step 0 in `init`, at the end (the checkpoint's weights) in
        # `metrics`.
        state = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        squares = sum(w.pow(2).sum() for k, w in state.items() if k.endswith("weight"))
        final = result["metrics"]["mine/weight_norm"]
        assert final == pytest.approx(float(squares.sqrt()), rel=1e-6)
        assert result["init"]["mine/weight_norm"] > 0
        assert result["init"]["mine/weight_norm"] != pytest.approx(final)
    run_cli(str(sweep), script="scripts/report.py")
    with open(sweep / "report" / "summary.csv", newline="") as f:
        rows = {row["job"]: row for row in csv.DictReader(f)}
    for job in jobs:
        value = read_result(job)["metrics"]["mine/weight_rms/layer_02"]
        assert float(rows[job.name]["mine/weight_rms/layer_02"]) == pytest.approx(value)
