"""In-memory datamodules: reproducible, standardised, split as configured, batched by slicing."""

from __future__ import annotations

import pytest
import torch

from fcn_research.data import Digits, Function1D, Playground2D, TensorBatches, XorTable
from fcn_research.data.functions import TARGETS
from fcn_research.data.synthetic import SHAPES
from fcn_research.train import build


def built(dm):
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("shape", SHAPES)
def test_2d_shapes_reproducible_from_seed(shape):
    a = built(Playground2D(shape, num_samples=200, seed=3))
    b = built(Playground2D(shape, num_samples=200, seed=3))
    c = built(Playground2D(shape, num_samples=200, seed=4))
    for key in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    assert not torch.equal(a.x_train, c.x_train)
    assert a.x_train.shape == (120, 2) and a.x_train.dtype == torch.float32  # 60 % of 200
    assert set(a.y_train.unique().tolist()) == {0.0, 1.0}, "both classes present"


@pytest.mark.parametrize("shape", SHAPES)
def test_train_split_standardised(shape):
    dm = built(Playground2D(shape, num_samples=400, seed=0))
    raw = Playground2D(shape, num_samples=400, seed=0)
    raw.standardize = False  # the same split, unscaled (the 2-D sets take no such argument)
    built(raw)
    assert torch.allclose(dm.x_train.mean(0), torch.zeros(2), atol=1e-5)
    assert dm.x_train.pow(2).mean().item() == pytest.approx(1.0, rel=1e-5)
    # One scale for both features: the point cloud keeps its shape.
    ratio = raw.x_train.std(0) / dm.x_train.std(0)
    assert ratio[0].item() == pytest.approx(ratio[1].item(), rel=1e-5)
    # Validation uses the training statistics: close to, not exactly, standard.
    assert dm.x_val.mean(0).abs().max() < 0.5


def test_no_pixel_explodes_under_standardisation():
    # Some of digits' pixels are inked in a handful of images: divided by their own tiny std
    # they reached 37 (train) and 54 (validation). One common scale keeps ink ink-sized.
    dm = built(Digits())
    raw = built(Digits(standardize=False))
    assert dm.x_train.pow(2).mean().item() == pytest.approx(1.0, rel=1e-5)
    assert dm.x_train.abs().max() < 5 and dm.x_val.abs().max() < 5
    varying = raw.x_train.std(0) > 0
    ratio = raw.x_train.std(0)[varying] / dm.x_train.std(0)[varying]
    assert torch.allclose(ratio, ratio[0], rtol=1e-4)


DATA_OPTIONS = ["moons", "xor", "circle", "gauss", "spiral", "function", "digits"]


@pytest.mark.parametrize("data", DATA_OPTIONS)
def test_seed_changes_init_and_batch_order_but_not_the_data(make_cfg, data):
    runs = {seed: build(make_cfg(f"data={data}", f"seed={seed}")) for seed in (0, 1)}
    (dm0, model0), (dm1, model1) = runs[0], runs[1]
    for key in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(dm0, key), getattr(dm1, key)), key
    assert not torch.equal(dm0.first_train_batch()[0], dm1.first_train_batch()[0])
    assert not torch.equal(model0.model.linears[0].weight, model1.model.linears[0].weight)
    other_data, _ = build(make_cfg(f"data={data}", "seed=0", "data.seed=1"))
    assert not torch.equal(other_data.x_train, dm0.x_train)


@pytest.mark.parametrize(
    ("n", "frac", "test_frac", "n_train", "n_val", "n_test"),
    [(200, 0.25, 0.0, 150, 50, 0), (10, 0.2, 0.0, 8, 2, 0), (200, 0.25, 0.2, 110, 50, 40)],
)
def test_split_sizes(n, frac, test_frac, n_train, n_val, n_test):
    dm = built(Playground2D("circle", num_samples=n, val_fraction=frac, test_fraction=test_frac))
    assert (len(dm.x_train), len(dm.x_val)) == (n_train, n_val)
    assert len(dm.y_train) == n_train and len(dm.y_val) == n_val
    assert dm.has_test == bool(n_test)
    if n_test:
        assert len(dm.x_test) == len(dm.y_test) == n_test


def test_splits_are_disjoint():
    dm = built(Playground2D("gauss", num_samples=100, val_fraction=0.3, test_fraction=0.2))
    rows = {tuple(r.tolist()) for r in dm.x_train}
    assert len(rows) == 50
    val = {tuple(r.tolist()) for r in dm.x_val}
    test = {tuple(r.tolist()) for r in dm.x_test}
    assert len(test) == 20
    assert not rows & val and not rows & test and not val & test


def test_test_split_leaves_validation_as_it_was():
    # Validation is the seeded permutation's first val_fraction whatever test_fraction is.
    with_test = built(Playground2D("moons", num_samples=300, test_fraction=0.2))
    without = built(Playground2D("moons", num_samples=300, test_fraction=0.0))
    assert torch.equal(with_test.y_val, without.y_val)
    assert (len(without.x_train), len(with_test.x_train), len(with_test.x_test)) == (240, 180, 60)


def test_test_split_refuses_fractions_that_leave_no_training_data():
    with pytest.raises(ValueError, match=r"test_fraction must be in \[0, 1\).*got 0.8"):
        Playground2D("moons", val_fraction=0.2, test_fraction=0.8)
    with pytest.raises(ValueError, match=r"too few for val_fraction=0.25 and test_fraction=0.1"):
        built(Playground2D("moons", num_samples=4, val_fraction=0.25, test_fraction=0.1))
    dm = built(Playground2D("moons", num_samples=50, test_fraction=0.0))
    with pytest.raises(RuntimeError, match=r"has no test split.*data\.test_fraction > 0"):
        dm.test_dataloader()


