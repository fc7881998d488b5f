"""The instruments: definitions (dead, saturated, gradient norms), phenomena, TensorBoard output."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from fcn_research.callbacks.histograms import FixedRangeHistograms
from fcn_research.callbacks.jacobian import hidden_jacobian_singular_values
from fcn_research.callbacks.neurons import neuron_stats, peak_derivative
from fcn_research.callbacks.probe import sample_probe
from fcn_research.callbacks.schedule import LogSchedule
from fcn_research.initializers import Orthogonal
from fcn_research.model import MLP
from fcn_research.results import read_result, write_json_atomic
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
    # Orders of magnitude below 1 (measured: 1.5e-5 and 5.9e-3 for seeds 0 and 1).
    assert init["grad_norm/ratio_first_last"] < 1e-2


def _probe_grad_norms(module, x, y) -> list[float]:
    module.zero_grad()
    loss, _ = module.loss_and_predictions(x, y)
    loss.backward()
    return [linear.weight.grad.norm().item() for linear in module.model.linears]


def test_grad_norms_are_the_probe_gradient_at_step_0_and_at_the_end(make_cfg, tmp_path):
    cfg = make_cfg(*SMALL, "depth=3", "max_epochs=2", output_dir=tmp_path / "job")
    result = train(cfg)
    # Same seed, same build: the network at step 0, then the final one from the checkpoint,
    # each on the probe set (512 fixed training samples: here all 160 of them).
    L.seed_everything(cfg.seed, verbose=False)
    datamodule, module = build(cfg)
    x, y = sample_probe(datamodule.x_train, datamodule.y_train, 512)
    at_init = _probe_grad_norms(module, x, y)
    state = torch.load(tmp_path / "job" / "checkpoints" / "last.ckpt", weights_only=False)
    module.load_state_dict(state["state_dict"])
    at_end = _probe_grad_norms(module, x, y)
    for i in range(3):
        tag = f"grad_norm/layer_{i + 1:02d}"
        assert result["init"][tag] == pytest.approx(at_init[i], rel=1e-5)
        assert result["metrics"][tag] == pytest.approx(at_end[i], rel=1e-5)
    assert at_init != pytest.approx(at_end, rel=1e-3)  # it trained in between


def test_every_tag_shares_the_optimizer_step_axis(make_cfg, tmp_path):
    # 120 training samples (of 200; 40 validate, 40 test) in batches of 64: 2 optimizer steps
    # per epoch, and with the default steps_per_batch=8 one Lightning batch per epoch
    # (Lightning's own count: 1, 2, 3).
    cfg = make_cfg(*SMALL, "max_epochs=3", output_dir=tmp_path / "job")
    result = train(cfg)
    assert result["global_step"] == 6
    acc = EventAccumulator(str(tmp_path / "job"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    epoch_ends = [2, 4, 6]
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert [e.step for e in acc.Scalars(tag)] == epoch_ends, tag
    assert sorted({e.step for e in acc.Scalars("epoch")}) == epoch_ends
    assert [e.value for e in acc.Scalars("train/loss")][-1] == pytest.approx(
        result["metrics"]["train/loss"]
    )
    assert [e.step for e in acc.Scalars("grad_norm/layer_01")] == list(range(7))
    assert [e.step for e in acc.Scalars("neurons/dead_fraction")] == list(range(7))
    assert [e.step for e in acc.Scalars("test/acc")] == [6]  # once, after training
    assert {e.step for e in acc.Images("decision_boundary")} <= {0, *epoch_ends}
    assert max(e.step for e in acc.Images("decision_boundary")) == 6


def test_train_loss_is_a_mean_over_samples(make_cfg, tmp_path):
    # 800 training samples (no test split held out) in batches of 700 and 100; lr 1e-12 keeps
    # the network as it was built, so the epoch's train/loss is the mean loss over the 800
    # samples (a mean of the two batch means would weigh the 100 samples 7x as much).
    cfg = make_cfg(
        "callbacks=none", "max_epochs=1", "data.num_samples=1000", "data.test_fraction=0",
        "batch_size=700", "lr=1e-12", output_dir=tmp_path / "job",
    )  # fmt: skip
    result = train(cfg)
    L.seed_everything(cfg.seed, verbose=False)
    datamodule, module = build(cfg)
    with torch.no_grad():
        loss, _ = module.loss_and_predictions(datamodule.x_train, datamodule.y_train)
    assert len(datamodule.x_train) == 800
    assert result["metrics"]["train/loss"] == pytest.approx(loss.item(), rel=1e-5)


def test_pruned_layers_keep_their_gradients(make_cfg, tmp_path):
    # ModelPruning turns `weight` into weight_orig * mask: the gradient lives on weight_orig.
    cfg = make_cfg(
        "experiment=pruning", "max_epochs=3", "callbacks.pruning.amount=0.5",
        output_dir=tmp_path / "job",
    )  # fmt: skip
    result = train(cfg)
    assert result["metrics"]["pruning/sparsity"] == pytest.approx(0.875, abs=1e-3)
    for tag in ("grad_norm/layer_01", "grad_norm/layer_03", "grad_norm/ratio_first_last"):
        value = result["metrics"][tag]
        assert value is not None and 0.0 < value < float("inf"), (tag, value)
    acc = EventAccumulator(str(tmp_path / "job"), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    first_pruning = acc.Scalars("pruning/sparsity")[1].step
    after = [e for e in acc.Scalars("grad_norm/layer_01") if e.step > first_pruning]
    assert after and all(e.value > 0 for e in after)
    grads = [e for e in acc.Histograms("grad/layer_01") if e.step > first_pruning]
    assert grads and all(sum(e.histogram_value.bucket) == 64 * 64 for e in grads)
    # The gradient the optimizer applies is masked: every pruned weight's is exactly zero,
    # so the two bins that meet at zero hold at least the pruned weights.
    pruned = round(result["metrics"]["pruning/sparsity/layer_01"] * 64 * 64)
    bucket = grads[-1].histogram_value.bucket
    assert pruned > 1000 and bucket[31] + bucket[32] >= pruned


class Crash(Callback):
    """Fails training at optimizer step 3 (a test-local stand-in for a crash or a kill)."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == 3:
            raise RuntimeError("crash at step 3")


