"""The lesson's experiments (conf/experiment/): each composes, runs, and shows its phenomenon.

Fast tests run each experiment reduced (fewer epochs or samples, via overrides after
``experiment=<name>``); the ``slow`` ones run the full sweeps through the CLI.
"""

from __future__ import annotations

import itertools
import json
import math
import tempfile
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fcn_research.run_dirs import CONF_DIR
from fcn_research.train import build, train

EXPERIMENTS = [
    "xor",
    "vanishing_gradients",
    "depth_without_initializer",
    "dying_relu",
    "leaky_relu_rescue",
    "universal_approximation",
    "zero_centering",
    "selu_self_normalizing",
    "maxout",
    "pruning",
    "activation_zoo",
    "edge_of_chaos",
    "dynamical_isometry",
    "mnist1d_baselines",
]
SMALL = ["data.num_samples=200", "max_epochs=1"]


def new_dir(tmp_path: Path) -> Path:
    """A fresh job dir per run: ``train`` skips a dir whose result.json says completed."""
    return Path(tempfile.mkdtemp(dir=tmp_path))


def init_by_activation(
    make_cfg, tmp_path: Path, key: str, activations: tuple[str, ...], *overrides: str
) -> dict[str, float]:
    """The step-0 value ``key`` (result.json's ``init``) of a one-epoch run per activation."""
    values = {}
    for activation in activations:
        cfg = make_cfg(
            *overrides, "max_epochs=1", f"activation={activation}", output_dir=new_dir(tmp_path)
        )
        values[activation] = train(cfg)["init"][key]
    return values


def sweep_params(cfg) -> dict[str, list[str]]:
    """The experiment's ``hydra.sweeper.params`` as lists of values."""
    return {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_builds_at_its_defaults_and_its_last_sweep_point(make_cfg, name):
    params = sweep_params(make_cfg(f"experiment={name}"))
    assert params, f"{name} has no sweep"
    build(make_cfg(f"experiment={name}"))
    build(make_cfg(f"experiment={name}", *(f"{k}={v[-1]}" for k, v in params.items())))


def assert_xor_outcome(metrics: dict[str, float], learns: bool) -> None:
    """An MLP fits XOR's four points; an affine model cannot do better than predicting 1/2
    everywhere (the BCE gradient vanishes at w = 0, b = 0 and BCE is convex in w, b), so its
    loss stays at ln 2 whatever it trains (its accuracy alone, <= 3/4, would prove nothing)."""
    if learns:
        assert metrics["val/acc"] == 1.0 and metrics["val/loss"] < 0.1, metrics
    else:
        assert metrics["val/loss"] >= math.log(2) - 1e-5, metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "depth, activation, learns",
    [(1, "relu", False), (2, "identity", False), (2, "tanh", True), (2, "relu", True)],
)
def test_xor_needs_a_hidden_layer_and_an_activation(make_cfg, depth, activation, learns, seed):
    cfg = make_cfg(
        "experiment=xor",
        f"depth={depth}",
        f"activation={activation}",
        f"seed={seed}",
        "max_epochs=3",  # 300 steps
    )
    metrics = train(cfg)["metrics"]
    assert_xor_outcome(metrics, learns)


