"""Stacked members: M jobs trained as one vectorised model give each job what its solo run
gives (to float32 tolerance), with per-member optimizers, isolation and resume."""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import math

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fcn_research import fit as fit_module
from fcn_research.callbacks import checkpoint as checkpoint_module
from fcn_research.callbacks.checkpoint import merge_checkpoints, split_checkpoint
from fcn_research.module import FCNModule
from fcn_research.results import read_result
from fcn_research.stack_spec import (
    CALLBACK_MEMBER_STATE,
    CHECKPOINT_MEMBER_LISTS,
    MEMBER_KEYS,
    MEMBER_OPTIMIZER_HPARAMS,
)
from fcn_research.stacked_optim import stack_refusal, stacked_optimizer
from fcn_research.train import train, train_stack

# Float32 tolerance of a member against its solo run. Not bit-exact: a batched matrix
# product (bmm) sums in another order than the solo run's (mm), so results differ in the
# last bits (~1e-7 relative per step), and training amplifies that a little per step.
RTOL, ATOL = 2e-4, 1e-5
DIGITS = ["data=digits", "depth=3", "width=32", "max_epochs=2", "steps_per_batch=4"]
# Members that differ in what a stack allows: seed, learning rate, initializer.
MEMBERS = [
    ["seed=0"],
    ["seed=1", "lr=0.003"],
    ["seed=2", "initializer=xavier_normal"],
]


def _close(a: dict, b: dict, keys: set[str]) -> list[str]:
    return [
        f"{k}: {a[k]} vs {b[k]}"
        for k in sorted(keys)
        if not (a[k] is None and b[k] is None)
        and not math.isclose(a[k], b[k], rel_tol=RTOL, abs_tol=ATOL)
    ]


def test_stack_members_equal_their_solo_runs(make_cfg, tmp_path):
    solo = [
        train(make_cfg(*DIGITS, *m, output_dir=tmp_path / f"solo_{k}"))
        for k, m in enumerate(MEMBERS)
    ]
    cfgs = [
        make_cfg(*DIGITS, *m, output_dir=tmp_path / f"stack_{k}") for k, m in enumerate(MEMBERS)
    ]
    stacked = train_stack(cfgs, {"id": "stack_000"})
    for k, (one, member) in enumerate(zip(solo, stacked, strict=True)):
        assert member["status"] == one["status"] == "completed"
        assert member["stack"] == {"id": "stack_000", "members": 3}
        assert member["hparams"] == one["hparams"]
        assert set(member["metrics"]) == set(one["metrics"])
        assert set(member["init"]) == set(one["init"]) and member["init"]
        assert not _close(member["init"], one["init"], set(one["init"])), k
        assert not _close(member["metrics"], one["metrics"], set(one["metrics"])), k
        assert member["global_step"] == one["global_step"] == 34
        assert member["theory"] == one["theory"]  # each member's own initializer's prediction
        assert read_result(tmp_path / f"stack_{k}") == member
        # Every member has its own TensorBoard run with the solo run's tags.
        runs = [
            EventAccumulator(str(tmp_path / f"{kind}_{k}")).Reload() for kind in ("solo", "stack")
        ]
        for kind in ("scalars", "histograms"):
            assert set(runs[1].Tags()[kind]) == set(runs[0].Tags()[kind]), kind
        ours = [e.value for e in runs[1].Scalars("val/acc")]
        theirs = [e.value for e in runs[0].Scalars("val/acc")]
        assert ours == pytest.approx(theirs, rel=RTOL, abs=ATOL)
    # The members differ from each other: the comparison above is not trivially true.
    assert len({round(r["metrics"]["train/loss"], 6) for r in stacked}) == 3


def test_a_diverging_member_stops_and_the_others_are_unaffected(make_cfg, tmp_path):
    small = ["optimizer=sgd", "data=function", "max_epochs=3", "depth=3", "width=16"]
    calm = train(make_cfg(*small, "lr=0.01", output_dir=tmp_path / "calm"))
    cfgs = [
        make_cfg(*small, "lr=0.01", output_dir=tmp_path / "a"),
        make_cfg(*small, "lr=1e12", output_dir=tmp_path / "b"),
    ]
    ok, wild = train_stack(cfgs)
    assert wild["status"] == "diverged"
    assert ok["status"] == "completed"
    assert ok["epochs"] == calm["epochs"] and ok["global_step"] == calm["global_step"]
    assert not _close(ok["metrics"], calm["metrics"], set(calm["metrics"]))