def test_init_reaches_result_json_as_soon_as_step_0_is_measured(make_cfg, tmp_path):
    cfg = make_cfg(*SMALL, "max_epochs=3", "+callbacks.crash._target_=test_instruments.Crash")
    with pytest.raises(RuntimeError, match="crash at step 3"):
        train(cfg)
    result = read_result(cfg.output_dir)
    assert result["status"] == "failed"
    assert result["init"]["grad_norm/layer_01"] > 0
    assert "neurons/dead_fraction" in result["init"]


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


class CentredTanh(nn.Module):
    """Not element-wise: tanh(x) minus its mean over the layer's units."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.tanh(x)
        return t - t.mean(-1, keepdim=True)


class BatchCentred(nn.Module):
    """Mixes the samples of a batch: x minus its mean over the batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(0, keepdim=True)


def test_dead_and_saturated_use_each_units_own_derivative():
    torch.manual_seed(0)
    model = MLP(3, 1, depth=2, width=6, activation=CentredTanh)
    x = torch.randn(50, 3)
    stats = neuron_stats(model, x)
    assert stats["neurons/dead_fraction"].item() == 0.0  # a column sum gave 1.0: sum_j dJ = 0
    # The Jacobian's diagonal, sample by sample, against 5 % of each unit's peak (1 - 1/6).
    z = model.linears[0](x).detach()
    diag = torch.stack([torch.autograd.functional.jacobian(CentredTanh(), r).diagonal() for r in z])
    expected = (diag.abs() < 0.05 * (1 - 1 / 6)).float().mean().item()
    assert stats["neurons/saturated_fraction/layer_01"].item() == pytest.approx(expected)
    assert peak_derivative(CentredTanh(), 6) == pytest.approx(torch.full((6,), 5 / 6), abs=1e-4)


def test_channel_wise_activation_gets_per_unit_peaks(make_cfg):
    prelu = nn.PReLU(num_parameters=4)
    with torch.no_grad():
        prelu.weight.copy_(torch.tensor([0.1, 0.5, 2.0, -3.0]))
    assert peak_derivative(prelu, 4).tolist() == pytest.approx([1.0, 1.0, 2.0, 3.0])
    # And trains with every instrument through the config, as a user's activation would.
    cfg = make_cfg(*SMALL, "activation._target_=torch.nn.PReLU", "+activation.num_parameters=16")
    result = train(cfg)
    assert result["status"] == "completed"
    assert result["init"]["neurons/dead_fraction"] == 0.0  # PReLU's slope is 0.25 below 0


def test_an_activation_that_mixes_samples_is_refused_by_name():
    model = MLP(3, 1, depth=2, width=4, activation=BatchCentred)
    with pytest.raises(ValueError, match=r"BatchCentred mixes the samples.*callbacks.neurons=null"):
        neuron_stats(model, torch.randn(10, 3))