@pytest.mark.parametrize(
    "activation, target_layer, value, bound",
    [("sigmoid", 1, 1.0, 1e-4), ("sigmoid", 4, 1.0, 1e-4), ("tanh", 1, 100.0, 1e-2)],
)
def test_vanishing_gradients_first_layer_far_below_last(
    make_cfg, activation, target_layer, value, bound
):
    # At the experiment's data size: the probe set's 512 samples, where the gradient of the
    # first layer is a mean over many saturated samples (with 160 it is ~1e-3 for sigmoid).
    cfg = make_cfg(
        "experiment=vanishing_gradients",
        "max_epochs=1",
        f"activation={activation}",
        f"initializer.target_layer={target_layer}",
        f"initializer.value={value}",
    )
    assert train(cfg)["init"]["grad_norm/ratio_first_last"] < bound


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_depth_without_initializer_sigmoid_collapses_tanh_does_not(make_cfg, tmp_path, seed):
    ratios = init_by_activation(
        make_cfg,
        tmp_path,
        "grad_rms/ratio_hidden",
        ("sigmoid", "tanh"),
        "experiment=depth_without_initializer",
        "depth=7",
        f"seed={seed}",
    )
    # docs/experiments.md at depth 7: sigmoid < 0.01 and tanh >= 0.1 on every seed
    # (measured 8e-4 / 3e-4 / 8e-4 and 0.41 / 0.70 / 1.48).
    assert ratios["sigmoid"] < 1e-2 and ratios["tanh"] >= 0.1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_depth_without_initializer_sigmoid_trains_at_7_fails_at_10(make_cfg, tmp_path, seed):
    # docs/experiments.md: sigmoid's val/acc is below depth 2's on every seed only from
    # depth 10 (Adam, 5 epochs): measured 0.84-0.86 at depth 7, 0.46-0.54 at depth 10.
    acc = {}
    for depth in (7, 10):
        cfg = make_cfg(
            "experiment=depth_without_initializer",
            "activation=sigmoid",
            f"depth={depth}",
            f"seed={seed}",
            "max_epochs=5",
            output_dir=new_dir(tmp_path),
        )
        acc[depth] = train(cfg)["metrics"]["val/acc"]
    assert acc[7] > 0.75 and acc[10] < 0.65, acc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vanishing_gradients_cases_saturation_and_default_init(make_cfg, tmp_path, seed):
    def init(experiment: str, *overrides: str) -> dict[str, float]:
        cfg = make_cfg(
            f"experiment={experiment}",
            "activation=sigmoid",
            "max_epochs=1",
            f"seed={seed}",
            *overrides,
            output_dir=new_dir(tmp_path),
        )
        return train(cfg)["init"]

    # Layer 4 = 10: that layer's outputs are flat (every unit saturated on every sample),
    # so no gradient passes below it: saturation, not shrinking layer by layer.
    layer4 = init("vanishing_gradients", "initializer.target_layer=4", "initializer.value=10.0")
    assert layer4["neurons/saturated_fraction/layer_04"] == 1.0
    assert layer4["grad_norm/ratio_first_last"] == 0.0
    # Layer 1 = 1.0: within 2x of the same network (depth 7, width 32) at PyTorch's default init.
    layer1 = init("vanishing_gradients", "initializer.target_layer=1", "initializer.value=1.0")
    default = init("depth_without_initializer", "depth=7")
    ratio = layer1["grad_norm/ratio_first_last"] / default["grad_norm/ratio_first_last"]
    assert 0.5 <= ratio <= 2.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dying_relu_fix_bias_kills_the_layer_and_everything_below(make_cfg, tmp_path, seed):
    init = {}
    for fix_bias in (True, False):
        cfg = make_cfg(
            "experiment=dying_relu",
            *SMALL,
            f"initializer.fix_bias={fix_bias}",
            f"seed={seed}",
            output_dir=new_dir(tmp_path),
        )
        init[fix_bias] = train(cfg)["init"]
    assert init[True]["neurons/dead_fraction/layer_02"] == 1.0
    assert init[True]["grad_norm/layer_01"] == 0.0 == init[True]["grad_norm/layer_02"]
    # Without the bias fix, the bias lifts some units: some gradient gets through.
    assert init[False]["neurons/dead_fraction/layer_02"] < 1.0
    assert init[False]["grad_norm/layer_01"] > 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leaky_relu_rescues_the_dead_layer_and_keeps_units_at_large_lr(make_cfg, tmp_path, seed):
    run = {}
    for activation, initializer in itertools.product(
        ("relu", "leaky_relu"), ("negative_layer", "default")
    ):
        cfg = make_cfg(
            "experiment=leaky_relu_rescue",
            f"activation={activation}",
            f"initializer={initializer}",
            f"seed={seed}",
            "max_epochs=5",
            output_dir=new_dir(tmp_path),
        )
        run[activation, initializer] = train(cfg)
    dead = "neurons/dead_fraction"
    relu_neg, leaky_neg = run["relu", "negative_layer"], run["leaky_relu", "negative_layer"]
    assert relu_neg["init"][f"{dead}/layer_02"] == relu_neg["metrics"][f"{dead}/layer_02"] == 1.0
    assert relu_neg["init"]["grad_norm/layer_01"] == 0.0
    assert leaky_neg["init"][dead] == leaky_neg["metrics"][dead] == 0.0
    assert leaky_neg["init"]["grad_norm/layer_01"] > 0.0
    relu_lr = run["relu", "default"]
    assert relu_lr["metrics"][dead] > relu_lr["init"][dead] + 0.2  # lost during training
    assert run["leaky_relu", "default"]["metrics"][dead] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_universal_approximation_error_falls_with_width_and_logs_the_fit(make_cfg, tmp_path, seed):
    mse = {}
    for width in (2, 128):
        out = tmp_path / f"width={width}"
        cfg = make_cfg(
            "experiment=universal_approximation",
            f"width={width}",
            f"seed={seed}",
            # ~1500 optimizer steps: 600 training points (of 1000; 200 validate, 200 test) in 19
            # batches of 32 per epoch.
            "max_epochs=80",
            output_dir=out,
        )
        mse[width] = train(cfg)["metrics"]["val/mse"]
    assert mse[128] < 0.5 * mse[2]
    acc = EventAccumulator(str(tmp_path / "width=128"), size_guidance={"images": 0})
    acc.Reload()
    steps = [e.step for e in acc.Images("function_fit")]
    assert steps[0] == 0 and steps[-1] > 0


