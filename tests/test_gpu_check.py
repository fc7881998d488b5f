"""scripts/gpu_check.py's logic, run on the CPU with tiny sizes (its real run needs CUDA)."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from fcn_research.callbacks.host_syncs import SYNC_WARNING
from fcn_research.module import FCNModule
from fcn_research.programs import gpu_check
from fcn_research.programs.gpu_check import (
    QUICK,
    ItemRun,
    compare_init,
    compare_metrics,
    design_tags,
    max_concurrent,
    missing_tags,
)
from fcn_research.train import train

SMALL = ["depth=3", "width=16", "max_epochs=1"]  # moons: 10 optimizer steps


def _item(name, tmp_path):
    run = ItemRun(name, tmp_path, "cpu", QUICK, {})
    gpu_check.ITEMS[name](run)
    # What the runner collects: the item's own file, written as it went.
    return json.loads((tmp_path / "items" / f"{name}.json").read_text())


def test_every_design_tag_is_found_in_a_real_run_and_a_missing_one_named(make_cfg, tmp_path):
    tags = design_tags(3)
    assert "neurons/dead_fraction/layer_02" in tags["scalars"]
    assert "neurons/dead_fraction/layer_03" not in tags["scalars"]  # the output is no hidden layer
    assert "grad/layer_03" in tags["histograms"] and len(tags["scalars"]) == 17
    train(make_cfg(*SMALL, output_dir=tmp_path / "all"))
    assert missing_tags(tmp_path / "all") == []
    train(make_cfg(*SMALL, "callbacks.neurons=null", output_dir=tmp_path / "no_neurons"))
    missing = missing_tags(tmp_path / "no_neurons")
    assert "neurons/dead_fraction" in missing and "activations/std/layer_02" in missing
    assert "grad_norm/layer_01" not in missing


def test_host_sync_counter_sees_none_on_cpu_and_places_a_synthetic_one(
    make_cfg, tmp_path, monkeypatch
):
    counter = [
        "+callbacks.host_syncs._target_=fcn_research.callbacks.host_syncs.HostSyncCounter",
        f"+callbacks.host_syncs.path='{tmp_path / 'syncs.json'}'",
    ]
    train(make_cfg(*SMALL, *counter, output_dir=tmp_path / "clean"))
    clean = json.loads((tmp_path / "syncs.json").read_text())
    assert clean == {"outside_logging": 0, "at_logging": 0, "steps_outside": []}

    original = FCNModule.on_before_optimizer_step

    def syncing(self, optimizer):
        # Step 5 is an instruments' logging step (every step up to 10), step 11 is not.
        if self.trainer.global_step in (5, 11):
            warnings.warn(SYNC_WARNING, stacklevel=1)
        original(self, optimizer)

    monkeypatch.setattr(FCNModule, "on_before_optimizer_step", syncing)
    result = train(make_cfg(*SMALL, "max_epochs=2", *counter, output_dir=tmp_path / "synced"))
    assert result["global_step"] == 20
    synced = json.loads((tmp_path / "syncs.json").read_text())
    assert synced == {"outside_logging": 1, "at_logging": 1, "steps_outside": [11]}


def test_metric_and_init_comparisons():
    nan = math.nan
    assert compare_metrics({"a": 1.0, "b": nan}, {"a": 1.0, "b": nan})["identical"]
    diff = compare_metrics({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.5})
    assert not diff["identical"] and diff["different"] == ["b"] and diff["max_abs_diff"] == 0.5
    assert compare_metrics({"a": 1.0}, {})["max_abs_diff"] == math.inf
    init = compare_init({"g": 1.0, "d": 0.5}, {"g": 1.00001, "d": 0.6})
    assert init["outside_tolerance"] == ["d"] and init["keys"] == 2


def test_max_concurrent_counts_overlapping_spans():
    assert max_concurrent([(0, 2), (1, 3), (2, 4)]) == 2  # touching at 2 is not overlapping
    assert max_concurrent([(0, 10)] * 4 + [(11, 12)]) == 4
    assert max_concurrent([]) == 0


def test_instruments_item_on_cpu(tmp_path):
    fig = _item("instruments", tmp_path)
    assert fig["run_status"] == "completed" and fig["missing_tags"] == []
    assert fig["host_syncs"]["outside_logging"] == 0
    # The same seed on the same device: step 0 identical, every instrument's key compared.
    assert fig["init_vs_cpu"]["max_abs_diff"] == 0.0 and fig["init_vs_cpu"]["keys"] >= 15
    assert fig["init_vs_cpu"]["only_one_side"] == []


def test_determinism_item_on_cpu(tmp_path):
    fig = _item("determinism", tmp_path)
    for mode in ("warn", "true"):
        assert fig[mode]["identical"] is True and fig[mode]["max_abs_diff"] == 0.0
        assert len(fig[mode]["wall_s"]) == 2 and fig[mode]["determinism_warnings"] == 0
    assert fig["true_vs_warn_time"] > 0


def test_throughput_item_on_cpu(tmp_path):
    fig = _item("throughput", tmp_path)
    assert set(fig["case_a"]) >= {"plain_steps_per_s", "template_steps_per_s", "template_s"}
    for key in ("instruments_off", "instruments_on"):
        rows = fig["stacked"][key]
        assert [r["members"] for r in rows] == QUICK.members
        assert all(r["completed"] == r["members"] and r["model_steps_per_s"] > 0 for r in rows)
        assert all(r["peak_gpu_mib"] is None for r in rows)  # no GPU memory on the CPU


def test_packing_item_stacks_without_ray_and_sees_all_at_once(tmp_path):
    fig = _item("packing", tmp_path)
    assert fig["engine"] == "stack" and fig["ray_unavailable"] == "not on CUDA"
    assert fig["statuses"] == ["completed"] * 8
    assert fig["max_concurrent"] == 8 and fig["four_at_once"] is True


def test_no_cuda_is_skipped_with_exit_0(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    gpu_check.main(["--out", str(tmp_path / "check")])
    assert "skipped: no CUDA" in capsys.readouterr().out
    report = json.loads((tmp_path / "check" / "gpu_check.json").read_text())
    assert report["skipped"] == "no CUDA" and "items" not in report


def test_a_slow_item_is_cut_short_and_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "ITEM_TIMEOUTS_S", {"instruments": 0.5, "packing": 60.0})
    # The second item finds the budget spent: skipped, not started.
    report = gpu_check.run_check(tmp_path / "check", "cpu", quick=True, budget_s=10.3)
    items = report["items"]
    assert items["instruments"]["status"] == "timeout" and items["instruments"]["timeout_s"] == 0.5
    assert items["packing"] == {"status": "skipped", "reason": "total budget spent"}
    written = json.loads((tmp_path / "check" / "gpu_check.json").read_text())
    assert written["items"] == items
    assert "instruments: timeout" in (tmp_path / "check" / "gpu_check.md").read_text()


@pytest.mark.slow
def test_the_script_runs_every_item_on_cpu(run_cli, tmp_path):
    proc = run_cli("--out", "check", "--quick", "--device", "cpu", script="scripts/gpu_check.py")
    report = json.loads((tmp_path / "check" / "gpu_check.json").read_text())
    assert {name: item["status"] for name, item in report["items"].items()} == dict.fromkeys(
        gpu_check.ITEMS, "ok"
    )
    sweep = report["items"]["sweep"]
    assert sweep["all_completed"] and sweep["tensorboard_complete"] and sweep["jobs_expected"] == 2
    assert "sweep: 2 jobs, all completed True" in proc.stdout


def test_precheck_prints_versions_and_what_is_missing(monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "NEEDED", ("lightning", "no_such_module", "no_pkg.sub"))
    gpu_check.main(["--precheck"])
    line = capsys.readouterr().out.strip()
    assert f"torch {torch.__version__}" in line
    assert line.endswith("missing: no_such_module, no_pkg.sub")