def test_resumed_run_keeps_init_and_histogram_bins(make_cfg, tmp_path):
    common = [*SMALL, "seed=3", "callbacks.model_checkpoint.min_interval_s=0"]
    reference = train(make_cfg(*common, "max_epochs=4", output_dir=tmp_path / "reference"))
    job = tmp_path / "job"
    train(make_cfg(*common, "max_epochs=2", output_dir=job))
    # As a kill after the checkpoint of epoch 2 leaves it, and with step 0 gone from
    # result.json too: only the checkpoint still knows it.
    write_json_atomic(job / "result.json", {**read_result(job), "status": "running", "init": {}})
    resumed = train(make_cfg(*common, "max_epochs=4", output_dir=job))
    assert resumed["status"] == "completed"
    assert resumed["init"] == pytest.approx(reference["init"], rel=1e-6)
    assert resumed["metrics"] == pytest.approx(reference["metrics"], rel=1e-5, abs=1e-6)
    acc = EventAccumulator(str(job), size_guidance={"histograms": 0})
    acc.Reload()
    events = acc.Histograms("grad/layer_02")
    assert {e.step for e in events} >= {0, 4, 8}  # before and after the resume
    acc.Reload()
    for tag in ("train/loss", "val/acc"):  # one step axis across the resume too
        assert [e.step for e in acc.Scalars(tag)] == [2, 4, 6, 8], tag
    # The bins (as widened up to the checkpoint) hold across the resume: the same at every
    # step as in the run that was never interrupted.
    ref = EventAccumulator(str(tmp_path / "reference"), size_guidance={"histograms": 0})
    ref.Reload()
    limits = {e.step: list(e.histogram_value.bucket_limit) for e in events}
    ref_limits = {
        e.step: list(e.histogram_value.bucket_limit) for e in ref.Histograms("grad/layer_02")
    }
    assert limits == ref_limits


def test_histogram_range_doubles_when_values_exceed_it():
    hist = FixedRangeHistograms(bins=8)
    ranges, counts = [], []
    # tanh, depth 3, layer 1: weights in [-2.4, 1.9] (and one at 5) long after a first
    # event in [-1, 1] set the range to +-1.5. A second member of the stack holds the same
    # values x10 and keeps ranges of its own.
    for x in ([-1.0, 0.5, 1.0], [-2.4, 0.0, 1.9, 5.0], [0.1]):
        rows = hist.compute({"weight/layer_01": torch.tensor([x, [10 * v for v in x]])})[0]
        hist.keep_ranges(["weight/layer_01"], rows.tolist())
        ranges.append(rows[0, 0, 0].item())
        counts.append(rows[0, 0, 5:].tolist())
        assert rows[0, 1, 5:].tolist() == counts[-1]  # same bins in units of its range
    assert ranges == pytest.approx([1.5, 6.0, 6.0])  # doubled twice, and kept
    assert hist.ranges == {"weight/layer_01": pytest.approx([6.0, 60.0])}
    # Bins of width 1.5 over [-6, 6]: no value is clipped into an edge bin.
    assert counts[1] == [0, 0, 1, 0, 1, 1, 0, 1]
    assert [sum(c) for c in counts] == [3, 4, 1]
    with pytest.raises(ValueError, match="even number >= 2, got 7"):
        FixedRangeHistograms(bins=7)


def test_jacobian_singular_values_of_a_linear_orthogonal_stack_are_one():
    """Identity activation and orthogonal square weights: J is orthogonal, every singular
    value 1; scaling the hidden weights by 2 scales them by 2^(depth - 2)."""
    torch.manual_seed(0)
    net = MLP(5, 3, depth=5, width=16, activation=nn.Identity)
    Orthogonal()(net)
    s = hidden_jacobian_singular_values(net, torch.randn(4, 5))
    assert s.shape == (1, 4, 16)  # (members, samples, width): a plain MLP is a stack of one
    assert s.min().item() == pytest.approx(1.0, abs=1e-5)
    assert s.max().item() == pytest.approx(1.0, abs=1e-5)
    with torch.no_grad():
        for linear in net.linears[1:-1]:
            linear.weight.mul_(2)
    s = hidden_jacobian_singular_values(net, torch.randn(4, 5))
    assert s.mean().item() == pytest.approx(8.0, rel=1e-5)