def test_function_fit_is_a_no_op_on_2d_data(make_cfg, tmp_path):
    train(make_cfg(*SMALL, output_dir=tmp_path / "moons"))
    acc = EventAccumulator(str(tmp_path / "moons"), size_guidance={"images": 0})
    acc.Reload()
    assert "function_fit" not in acc.Tags()["images"]
    assert "decision_boundary" in acc.Tags()["images"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zero_centering_records_a_loss_curve_per_activation(make_cfg, tmp_path, seed):
    final = {}
    for activation in ("sigmoid", "zero_centred_sigmoid", "tanh"):
        out = tmp_path / activation
        cfg = make_cfg(
            "experiment=zero_centering",
            f"activation={activation}",
            f"seed={seed}",
            "max_epochs=4",
            output_dir=out,
        )
        final[activation] = train(cfg)["metrics"]["train/loss"]
        acc = EventAccumulator(str(out))
        acc.Reload()
        curve = [e.value for e in acc.Scalars("train/loss")]
        assert len(curve) == 4 and all(math.isfinite(v) for v in curve)
    # docs/experiments.md, on every seed: centring lowers sigmoid's loss a little, tanh far more.
    assert final["tanh"] < final["zero_centred_sigmoid"] < final["sigmoid"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_selu_keeps_unit_std_through_32_layers(make_cfg, tmp_path, seed):
    std = init_by_activation(
        make_cfg,
        tmp_path,
        "activations/std/layer_31",
        ("selu", "relu", "tanh"),
        "experiment=selu_self_normalizing",
        f"seed={seed}",
    )
    assert 0.8 < std["selu"] < 1.25
    assert std["relu"] < 0.01 and std["tanh"] < 0.3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_selu_experiment_relu_keeps_its_scale_at_its_recommended_init(make_cfg, tmp_path, seed):
    # docs/experiments.md: at lecun_normal relu's variance halves every layer (std x0.71 per
    # layer); at He init (kaiming_normal) its std at layer 31 stays of order 1 (0.58-0.96).
    init = {}
    for initializer in ("lecun_normal", "kaiming_normal"):
        cfg = make_cfg(
            "experiment=selu_self_normalizing",
            "activation=relu",
            f"initializer={initializer}",
            f"seed={seed}",
            "max_epochs=1",
            output_dir=new_dir(tmp_path),
        )
        init[initializer] = train(cfg)["init"]
    std = {
        k: (v["activations/std/layer_01"], v["activations/std/layer_31"]) for k, v in init.items()
    }
    per_layer = (std["lecun_normal"][1] / std["lecun_normal"][0]) ** (1 / 30)
    assert per_layer == pytest.approx(2**-0.5, abs=0.03)
    assert std["kaiming_normal"][1] > 0.3


def test_maxout_doubles_the_hidden_parameters_at_equal_width(make_cfg, tmp_path):
    params, acc = {}, {}
    for activation in ("maxout", "relu"):
        cfg = make_cfg(
            "experiment=maxout",
            f"activation={activation}",
            # At 10 epochs both sat at 0.53-0.67 depending on the seed; at 20, 0.69-0.78.
            "max_epochs=20",
            output_dir=new_dir(tmp_path),
        )
        _, module = build(cfg)
        params[activation] = sum(p.numel() for p in module.model.parameters())
        acc[activation] = train(cfg)["metrics"]["val/acc"]
    # 2 -> 32 -> 32 -> 1; Maxout's Linears feed 2 pieces per unit.
    assert params["relu"] == (2 * 32 + 32) + (32 * 32 + 32) + (32 + 1) == 1185
    assert params["maxout"] == (2 * 64 + 64) + (32 * 64 + 64) + (32 + 1) == 2337
    assert min(acc.values()) > 0.6


def test_pruning_sparsity_grows_with_amount(make_cfg, tmp_path):
    sparsity = []
    for amount in (0.0, 0.2, 0.4):
        cfg = make_cfg(
            "experiment=pruning",
            "max_epochs=2",
            f"callbacks.pruning.amount={amount}",
            output_dir=new_dir(tmp_path),
        )
        result = train(cfg)
        assert result["init"]["pruning/sparsity"] == 0.0
        sparsity.append(result["metrics"]["pruning/sparsity"])
        # Every epoch prunes `amount` of what is left: 1 - (1 - amount)^epochs.
        assert sparsity[-1] == pytest.approx(1 - (1 - amount) ** 2, abs=1e-3)
    assert sparsity[0] < sparsity[1] < sparsity[2]


PRUNED = ["experiment=pruning", "max_epochs=2", "callbacks.pruning.amount=0.6"]


def assert_final_metrics_describe_the_checkpoint(cfg, out: Path, result: dict) -> None:
    """result.json's final val/* and sparsity, and the last val/acc TensorBoard point, are a
    re-evaluation of the final checkpoint's weights on the validation split; test/* the same
    on the test split (the final pruned network is the one tested)."""
    datamodule, module = build(cfg)
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    module.load_state_dict(state["state_dict"])
    module.eval()
    with torch.no_grad():
        loss, pred = module.loss_and_predictions(datamodule.x_val, datamodule.y_val)
    weights = [linear.weight for linear in module.model.linears]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert result["metrics"]["pruning/sparsity"] == pytest.approx(
        zeros / sum(w.numel() for w in weights)
    )
    acc = (pred.argmax(-1) == datamodule.y_val).float().mean().item()
    assert result["metrics"]["val/acc"] == pytest.approx(acc, abs=1e-6)
    assert result["metrics"]["val/loss"] == pytest.approx(loss.item(), rel=1e-5)
    events = EventAccumulator(str(out))
    events.Reload()
    last = events.Scalars("val/acc")[-1]
    assert last.step == result["global_step"]
    assert last.value == pytest.approx(acc, abs=1e-6)
    with torch.no_grad():
        loss, pred = module.loss_and_predictions(datamodule.x_test, datamodule.y_test)
    test_acc = (pred.argmax(-1) == datamodule.y_test).float().mean().item()
    assert result["metrics"]["test/acc"] == pytest.approx(test_acc, abs=1e-6)
    assert result["metrics"]["test/loss"] == pytest.approx(loss.item(), rel=1e-5)
    (tested,) = events.Scalars("test/acc")
    assert tested.step == result["global_step"]


def test_pruning_final_metrics_describe_the_final_network(make_cfg, tmp_path):
    out = tmp_path / "pruned"
    cfg = make_cfg(*PRUNED, output_dir=out)
    assert_final_metrics_describe_the_checkpoint(cfg, out, train(cfg))


@pytest.mark.slow  # ~16 s: two spawned ranks, twice (fit, then the final validation)
def test_pruning_final_metrics_describe_the_final_network_under_ddp_spawn(
    make_cfg, run_cli, tmp_path
):
    out = tmp_path / "ddp"
    ddp = ["trainer=ddp_spawn", "trainer.accelerator=cpu", "trainer.devices=2"]
    run_cli(*PRUNED, *ddp, "trainer.enable_progress_bar=false", f"hydra.run.dir={out}")
    result = json.loads((out / "result.json").read_text())
    assert_final_metrics_describe_the_checkpoint(make_cfg(*PRUNED, *ddp), out, result)


def test_activation_zoo_sweeps_every_activation_config(make_cfg, tmp_path):
    cfg = make_cfg("experiment=activation_zoo")
    swept = sorted(sweep_params(cfg)["activation"])
    assert swept == sorted(p.stem for p in (CONF_DIR / "activation").glob("*.yaml"))
    for activation in ("identity", "maxout"):
        for data in ("spiral", "digits"):
            cfg = make_cfg(
                "experiment=activation_zoo",
                f"activation={activation}",
                f"data={data}",
                output_dir=new_dir(tmp_path),
            )
            assert train(cfg)["status"] == "completed"


def test_experiment_sweep_runs_from_the_cli(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    run_cli(
        "-m",
        "experiment=dying_relu",
        "max_epochs=1",
        "data.num_samples=200",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweep}",
    )
    results = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/result.json")}
    assert len(results) == 4
    for name, result in results.items():
        dead = result["init"]["neurons/dead_fraction/layer_02"]
        if "fix_bias=true" in name and "target_layer=2" in name:
            assert dead == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_full_experiment_sweep_completes(make_cfg, run_cli, tmp_path: Path, name):
    sweep = tmp_path / "sweep"
    run_cli(
        "-m",
        f"experiment={name}",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweep}",
        timeout=1800,
    )
    results = [json.loads(p.read_text()) for p in sweep.glob("*/result.json")]
    jobs = math.prod(len(v) for v in sweep_params(make_cfg(f"experiment={name}")).values())
    assert len(results) == jobs
    assert all(r["status"] == "completed" for r in results)
    if name == "xor":
        for r in results:
            learns = "depth=2" in r["overrides"] and "activation=identity" not in r["overrides"]
            assert_xor_outcome(r["metrics"], learns)
    if name == "universal_approximation":
        mse = {int(r["hparams"]["width"]): r["metrics"]["val/mse"] for r in results}
        assert mse[2] > mse[8] > mse[32] > mse[128]
    if name == "pruning":
        amount = {
            float(o.split("=")[1]): r["metrics"]["pruning/sparsity"]
            for r in results
            for o in r["overrides"]
            if o.startswith("callbacks.pruning.amount=")
        }
        sparsity = [amount[a] for a in sorted(amount)]
        assert sparsity == sorted(sparsity) and sparsity[0] == 0.0 and sparsity[-1] > 0.9
    if name == "selu_self_normalizing":
        std = {
            r["hparams"]["activation"]: r["init"]["activations/std/layer_31"]
            for r in results
            if r["hparams"]["initializer"] == "lecun_normal"  # the shared init
        }
        assert 0.8 < std["selu"] < 1.25 and std["relu"] < 0.01 and std["tanh"] < 0.3


def test_edge_of_chaos_trains_within_6_xi_c_and_not_beyond(make_cfg, tmp_path):
    """Depth 16: ordered sigma_w2 = 0.25 (6 xi_c = 4) does not train, critical 1.76 does."""
    results = {}
    for sigma_w2 in ("0.25", "1.76"):
        cfg = make_cfg(
            "experiment=edge_of_chaos",
            "depth=16",
            f"initializer.sigma_w2={sigma_w2}",
            output_dir=new_dir(tmp_path),
        )
        results[sigma_w2] = train(cfg)
    ordered, critical = results["0.25"], results["1.76"]
    assert 6 * ordered["theory"]["xi_c"] < 16 < 6 * critical["theory"]["xi_c"]
    assert ordered["metrics"]["train/acc"] < 0.3
    assert critical["metrics"]["train/acc"] > 0.6


def test_dynamical_isometry_orthogonal_tanh_keeps_the_spectrum_together(make_cfg, tmp_path):
    """Depth 16 at step 0: max / mean singular value of the hidden Jacobian."""
    spread = {}
    for name, overrides in {
        "tanh orthogonal": [],
        "tanh gaussian": ["initializer=variance_scaling"],
        "relu he": ["activation=relu", "initializer=variance_scaling", "initializer.sigma_w2=2"],
    }.items():
        cfg = make_cfg(
            "experiment=dynamical_isometry",
            "depth=16",
            "max_epochs=1",
            "callbacks.jacobian.min_interval=1000",  # step 0 and the end only
            *overrides,
            output_dir=new_dir(tmp_path),
        )
        init = train(cfg)["init"]
        spread[name] = init["jacobian/singular_value_max"] / init["jacobian/singular_value_mean"]
    assert spread["tanh orthogonal"] < 3
    assert spread["tanh gaussian"] > 3 * spread["tanh orthogonal"]
    assert spread["relu he"] > 3 * spread["tanh orthogonal"]