def _event_steps(run_dir) -> dict[str, list[int]]:
    """Per TensorBoard tag of a run (scalars, histograms, images), the steps of its points."""
    run = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    run.Reload()
    tags = run.Tags()
    points = {t: run.Scalars(t) for t in tags["scalars"]}
    points.update({t: run.Histograms(t) for t in tags["histograms"]})
    points.update({t: run.Images(t) for t in tags["images"]})
    return {t: [e.step for e in events] for t, events in points.items()}


def test_a_diverged_member_is_recorded_where_its_solo_run_stops(make_cfg, tmp_path):
    small = ["optimizer=sgd", "data=function", "max_epochs=3", "depth=3", "width=16"]
    alone = train(make_cfg(*small, "lr=1e12", output_dir=tmp_path / "alone"))
    _, wild = train_stack(
        [
            make_cfg(*small, "lr=0.01", output_dir=tmp_path / "a"),
            make_cfg(*small, "lr=1e12", output_dir=tmp_path / "b"),
        ]
    )
    assert alone["status"] == wild["status"] == "diverged"
    assert (wild["epochs"], wild["global_step"]) == (alone["epochs"], alone["global_step"])
    assert alone["global_step"] < 30  # it stopped before the stack's end
    # Its TensorBoard run ends where the solo run's does: the same points, none after.
    steps, solo_steps = _event_steps(tmp_path / "b"), _event_steps(tmp_path / "alone")
    assert steps == solo_steps
    assert max(max(s) for s in steps.values()) == alone["global_step"]
    assert set(wild["metrics"]) == set(alone["metrics"])
    finite = {k for k, v in alone["metrics"].items() if v is not None and math.isfinite(v)}
    assert not _close(wild["metrics"], alone["metrics"], finite)


def test_a_diverging_member_under_the_jacobian_instrument_touches_no_other(make_cfg, tmp_path):
    small = [
        "optimizer=sgd", "data=function", "max_epochs=2", "depth=4", "width=8",
        "+callbacks.jacobian._target_=fcn_research.callbacks.JacobianSpectrum",
    ]  # fmt: skip
    calm = train(make_cfg(*small, "lr=0.01", output_dir=tmp_path / "calm"))
    # Alone, a diverging run is what it is: diverged, not failed by the instrument.
    alone = train(make_cfg(*small, "lr=1e12", output_dir=tmp_path / "alone"))
    assert alone["status"] == "diverged" and "error" not in alone
    assert math.isnan(alone["metrics"]["jacobian/singular_value_mean"])
    ok, wild = train_stack(
        [
            make_cfg(*small, "lr=0.01", output_dir=tmp_path / "a"),
            make_cfg(*small, "lr=1e12", output_dir=tmp_path / "b"),
        ]
    )
    assert ok["status"] == "completed" and wild["status"] == "diverged"
    assert ok["global_step"] == calm["global_step"]
    assert "jacobian/singular_value_mean" in calm["metrics"]
    # The healthy member's numbers are its solo run's: the NaN member reached none of them.
    assert not _close(ok["metrics"], calm["metrics"], set(calm["metrics"]))
    assert not _close(ok["init"], calm["init"], set(calm["init"]))


def test_a_member_that_fails_to_build_leaves_the_stack_running(make_cfg, tmp_path):
    bad = ["initializer=constant_layer", "initializer.target_layer=5"]
    cfgs = [
        make_cfg("depth=3", "max_epochs=1", output_dir=tmp_path / "a"),
        make_cfg("depth=3", "max_epochs=1", *bad, output_dir=tmp_path / "b"),
        make_cfg("depth=3", "max_epochs=1", "seed=3", output_dir=tmp_path / "c"),
    ]
    a, b, c = train_stack(cfgs, {"id": "s"})
    assert b["status"] == "failed" and "target_layer=5 is out of range" in b["error"]
    assert read_result(tmp_path / "b")["status"] == "failed"
    assert a["status"] == c["status"] == "completed"
    assert a["stack"]["members"] == 3  # as launched
    solo = train(make_cfg("depth=3", "max_epochs=1", "seed=3", output_dir=tmp_path / "solo"))
    assert not _close(c["metrics"], solo["metrics"], set(solo["metrics"]))