def test_too_few_samples_for_split():
    with pytest.raises(ValueError, match=r"2 samples are too few for val_fraction=0.2"):
        built(Playground2D("moons", num_samples=2, val_fraction=0.2))
    with pytest.raises(ValueError, match="num_samples must be >= 2"):
        Playground2D("moons", num_samples=1)


@pytest.mark.parametrize("frac", [-0.1, 1.0])
def test_bad_val_fraction(frac):
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        Playground2D("moons", val_fraction=frac)


def test_unknown_shape_lists_shapes():
    with pytest.raises(ValueError, match=r"unknown 2-D shape 'ring'.*'xor'.*'moons'"):
        Playground2D("ring")


def test_val_fraction_zero_validates_on_train():
    dm = built(XorTable())
    assert torch.equal(dm.x_val, dm.x_train) and len(dm.x_train) == 4
    table = sorted(zip(dm.x_train.tolist(), dm.y_train.tolist(), strict=True))
    assert table == [([0.0, 0.0], 0.0), ([0.0, 1.0], 1.0), ([1.0, 0.0], 1.0), ([1.0, 1.0], 0.0)]


def test_batches_are_slices_covering_every_sample_once():
    x = torch.arange(10.0).unsqueeze(1)
    y = torch.arange(10)
    batches = TensorBatches(x, y, batch_size=4, shuffle=True, seeds=[1])
    epoch = list(batches)
    assert len(batches) == len(epoch) == 3
    # Shuffled batches carry the member axis: (members, batch, features).
    assert [tuple(b[0].shape) for b in epoch] == [(1, 4, 1), (1, 4, 1), (1, 2, 1)]
    seen = torch.cat([b[1][0] for b in epoch])
    assert sorted(seen.tolist()) == list(range(10))
    assert not torch.equal(seen, y), "shuffled"
    for bx, by in epoch:
        assert torch.equal(bx.squeeze(-1).long(), by), "inputs and targets stay paired"


def test_each_member_of_a_stack_walks_the_data_in_its_solo_order():
    x, y = torch.arange(50.0).unsqueeze(1), torch.arange(50)
    epoch = [0]

    def order(seeds):
        batches = TensorBatches(x, y, 8, True, seeds, epoch=lambda: epoch[0])
        return torch.cat([b for _, b in batches], dim=1)

    for e in (0, 3):
        epoch[0] = e
        stacked = order([4, 0, 7])
        for m, seed in enumerate([4, 0, 7]):
            assert torch.equal(stacked[m], order([seed])[0])
    assert not torch.equal(stacked[0], stacked[1])


def test_unshuffled_batches_are_views():
    x, y = torch.randn(10, 2), torch.arange(10)
    for bx, _ in TensorBatches(x, y, batch_size=3):
        assert bx.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()


def test_shuffle_order_depends_on_seed_and_epoch():
    x, y = torch.zeros(50, 1), torch.arange(50)
    epoch = [0]

    def order(seed):
        batches = TensorBatches(x, y, 8, True, [seed], epoch=lambda: epoch[0])
        return torch.cat([b[0] for _, b in batches])

    first = order(0)
    assert torch.equal(first, order(0))
    assert not torch.equal(first, order(1))
    epoch[0] = 1
    assert not torch.equal(first, order(0))


def test_min_batches_repeats_the_data():
    x, y = torch.zeros(10, 1), torch.arange(10)
    batches = TensorBatches(x, y, batch_size=4, shuffle=True, min_batches=7)
    epoch = list(batches)
    assert len(batches) == len(epoch) == 9  # 3 passes of 3 batches
    counts = torch.bincount(torch.cat([b[0] for _, b in epoch]))
    assert counts.tolist() == [3] * 10


def test_batch_size_larger_than_data():
    batches = TensorBatches(torch.zeros(5, 1), torch.arange(5), batch_size=64, shuffle=True)
    assert [b.shape[-1] for _, b in batches] == [5]


def test_datamodule_loaders():
    dm = built(Playground2D("moons", num_samples=100, batch_size=16, min_batches_per_epoch=20))
    train = dm.train_dataloader()
    assert len(train) == 20  # 5 batches per pass of 80, 4 passes
    assert all(len(bx) <= 16 for bx, _ in train)
    assert sum(len(bx) for bx, _ in dm.val_dataloader()) == 20


def test_digits():
    dm = built(Digits(val_fraction=0.2))
    assert dm.num_features == 64
    assert dm.task == "multiclass" and dm.num_outputs == 10
    assert len(dm.x_train) + len(dm.x_val) + len(dm.x_test) == 1797
    assert len(dm.x_test) == round(1797 * 0.2)
    assert dm.y_train.dtype == torch.long
    assert set(dm.y_train.unique().tolist()) == set(range(10))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_function_target_configurable(name):
    dm = Function1D(target=name, num_samples=100, seed=0)
    x, y = dm.generate()
    assert torch.allclose(y, TARGETS[name](x).squeeze(1))
    built(dm)
    assert dm.task == "regression" and dm.num_outputs == 1 and dm.num_features == 1


def test_function_dotted_path_and_noise():
    x, y = Function1D(target="torch.cos", num_samples=50).generate()
    assert torch.allclose(y, torch.cos(x).squeeze(1))
    x, y = Function1D(target="sin", num_samples=500, noise=0.1).generate()
    assert (y - torch.sin(x).squeeze(1)).std().item() == pytest.approx(0.1, rel=0.2)


def test_function_unknown_target_lists_names():
    with pytest.raises(ValueError) as err:
        Function1D(target="cosh")
    message = str(err.value)
    assert "'cosh'" in message
    assert all(name in message for name in TARGETS)
