"""Every option of every config group composes, builds an MLP and runs forward/backward.

Options are discovered from ``conf/<group>/*.yaml``, so a new file is covered without
editing this test.
"""

from __future__ import annotations

import math

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class
from omegaconf import OmegaConf

from fcn_research.data import Digits, Function1D, Playground2D, XorTable
from fcn_research.run_dirs import CONF_DIR
from fcn_research.train import build

# Data whose generator is bundled (no files, no download): these are built and trained a
# step. Other data options (MNIST-family, added separately) are composed and their
# `_target_` resolved, but never instantiated here: they may need files on disk.
BUNDLED_DATA = (Playground2D, Function1D, Digits, XorTable)
TINY = ["depth=3", "width=8", "batch_size=16"]


def options(group: str) -> list[str]:
    """The options of a config group: the yaml files in ``conf/<group>/``."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def small_data(cfg) -> list[str]:
    """Overrides that shrink the data to a few dozen samples where the option allows it."""
    return ["data.num_samples=64"] if "num_samples" in cfg.data else []


def forward_backward(cfg) -> float:
    """Build data and model from ``cfg``; one optimizer step on one batch; the loss."""
    datamodule, module = build(cfg)
    x, y = datamodule.first_train_batch()
    optimizer = module.configure_optimizers()
    optimizer.zero_grad()
    loss, _ = module.loss_and_predictions(x, y)
    loss.backward()
    grads = [p.grad for p in module.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in module.parameters())
    return loss.item()


def test_every_group_has_options():
    for group in ("activation", "initializer", "data", "optimizer"):
        assert options(group), f"conf/{group}/ has no options"
    expected_activations = {
        "identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu",
        "silu", "softplus", "maxout", "zero_centred_sigmoid",
    }  # fmt: skip
    assert expected_activations <= set(options("activation"))
    expected_inits = {
        "default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal",
        "lecun_normal", "orthogonal", "zeros", "constant_layer", "negative_layer",
    }  # fmt: skip
    assert expected_inits <= set(options("initializer"))
    assert {"xor", "circle", "gauss", "spiral", "moons", "function", "digits"} <= set(
        options("data")
    )
    assert {"sgd", "adam"} <= set(options("optimizer"))


def test_top_level_knobs(make_cfg):
    cfg = make_cfg()
    for knob in ("depth", "width", "seed", "lr", "batch_size", "max_epochs"):
        assert knob in cfg, knob
    assert cfg.optimizer.lr == cfg.lr
    assert cfg.data.seed == cfg.seed


@pytest.mark.parametrize("name", options("activation"))
def test_activation_option(make_cfg, name):
    cfg = make_cfg(f"activation={name}", "data.num_samples=64", *TINY)
    assert cfg.activation._partial_ is True, "one instance per layer needs _partial_: true"
    assert math.isfinite(forward_backward(cfg))


@pytest.mark.parametrize("name", options("activation"))
def test_activation_with_kaiming(make_cfg, name):
    # He init asks every activation for its gain (torch's or the Monte-Carlo estimate).
    cfg = make_cfg(f"activation={name}", "initializer=kaiming_normal", "data.num_samples=64", *TINY)
    assert math.isfinite(forward_backward(cfg))


@pytest.mark.parametrize("name", options("initializer"))
def test_initializer_option(make_cfg, name):
    cfg = make_cfg(f"initializer={name}", "data.num_samples=64", *TINY)
    assert math.isfinite(forward_backward(cfg))


@pytest.mark.parametrize("name", options("optimizer"))
def test_optimizer_option(make_cfg, name):
    cfg = make_cfg(f"optimizer={name}", "data.num_samples=64", *TINY)
    assert cfg.optimizer._partial_ is True
    assert math.isfinite(forward_backward(cfg))


@pytest.mark.parametrize("name", options("data"))
def test_data_option(make_cfg, name):
    cfg = make_cfg(f"data={name}", *TINY)
    target = get_class(cfg.data._target_)
    if not issubclass(target, BUNDLED_DATA):
        pytest.skip(f"data={name} ({cfg.data._target_}) may need files; composed only")
    cfg = make_cfg(f"data={name}", *TINY, *small_data(cfg))
    assert math.isfinite(forward_backward(cfg))


def test_unknown_option_lists_choices(make_cfg):
    with pytest.raises(ConfigCompositionException) as err:
        make_cfg("activation=not_an_activation")
    message = str(err.value)
    assert "not_an_activation" in message
    assert "relu" in message and "tanh" in message


def test_leaky_relu_slope_and_maxout_pieces_configurable(make_cfg):
    cfg = make_cfg("activation=leaky_relu", "activation.negative_slope=0.2")
    assert OmegaConf.select(cfg, "activation.negative_slope") == 0.2
    cfg = make_cfg("activation=maxout", "activation.pool_size=3", "data.num_samples=64", *TINY)
    _, module = build(cfg)
    assert module.model.linears[0].out_features == 8 * 3
