"""The instruments: definitions (dead, saturated, gradient norms), phenomena, TensorBoard output."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from fcn_research.callbacks.neurons import neuron_stats, peak_derivative
from fcn_research.callbacks.schedule import LogSchedule
from fcn_research.model import MLP
from fcn_research.train import build, train

SMALL = ["data.num_samples=200", "width=16", "max_epochs=1"]


class HardClip(nn.Module):
    """A test-local activation: clamp(x, -1, 1); no gradient passes where |x| > 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-1.0, 1.0)


def test_schedule_is_dense_early_sparse_later():
    s = LogSchedule(1, 1000)
    logged = [step for step in range(0, 3001) if s(step)]
    assert logged[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20]
    assert 150 not in logged and 200 in logged and 2000 in logged and 2500 not in logged
    with pytest.raises(ValueError, match="min_interval=0"):
        LogSchedule(0, 10)


def test_dead_fraction_is_exact_for_relu():
    torch.manual_seed(0)
    model = MLP(5, 1, depth=4, width=12, activation=nn.ReLU)
    with torch.no_grad():  # push some units into the dead regime
        model.linears[1].bias[:6] = -50.0
    x = torch.randn(300, 5)
    stats = neuron_stats(model, x)
    h = x
    for i, (lin, act) in enumerate(zip(model.linears, model.activations, strict=False), 1):
        z = lin(h).detach()
        expected = (z <= 0).all(0).float().mean().item()
        assert stats[f"neurons/dead_fraction/layer_{i:02d}"].item() == expected
        h = act(z)
    assert stats["neurons/dead_fraction/layer_02"].item() >= 0.5


def test_identity_network_has_no_dead_or_saturated_units():
    model = MLP(3, 2, depth=3, width=8, activation=nn.Identity)
    stats = neuron_stats(model, torch.randn(100, 3))
    assert stats["neurons/dead_fraction"].item() == 0.0
    assert stats["neurons/saturated_fraction/layer_01"].item() == 0.0


def test_activation_defined_on_the_spot_works_unmodified():
    torch.manual_seed(1)
    model = MLP(4, 1, depth=2, width=10, activation=HardClip)
    with torch.no_grad():
        model.linears[0].bias[:4] = 100.0  # |z| > 1 everywhere: clamp passes no gradient
    x = torch.randn(200, 4)
    z = model.linears[0](x).detach()
    expected_dead = ((z.abs() > 1).all(0)).float().mean().item()
    stats = neuron_stats(model, x)
    assert stats["neurons/dead_fraction/layer_01"].item() == pytest.approx(expected_dead)
    assert expected_dead >= 0.4
    assert peak_derivative(HardClip()).item() == 1.0
    assert peak_derivative(nn.Sigmoid()).item() == pytest.approx(0.25)


def test_custom_activation_trains_with_every_instrument(make_cfg):
    result = train(make_cfg(*SMALL, "activation._target_=test_instruments.HardClip"))
    assert result["status"] == "completed"
    assert "neurons/dead_fraction/layer_01" in result["init"]


@pytest.mark.parametrize(
    "activation, dead, grads_below_zero", [("relu", 1.0, True), ("leaky_relu", 0.0, False)]
)
def test_negative_layer_kills_the_layer_and_the_gradient_below(
    make_cfg, activation, dead, grads_below_zero
):
    cfg = make_cfg(
        *SMALL,
        f"activation={activation}",
        "depth=4",
        "initializer=negative_layer",
        "initializer.target_layer=2",
    )
    init = train(cfg)["init"]
    assert init["neurons/dead_fraction/layer_02"] == dead
    for layer in (1, 2):
        norm = init[f"grad_norm/layer_{layer:02d}"]
        assert (norm == 0.0) if grads_below_zero else (norm > 0.0)
    assert init["grad_norm/layer_04"] > 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_constant_layer_on_deep_sigmoid_vanishes(make_cfg, seed):
    cfg = make_cfg(
        *SMALL,
        "activation=sigmoid",
        "depth=7",
        "initializer=constant_layer",
        "initializer.target_layer=1",
        "initializer.value=1.0",
        f"seed={seed}",
    )
    init = train(cfg)["init"]
    assert init["grad_norm/ratio_first_last"] < 1e-3  # orders of magnitude below 1


def test_grad_norms_equal_a_direct_computation(make_cfg):
    cfg = make_cfg(*SMALL, "depth=3")
    result = train(cfg)
    # Same seed, same build, same first batch: the gradient the first update used.
    torch.manual_seed(cfg.seed)
    import lightning as L

    L.seed_everything(cfg.seed, verbose=False)
    datamodule, module = build(cfg)
    x, y = datamodule.first_train_batch()
    loss, _ = module.loss_and_predictions(x, y)
    loss.backward()
    for i, linear in enumerate(module.model.linears, 1):
        direct = linear.weight.grad.norm().item()
        assert result["init"][f"grad_norm/layer_{i:02d}"] == pytest.approx(direct, rel=1e-5)


def test_tensorboard_events_hold_every_instrument(make_cfg, tmp_path):
    cfg = make_cfg(*SMALL, "depth=3", output_dir=tmp_path / "job")
    train(cfg)
    acc = EventAccumulator(str(tmp_path / "job"), size_guidance={"histograms": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in (
        "grad_norm/layer_01",
        "grad_norm/layer_03",
        "grad_norm/ratio_first_last",
        "neurons/dead_fraction",
        "neurons/dead_fraction/layer_02",
        "neurons/saturated_fraction/layer_01",
        "activations/mean/layer_01",
        "activations/std/layer_02",
        "train/loss",
        "val/acc",
    ):
        assert tag in tags["scalars"], tag
    assert acc.Scalars("grad_norm/layer_01")[0].step == 0
    assert acc.Scalars("neurons/dead_fraction")[0].step == 0
    for i, (fan_in, fan_out) in enumerate([(2, 16), (16, 16), (16, 1)], 1):
        for kind in ("weight", "grad"):
            events = acc.Histograms(f"{kind}/layer_{i:02d}")
            for event in events:
                assert sum(event.histogram_value.bucket) == fan_in * fan_out
            assert len(events[0].histogram_value.bucket) == 64
    assert "decision_boundary" in tags["images"]
    steps = [e.step for e in acc.Images("decision_boundary")]
    assert steps[0] == 0 and steps[-1] > 0
    assert "hp_metric" not in tags["scalars"]


def test_inspect_init_prints_the_init_values_of_training(make_cfg, run_cli):
    overrides = ["activation=sigmoid", "depth=7", "initializer=constant_layer", "width=16"]
    init = train(make_cfg(*overrides, "data.num_samples=200"))["init"]
    proc = run_cli(*overrides, "data.num_samples=200", script="scripts/inspect_init.py")
    assert f"grad_norm/ratio_first_last = {init['grad_norm/ratio_first_last']:.3g}" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if "│    01 │" in line)
    assert f"{init['grad_norm/layer_01']:.3g}" in row
    assert f"{init['activations/std/layer_01']:.3g}" in row