def test_completed_members_are_skipped_and_checkpoints_resume_the_rest(make_cfg, tmp_path):
    args = ["max_epochs=4", "callbacks.model_checkpoint.min_interval_s=0"]
    full = train_stack(
        [make_cfg(*args, f"seed={s}", output_dir=tmp_path / f"full_{s}") for s in (0, 1)]
    )
    # An interrupted stack: two epochs trained, member checkpoints written.
    half = [
        make_cfg(*args, "max_epochs=2", f"seed={s}", output_dir=tmp_path / f"r_{s}") for s in (0, 1)
    ]
    train_stack(half)
    for s in (0, 1):  # as if killed after the checkpoint, before the end
        out = tmp_path / f"r_{s}"
        result = read_result(out)
        result["status"] = "running"
        (out / "result.json").write_text(json.dumps(result))
        assert (out / "checkpoints" / "last.ckpt").exists()
    resumed = train_stack(
        [make_cfg(*args, f"seed={s}", output_dir=tmp_path / f"r_{s}") for s in (0, 1)]
    )
    for one, two in zip(full, resumed, strict=True):
        assert two["global_step"] == one["global_step"]
        assert not _close(two["metrics"], one["metrics"], set(one["metrics"]))
        assert not _close(two["init"], one["init"], set(one["init"]))
    # Re-run once more: both are completed, nothing trains.
    again = train_stack(
        [make_cfg(*args, f"seed={s}", output_dir=tmp_path / f"r_{s}") for s in (0, 1)]
    )
    assert [r["wall_s"] for r in again] == [r["wall_s"] for r in resumed]


def test_a_member_checkpoint_splits_and_joins_back():
    w = torch.arange(24.0).view(3, 2, 4)
    checkpoint = {
        "epoch": 1,
        "state_dict": {"model.w": w},
        "optimizer_states": [
            {
                "state": {0: {"step": torch.tensor(5.0), "exp_avg": w * 2}},
                "param_groups": [
                    {"lr": [0.1, 0.2, 0.3], "betas": [(0.9, 0.99)] * 3, "params": [0]}
                ],
            }
        ],
        "callbacks": {"G": {"init_metrics": [{"a": 1.0}, {"a": 2.0}, {"a": 3.0}]}},
        "members_diverged": [False, True, False],
        "members_stopped_at": [None, [20, 2], None],
    }
    parts = split_checkpoint(checkpoint, 3)
    assert torch.equal(parts[1]["state_dict"]["model.w"], w[1:2])
    assert parts[2]["optimizer_states"][0]["param_groups"][0]["lr"] == [0.3]
    assert parts[1]["callbacks"]["G"]["init_metrics"] == [{"a": 2.0}]
    joined = merge_checkpoints(parts)
    assert torch.equal(joined["state_dict"]["model.w"], w)
    assert joined["optimizer_states"][0]["param_groups"][0]["lr"] == [0.1, 0.2, 0.3]
    assert joined["members_diverged"] == [False, True, False]
    assert parts[1]["members_stopped_at"] == [[20, 2]]
    assert joined["members_stopped_at"] == [None, [20, 2], None]
    # One member alone resumes as a stack of one, with torch's own optimizer format.
    single = merge_checkpoints(parts[:1])
    assert single["optimizer_states"][0]["param_groups"][0]["lr"] == 0.1


def _per_member(value, members: int) -> bool:
    """Whether a checkpoint entry holds one value per member: a list of ``members`` values,
    or a non-empty dict of such lists (one per tag)."""
    if isinstance(value, dict):
        return bool(value) and all(_per_member(v, members) for v in value.values())
    return isinstance(value, list | tuple) and len(value) == members


@pytest.mark.parametrize("target", list(MEMBER_OPTIMIZER_HPARAMS))
def test_the_stack_spec_lists_what_each_stacked_optimizer_keeps_per_member(target):
    module, _, name = target.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    factories = [functools.partial(cls, lr=0.1), functools.partial(cls, lr=0.2)]
    opt = stacked_optimizer(factories, [torch.nn.Parameter(torch.zeros(2, 3))])
    (group,) = opt.param_groups
    kept = {k for k, v in group.items() if k != "params" and _per_member(v, 2)}
    assert kept == set(MEMBER_OPTIMIZER_HPARAMS[target])
    # Each is a keyword of torch's own optimizer, and a config key members may differ in.
    assert kept <= set(inspect.signature(cls).parameters)
    assert {f"optimizer.{k}" for k in kept} <= set(MEMBER_KEYS)