@pytest.mark.parametrize("members", [1, 2])
@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh, HardClip])
def test_instruments_compute_on_the_device_of_the_model_and_data(monkeypatch, members, activation):
    """Every tensor the instruments and the stacked optimizers create goes where the model and
    data are, never where an activation's (absent) parameters are: shown on the `meta`
    device, which refuses to mix with the CPU as CUDA does (and reads no values)."""
    import functools

    import fcn_research.callbacks.histograms as histograms
    from fcn_research.callbacks.decision_boundary import render_boundary, render_neuron_maps
    from fcn_research.callbacks.function_fit import render_function_fit
    from fcn_research.callbacks.gradients import grad_norms, probe_gradients
    from fcn_research.callbacks.neurons import profile_layers
    from fcn_research.callbacks.sparsity import weight_sparsity
    from fcn_research.model import StackedMLP
    from fcn_research.module import FCNModule
    from fcn_research.stacked_optim import stacked_optimizer

    meta = torch.device("meta")
    torch.manual_seed(0)
    optimizers = [functools.partial(torch.optim.Adam, lr=0.1)] * members
    module = FCNModule(
        StackedMLP([MLP(2, 3, 4, 8, activation) for _ in range(members)]),
        "multiclass",
        3,
        optimizers,
    ).to(meta)
    model = module.model
    x, y = torch.empty(6, 2, device=meta), torch.zeros(6, dtype=torch.long, device=meta)
    profiles = profile_layers(model)
    assert {p.peak.device for p in profiles} == {meta}
    stats = neuron_stats(model, x, profiles=profiles)
    assert stats["neurons/dead_fraction"].device == meta
    assert hidden_jacobian_singular_values(model, x).device == meta
    grads = probe_gradients(module, x, y)
    assert grad_norms(grads)["grad_norm/ratio_first_last"].device == meta
    assert weight_sparsity(model)["pruning/sparsity"].device == meta
    assert sample_probe(x, y, 4)[0].device == meta
    # bincount has no meta kernel: stood in for by one of the right shape, on its input's device.
    monkeypatch.setattr(
        histograms.torch,
        "bincount",
        lambda idx, minlength: torch.zeros(minlength, dtype=torch.long, device=idx.device),
    )
    hist = FixedRangeHistograms(8)
    hist.ranges = {"grad/layer_01": [1.0] * members}  # set: the first event reads values
    rows, _ = hist.compute({"grad/layer_01": grads[0]})
    assert rows.device == meta
    assert render_boundary(module, x, y, 16).device == meta
    assert {m.device for m in render_neuron_maps(module, x, 8)} == {meta}
    curve = FCNModule(
        StackedMLP([MLP(1, 1, 3, 8, activation) for _ in range(members)]),
        "regression",
        0,
        optimizers,
    ).to(meta)
    assert render_function_fit(curve, x[:, :1], x[:, 0]).device == meta
    optimizer = stacked_optimizer(optimizers, model.parameters())
    for p in model.parameters():
        p.grad = torch.empty_like(p)
    optimizer.step()
    optimizer.step()


def _differing_hparams(job_dir) -> list[str]:
    """The hparams the job's HParams experiment summary marks as differing."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    for events in job_dir.glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "hparams":
                    continue
                data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
                if data.HasField("experiment"):
                    return sorted(i.name for i in data.experiment.hparam_infos if i.differs)
    raise AssertionError(f"no HParams experiment in {job_dir}")


@pytest.mark.parametrize(
    ("launcher", "swept", "key"),
    [("local", "activation=relu,tanh", "activation"), ("stacked", "seed=0,1", "seed")],
)
def test_hparams_mark_only_the_keys_a_sweep_gives_two_values(
    run_cli, tmp_path, launcher, swept, key
):
    sweep = tmp_path / "sweep"
    run_cli(
        "-m",
        f"launcher={launcher}",
        swept,
        "batch_size=16",
        "data.noise=0.1",
        *SMALL,
        "callbacks=none",
        "+callbacks.hparams._target_=fcn_research.callbacks.HParamsSummary",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweep}",
    )
    jobs = sorted(p for p in sweep.iterdir() if (p / "result.json").is_file())
    assert len(jobs) == 2
    members = [(read_result(j).get("stack") or {}).get("members", 1) for j in jobs]
    assert members == ([2, 2] if launcher == "stacked" else [1, 1])
    assert [read_result(j)["hparams"]["batch_size"] for j in jobs] == [16, 16]
    # Set by the command but one value for the whole sweep: not differing.
    assert [_differing_hparams(j) for j in jobs] == [[key], [key]]