def test_a_stacks_checkpoint_holds_per_member_entries_only_where_the_spec_says(
    make_cfg, tmp_path, monkeypatch
):
    """What a real stack's checkpoint holds per member is what split and join carry."""
    seen = []
    split = checkpoint_module.split_checkpoint
    monkeypatch.setattr(
        checkpoint_module, "split_checkpoint", lambda c, m: seen.append(c) or split(c, m)
    )
    args = ["max_epochs=1", "callbacks.model_checkpoint.min_interval_s=0"]
    cfgs = [make_cfg(*args, f"seed={s}", output_dir=tmp_path / str(s)) for s in range(3)]
    assert [r["status"] for r in train_stack(cfgs)] == ["completed"] * 3
    checkpoint = seen[-1]
    assert {k for k, v in checkpoint.items() if _per_member(v, 3)} == set(CHECKPOINT_MEMBER_LISTS)
    groups = [g for opt in checkpoint["optimizer_states"] for g in opt["param_groups"]]
    kept = {k for g in groups for k, v in g.items() if k != "params" and _per_member(v, 3)}
    assert kept == set(MEMBER_OPTIMIZER_HPARAMS["torch.optim.Adam"])  # the default optimizer
    states = checkpoint["callbacks"].values()
    kept = {k for state in states for k, v in state.items() if _per_member(v, 3)}
    assert kept == set(CALLBACK_MEMBER_STATE)


@pytest.mark.parametrize(
    ("cls", "members"),
    [
        (
            torch.optim.SGD,
            [
                {"lr": 0.1},
                {"lr": 0.01, "momentum": 0.9},
                {"lr": 0.05, "momentum": 0.5, "dampening": 0.1, "weight_decay": 0.01},
            ],
        ),
        (
            torch.optim.SGD,
            [
                {"lr": 0.1, "momentum": 0.9, "nesterov": True},
                {"lr": 0.01, "momentum": 0.8, "nesterov": True},
            ],
        ),
        (
            torch.optim.Adam,
            [
                {"lr": 0.1},
                {"lr": 0.01, "betas": (0.8, 0.99)},
                {"lr": 0.003, "eps": 1e-6, "weight_decay": 0.1},
            ],
        ),
        (torch.optim.AdamW, [{"lr": 0.1}, {"lr": 0.01, "weight_decay": 0.1}]),
    ],
)
def test_stacked_optimizer_gives_each_member_what_torch_gives_it(cls, members):
    torch.manual_seed(0)
    start = torch.randn(len(members), 5, 3)
    alone = [torch.nn.Parameter(start[m].clone()) for m in range(len(members))]
    torch_opts = [cls([p], **kw) for p, kw in zip(alone, members, strict=True)]
    stacked = torch.nn.Parameter(start.clone())
    opt = stacked_optimizer([functools.partial(cls, **kw) for kw in members], [stacked])
    for _ in range(30):
        grad = torch.randn_like(start)
        for m, (p, o) in enumerate(zip(alone, torch_opts, strict=True)):
            p.grad = grad[m].clone()
            o.step()
        stacked.grad = grad.clone()
        opt.step()
    for m, p in enumerate(alone):
        # Float32 rounding only: torch's fused scalar kernels and our tensor ones round alike
        # to within a few ulps.
        torch.testing.assert_close(stacked[m], p, rtol=1e-6, atol=1e-6)


def test_optimizers_that_do_not_stack_are_named():
    sgd = functools.partial(torch.optim.SGD, lr=0.1)
    assert stack_refusal([sgd, functools.partial(torch.optim.SGD, lr=0.2)]) is None
    assert "RMSprop has no stacked implementation" in stack_refusal(
        [functools.partial(torch.optim.RMSprop, lr=0.1)] * 2
    )
    assert "mixes optimizers SGD and Adam" in stack_refusal(
        [sgd, functools.partial(torch.optim.Adam, lr=0.1)]
    )
    assert "amsgrad=True" in stack_refusal([functools.partial(torch.optim.Adam, amsgrad=True)] * 2)
    with pytest.raises(ValueError, match="nesterov"):
        stacked_optimizer(
            [sgd, functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, nesterov=True)],
            [torch.nn.Parameter(torch.zeros(2, 3))],
        )


def test_a_stack_of_one_is_the_solo_network(make_cfg):
    from fcn_research.train import build

    _, module = build(make_cfg("depth=3", "width=8"))
    assert module.model.members == 1
    assert [tuple(lin.weight.shape) for lin in module.model.linears] == [
        (1, 8, 2),
        (1, 8, 8),
        (1, 1, 8),
    ]
    assert isinstance(module.configure_optimizers(), torch.optim.Adam)  # the configured one


def test_members_that_cannot_share_a_stack_train_one_by_one(make_cfg, tmp_path):
    # RMSprop has no stacked implementation: each member trains as a stack of one, as its
    # solo job does (bit for bit: a stack of one runs the solo kernels).
    opt = ["optimizer._target_=torch.optim.RMSprop", "max_epochs=1"]
    results = train_stack(
        [make_cfg(*opt, f"seed={s}", output_dir=tmp_path / f"m{s}") for s in (0, 1)], {"id": "s"}
    )
    solo = train(make_cfg(*opt, "seed=1", output_dir=tmp_path / "solo"))
    assert [r["stack"]["members"] for r in results] == [1, 1]
    assert results[1]["metrics"] == solo["metrics"]


def test_a_stack_measures_each_members_jacobian_spectrum(make_cfg, tmp_path):
    iso = [
        "experiment=dynamical_isometry",
        "depth=4",
        "width=16",
        "max_epochs=1",
        "callbacks.jacobian.min_interval=1000",
    ]
    members = [["initializer=orthogonal"], ["initializer=variance_scaling", "seed=1"]]
    solo = [
        train(make_cfg(*iso, *m, output_dir=tmp_path / f"solo_{k}")) for k, m in enumerate(members)
    ]
    stacked = train_stack(
        [make_cfg(*iso, *m, output_dir=tmp_path / f"st_{k}") for k, m in enumerate(members)]
    )
    keys = {k for k in solo[0]["init"] if k.startswith("jacobian/")}
    assert len(keys) == 3
    for one, member in zip(solo, stacked, strict=True):
        assert not _close(member["init"], one["init"], keys)
        assert not _close(member["metrics"], one["metrics"], keys)
    assert (
        stacked[0]["init"]["jacobian/singular_value_max"]
        != stacked[1]["init"]["jacobian/singular_value_max"]
    )


def test_an_activation_is_probed_for_what_a_stack_would_change():
    from fcn_research.activations import Maxout
    from fcn_research.model import activation_stack_refusal

    for elementwise in (torch.nn.ReLU(), torch.nn.Tanh(), Maxout(2)):
        assert activation_stack_refusal(elementwise, 8) is None
    before = torch.random.get_rng_state()
    assert "RReLU draws random numbers in training" in activation_stack_refusal(torch.nn.RReLU(), 8)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream untouched
    assert "Dropout draws random numbers" in activation_stack_refusal(torch.nn.Dropout(0.1), 8)
    assert "mixes the samples" in activation_stack_refusal(torch.nn.Softmax(dim=0), 8)
    # Parameters get one copy per member; buffers that training changes cannot be shared out.
    assert activation_stack_refusal(torch.nn.PReLU(), 8) is None
    running = torch.nn.BatchNorm1d(8)
    assert "changes buffers of its own" in activation_stack_refusal(running, 8)
    assert torch.equal(running.running_mean, torch.zeros(8))  # probed on a copy
    # Normalised by the batch's statistics, with no state of its own.
    norm = torch.nn.BatchNorm1d(8, affine=False, track_running_stats=False)
    assert "mixes the samples" in activation_stack_refusal(norm, 8)


def test_mixed_precision_members_train_as_stacks_of_one(make_cfg, tmp_path):
    # One GradScaler for a whole stack would skip every member's step for one member's inf.
    amp = ["+trainer.precision=16-mixed", "max_epochs=1", "data.num_samples=200"]
    results = train_stack(
        [make_cfg(*amp, f"seed={s}", output_dir=tmp_path / f"m{s}") for s in (0, 1)], {"id": "s"}
    )
    assert [r["stack"]["members"] for r in results] == [1, 1]
    assert [r["status"] for r in results] == ["completed", "completed"]


def test_a_members_wall_time_is_its_share_of_the_stacks(make_cfg, tmp_path):
    tiny = ["max_epochs=1", "data.num_samples=200", "callbacks=none"]
    results = train_stack(
        [make_cfg(*tiny, f"seed={s}", output_dir=tmp_path / f"m{s}") for s in (0, 1)],
        {"id": "s"},
    )
    stack_wall = results[0]["stack_wall_s"]
    assert stack_wall > 0 and [r["stack_wall_s"] for r in results] == [stack_wall] * 2
    for s, result in enumerate(results):  # summed over the members: the stack's time
        assert result["wall_s"] == pytest.approx(stack_wall / 2, abs=1e-3)
        assert read_result(tmp_path / f"m{s}") == result
    solo = train(make_cfg(*tiny, output_dir=tmp_path / "solo"))
    assert solo["wall_s"] > 0 and "stack_wall_s" not in solo


@pytest.mark.parametrize(
    "factory",
    [
        functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        functools.partial(torch.optim.Adam, lr=0.1),
        functools.partial(torch.optim.AdamW, lr=0.1, weight_decay=0.1),
    ],
)
def test_a_frozen_member_keeps_its_weights_exactly(factory):
    # A diverged member's weights stay as its solo run left them, inf included: what the
    # instruments measure of it at the end is what they measured where it stopped.
    start = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
    p = torch.nn.Parameter(start.clone())
    opt = stacked_optimizer([factory, factory], [p])
    p.grad = torch.tensor([[0.5, 0.5], [math.inf, 1.0]])
    opt.step()  # member 1's state and weights go non-finite
    frozen_at = p.detach()[1].clone()
    opt.frozen = torch.tensor([False, True])
    for _ in range(3):
        p.grad = torch.tensor([[0.5, 0.5], [math.nan, 1.0]])
        opt.step()
    assert torch.equal(p.detach()[1].isnan(), frozen_at.isnan())
    assert torch.equal(p.detach()[1].nan_to_num(), frozen_at.nan_to_num())
    assert torch.isfinite(p.detach()[0]).all()


# A user's learnable activation, written outside the package: x + sin(a x)^2 / a with one
# frequency a per unit, drawn at random (so each member's copy starts elsewhere).
SNAKE = """
import torch
from torch import nn


class Snake(nn.Module):
    def __init__(self, units: int) -> None:
        super().__init__()
        self.a = nn.Parameter(0.5 + torch.rand(units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.sin(self.a * x).pow(2) / self.a
"""
LEARNABLE = {
    # With the Jacobian instrument too: it maps each member's beta with its weights.
    "swish_learnable": [
        "activation=swish_learnable",
        "+callbacks.jacobian._target_=fcn_research.callbacks.JacobianSpectrum",
        "+callbacks.jacobian.min_interval=1000",
    ],
    "prelu": ["activation._target_=torch.nn.PReLU", "+activation.num_parameters=16"],
    "snake": ["activation._target_=my_snake.Snake", "+activation.units=16"],
}
SMALL = ["depth=3", "width=16", "data.num_samples=200", "max_epochs=2"]


@pytest.fixture
def my_snake(tmp_path, monkeypatch):
    (tmp_path / "ext").mkdir()
    (tmp_path / "ext" / "my_snake.py").write_text(SNAKE)
    monkeypatch.syspath_prepend(str(tmp_path / "ext"))


@pytest.mark.parametrize("activation", list(LEARNABLE))
def test_members_with_a_learnable_activation_equal_their_solo_runs(
    make_cfg, tmp_path, my_snake, activation
):
    act = LEARNABLE[activation]
    members = [["seed=0"], ["seed=1", "lr=0.03"]]
    solo = [
        train(make_cfg(*SMALL, *act, *m, output_dir=tmp_path / f"solo_{k}"))
        for k, m in enumerate(members)
    ]
    cfgs = [
        make_cfg(*SMALL, *act, *m, output_dir=tmp_path / f"st_{k}") for k, m in enumerate(members)
    ]
    stacked = train_stack(cfgs, {"id": "s"})
    for k, (one, member) in enumerate(zip(solo, stacked, strict=True)):
        assert member["status"] == one["status"] == "completed", member.get("error")
        assert member["stack"] == {"id": "s", "members": 2}  # one stack, not two of one
        params = {key for key in one["metrics"] if key.startswith("act_param/")}
        assert params and set(member["metrics"]) == set(one["metrics"])
        assert any(key.startswith("jacobian/") for key in one["init"]) == ("jacobian" in str(act))
        assert not _close(member["init"], one["init"], set(one["init"])), k
        assert not _close(member["metrics"], one["metrics"], set(one["metrics"])), k
        assert member["theory"].keys() == one["theory"].keys()
    # Each member trained its own copy: the members' parameters end apart.
    key = next(k for k in solo[0]["metrics"] if k.startswith("act_param/"))
    assert stacked[0]["metrics"][key] != stacked[1]["metrics"][key]


def test_a_stack_with_a_learnable_activation_resumes_as_it_would_have_run(make_cfg, tmp_path):
    args = [*SMALL, *LEARNABLE["prelu"], "callbacks.model_checkpoint.min_interval_s=0"]
    full = train_stack(
        [
            make_cfg(*args, "max_epochs=4", f"seed={s}", output_dir=tmp_path / f"f{s}")
            for s in (0, 1)
        ]
    )
    train_stack(  # an interrupted stack: two epochs trained, member checkpoints written
        [
            make_cfg(*args, "max_epochs=2", f"seed={s}", output_dir=tmp_path / f"r{s}")
            for s in (0, 1)
        ]
    )
    for s in (0, 1):  # as if killed after the checkpoint, before the end
        result = read_result(tmp_path / f"r{s}")
        result["status"] = "running"
        (tmp_path / f"r{s}" / "result.json").write_text(json.dumps(result))
        ckpt = torch.load(tmp_path / f"r{s}" / "checkpoints" / "last.ckpt", weights_only=True)
        assert ckpt["state_dict"]["model.activations.0.weight"].shape == (1, 16)  # its own
    resumed = train_stack(
        [
            make_cfg(*args, "max_epochs=4", f"seed={s}", output_dir=tmp_path / f"r{s}")
            for s in (0, 1)
        ],
        {"id": "s"},
    )
    for one, two in zip(full, resumed, strict=True):
        assert two["stack"]["members"] == 2 and two["global_step"] == one["global_step"]
        assert not _close(two["metrics"], one["metrics"], set(one["metrics"]))
        assert not _close(two["init"], one["init"], set(one["init"]))


# Lightning's EarlyStopping as a user adds it; with these, lr=0.05 stops after epoch 4 and
# lr=0.03 after epoch 6 of 12.
EARLY = [
    "optimizer=sgd",
    "data=function",
    "depth=3",
    "width=16",
    "+callbacks.early_stopping._target_=lightning.pytorch.callbacks.EarlyStopping",
    "+callbacks.early_stopping.monitor=val/loss",
    "+callbacks.early_stopping.patience=1",
    "+callbacks.early_stopping.min_delta=0.003",
]
EARLY_LRS = ("0.03", "0.05")


def test_members_stop_early_each_where_its_solo_run_stops(make_cfg, tmp_path):
    solo = [
        train(make_cfg(*EARLY, "max_epochs=12", f"lr={lr}", output_dir=tmp_path / f"solo{lr}"))
        for lr in EARLY_LRS
    ]
    cfgs = [
        make_cfg(*EARLY, "max_epochs=12", f"lr={lr}", output_dir=tmp_path / f"stack{lr}")
        for lr in EARLY_LRS
    ]
    stacked = train_stack(cfgs, {"id": "s"})
    assert [(r["epochs"], r["global_step"]) for r in solo] == [(6, 60), (4, 40)]
    for lr, one, member in zip(EARLY_LRS, solo, stacked, strict=True):
        assert member["stack"]["members"] == 2  # one stack, not two stacks of one
        assert member["status"] == one["status"] == "completed"
        assert (member["epochs"], member["global_step"]) == (one["epochs"], one["global_step"])
        assert set(member["metrics"]) == set(one["metrics"])
        assert not _close(member["metrics"], one["metrics"], set(one["metrics"])), lr
        # Its TensorBoard run ends where the solo run's does: the same points, none after.
        assert _event_steps(tmp_path / f"stack{lr}") == _event_steps(tmp_path / f"solo{lr}")


def test_a_stack_with_early_stopping_resumes_as_it_would_have_run(make_cfg, tmp_path, monkeypatch):
    args = [*EARLY, "max_epochs=12", "callbacks.model_checkpoint.min_interval_s=0"]

    def stack(prefix: str) -> list[dict]:
        return train_stack(
            [
                make_cfg(*args, f"lr={lr}", output_dir=tmp_path / f"{prefix}{lr}")
                for lr in EARLY_LRS
            ],
            {"id": "s"},
        )

    full = stack("f")
    # Killed as epoch 6 starts: lr=0.05 stopped (frozen) after epoch 4, lr=0.03 still trains.
    start = FCNModule.on_train_epoch_start

    def killed(module):
        if module.current_epoch == 5:
            raise RuntimeError("killed")
        start(module)

    monkeypatch.setattr(FCNModule, "on_train_epoch_start", killed)
    assert [r["status"] for r in stack("r")] == ["failed", "failed"]
    monkeypatch.setattr(FCNModule, "on_train_epoch_start", start)
    ckpt = torch.load(tmp_path / "r0.05" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["members_stopped_at"] == [[40, 4]]
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("EarlyStopping")]
    assert state["stopped_epoch"] == 3 and state["best_score"].dim() == 0  # its solo run's form
    resumed = stack("r")
    for lr, one, two in zip(EARLY_LRS, full, resumed, strict=True):
        assert two["stack"]["members"] == 2
        assert (two["epochs"], two["global_step"]) == (one["epochs"], one["global_step"]), lr
        assert not _close(two["metrics"], one["metrics"], set(one["metrics"])), lr
        assert _event_steps(tmp_path / f"r{lr}") == _event_steps(tmp_path / f"f{lr}")


def test_early_stopping_state_splits_per_member_and_joins_back():
    key = "EarlyStopping{'monitor': 'val/loss', 'mode': 'min'}"
    state = {
        "wait_count": [0, 2],
        "stopped_epoch": [0, 3],
        "best_score": [torch.tensor(0.5), torch.tensor(0.25)],
        "patience": 2,
        "stopping_reason": [0, 3],
        "stopping_reason_message": [None, "did not improve"],
    }
    w = torch.zeros(2, 3)
    checkpoint = {"state_dict": {"model.w": w}, "callbacks": {key: state}}
    parts = split_checkpoint(checkpoint, 2)
    assert parts[1]["callbacks"][key]["wait_count"] == 2  # Lightning's own (solo) form
    assert parts[1]["callbacks"][key]["patience"] == 2
    joined = merge_checkpoints(parts)["callbacks"][key]
    assert joined["wait_count"] == [0, 2] and joined["stopping_reason_message"][1]
    assert merge_checkpoints(parts[:1])["callbacks"][key]["wait_count"] == 0


class _ProfileSteps(L.Callback):
    """torch.profiler over training batches 1-4 of the last epoch: steps with no logging
    event (epoch ends, validation) in them; records which members were frozen by then."""

    def __init__(self) -> None:
        self.profile: torch.profiler.profile | None = None
        self.calls: dict[str, int] = {}
        self.steps = 0
        self.frozen: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == trainer.max_epochs - 1 and batch_idx == 1:
            self.frozen = list(pl_module.diverged)
            self.steps = trainer.global_step
            self.profile = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.profile.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.profile is not None and batch_idx == 4:
            self.profile.__exit__(None, None, None)
            self.calls = {e.key: e.count for e in self.profile.key_averages()}
            self.steps = trainer.global_step - self.steps
            self.profile = None


@pytest.mark.parametrize(
    "run",
    [
        ["optimizer=adam", "data=moons", "batch_size=32"],
        # One member diverges in the first epoch: the others step on beside a frozen member.
        ["optimizer=sgd", "data=function", "depth=3", "width=16"],
    ],
)
def test_a_stacked_training_step_never_waits_for_the_host(make_cfg, tmp_path, monkeypatch, run):
    # A step reads nothing back from the device (aten::_local_scalar_dense: .item(),
    # .tolist(), float(tensor)) and builds no tensor from host values (aten::lift_fresh:
    # torch.tensor(list)): on a GPU either stalls the device once per step.
    probe = _ProfileSteps()
    own = fit_module._callbacks
    monkeypatch.setattr(fit_module, "_callbacks", lambda *a: [*own(*a), probe])
    lrs = ["lr=0.01", "lr=0.003", "lr=1e12", "lr=0.03"]
    cfgs = [
        make_cfg(*run, "callbacks=none", f"seed={k}", lr, output_dir=tmp_path / f"m{k}")
        for k, lr in enumerate(lrs)
    ]
    results = train_stack(cfgs)
    assert probe.steps >= 4 and probe.calls.get("aten::addcmul_")  # the optimizer's steps
    assert probe.calls.get("aten::_local_scalar_dense", 0) == 0
    assert probe.calls.get("aten::lift_fresh", 0) == 0
    if "optimizer=sgd" in run:
        assert [r["status"] for r in results] == ["completed"] * 2 + ["diverged", "completed"]
        assert probe.frozen == [False, False, True, False]
