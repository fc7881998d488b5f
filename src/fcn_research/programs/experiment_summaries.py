"""Each experiment's claims, checked on its sweeps' results, with the tables behind them: one
function per experiment, from the sweeps' results (in the order of its commands) to markdown."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from fcn_research.programs.experiment_page import (
    Result,
    compared,
    differ,
    fmt,
    group,
    holds,
    how_tested,
    per_seed,
    spread,
    table,
    values,
    verdict,
)


def _n(results: list[Result]) -> int:
    return len(results)


def _at_depths(depths: Sequence[str]) -> str:
    return f"at depth {', '.join(depths)}" if depths else "at no depth"


def xor(sweeps: list[list[Result]]) -> list[str]:
    groups = group(sweeps[0], "depth", "activation")
    rows, learners, others = [], [], []
    for (depth, activation), rs in sorted(groups.items()):
        acc, loss = values(rs, "val/acc"), values(rs, "val/loss")
        rows.append((depth, activation, _n(rs), per_seed(acc), spread(loss)))
        (learners if int(depth) == 2 and activation != "identity" else others).append(rs)
    learn = [r["metrics"]["val/acc"] == 1.0 for rs in learners for r in rs]
    linear = [r["metrics"]["val/loss"] >= math.log(2) - 1e-5 for rs in others for r in rs]
    return [
        f"- Depth 2 with tanh or relu fits all four points (val/acc 1.0): {holds(learn)}.",
        "- The perceptron (depth 1) and two Linear layers without activation (depth 2, identity) "
        f"stay at val/loss ≥ ln 2 (an affine model's best on XOR): {holds(linear)}.",
        "",
        *table(("depth", "activation", "n", "val/acc per seed", "val/loss"), rows),
    ]


def _init(rs: list[Result], key: str) -> list[float]:
    return values(rs, key, "init")


def vanishing_gradients(sweeps: list[list[Result]]) -> list[str]:
    constant, default = sweeps
    baseline = {
        a: _init(rs, "grad_norm/ratio_first_last")
        for (a,), rs in group(default, "activation").items()
    }
    rows = []
    for (activation, target, value), rs in sorted(
        group(constant, "activation", "initializer.target_layer", "initializer.value").items(),
        key=lambda kv: (kv[0][0], int(kv[0][1]), float(kv[0][2])),
    ):
        ratio = _init(rs, "grad_norm/ratio_first_last")
        saturated = _init(rs, f"neurons/saturated_fraction/layer_{int(target):02d}")
        # Seed by seed: the same network but for the constant layer.
        base = [r / b for r, b in zip(ratio, baseline[activation], strict=True)]
        if min(saturated) >= 0.99:
            shows = f"layer {target} saturated: its outputs are flat, nothing passes below it"
        elif all(0.5 <= b <= 2 for b in base):
            shows = "the default init's ratio (within 2x): not the constant layer's doing"
        elif max(base) < 0.5:
            shows = "below half the default init's ratio on every seed"
        else:
            shows = "mixed: not below half the default init's ratio on every seed"
        rows.append(
            (
                activation,
                target,
                value,
                _n(rs),
                per_seed(ratio),
                per_seed(_init(rs, "grad_rms/ratio_first_last")),
                per_seed(base),
                per_seed(saturated),
                shows,
                per_seed(values(rs, "val/acc")),
            )
        )
    base_rows = [
        (
            a,
            _n(rs),
            per_seed(_init(rs, "grad_norm/ratio_first_last")),
            per_seed(_init(rs, "grad_rms/ratio_first_last")),
        )
        for (a,), rs in sorted(group(default, "activation").items())
    ]
    return [
        "Step 0, depth 7, width 32. The constant layer's saturated fraction (derivative below 5 % "
        "of its peak) beside the first/last gradient ratio, and the same network at PyTorch's "
        "default init for comparison; `grad_rms` is the per-weight (shape-fair) ratio.",
        "",
        *table(
            (
                "activation",
                "constant layer",
                "value",
                "n",
                "grad_norm ratio per seed",
                "grad_rms ratio per seed",
                "grad_norm ratio / default init's",
                "saturated fraction of that layer",
                "what it shows",
                "val/acc per seed",
            ),
            rows,
        ),
        "",
        "Default init (no constant layer):",
        "",
        *table(
            ("activation", "n", "grad_norm ratio per seed", "grad_rms ratio per seed"), base_rows
        ),
    ]


def depth_without_initializer(sweeps: list[list[Result]]) -> list[str]:
    groups = group(sweeps[0], "activation", "depth")
    rows = []
    for (activation, depth), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], int(kv[0][1]))):
        hidden = per_seed(_init(rs, "grad_rms/ratio_hidden")) if int(depth) >= 4 else "–"
        rows.append(
            (
                activation,
                depth,
                _n(rs),
                per_seed(_init(rs, "grad_norm/ratio_first_last")),
                per_seed(_init(rs, "grad_rms/ratio_first_last")),
                hidden,
                spread(values(rs, "val/acc")),
            )
        )
    lines = [
        "Step-0 gradient ratios (first over last Linear: `grad_norm`, and per weight: `grad_rms`; "
        "`grad_rms/ratio_hidden`: Linear 2 over Linear depth-1, equally shaped hidden layers) "
        "beside the training outcome (val/acc after 5 epochs of Adam).",
        "",
    ]
    tanh = [r for (a, _), rs in groups.items() if a == "tanh" for r in rs]
    lowest = min(tanh, key=lambda r: r["init"]["grad_norm/ratio_first_last"])
    lines.append(
        '- The old claim "tanh\'s grad_norm ratio stays ≥ 0.03 up to depth 15": '
        + holds([r["init"]["grad_norm/ratio_first_last"] >= 0.03 for r in tanh])
        + f"; lowest {fmt(lowest['init']['grad_norm/ratio_first_last'])} "
        f"(depth {lowest['hparams']['depth']}, seed {lowest['hparams']['seed']})."
    )
    for activation in sorted({a for a, _ in groups}):
        depths = sorted((d for a, d in groups if a == activation), key=int)
        hidden = {
            d: _init(groups[activation, d], "grad_rms/ratio_hidden") for d in depths if int(d) >= 4
        }
        kept = [d for d, r in hidden.items() if min(r) >= 0.1]
        lost = [d for d, r in hidden.items() if max(r) < 0.01]
        shallow = values(groups[activation, "2"], "val/acc")
        worse = [d for d in depths if max(values(groups[activation, d], "val/acc")) < min(shallow)]
        lines.append(
            f"- {activation}: grad_rms hidden ratio ≥ 0.1 on every seed {_at_depths(kept)}, "
            f"< 0.01 on every seed {_at_depths(lost)}; "
            f"val/acc below depth 2's on every seed {_at_depths(worse)}."
        )
    return [
        *lines,
        "",
        *table(
            (
                "activation",
                "depth",
                "n",
                "grad_norm ratio per seed",
                "grad_rms ratio per seed",
                "grad_rms hidden ratio per seed",
                "val/acc",
            ),
            rows,
        ),
    ]


def dying_relu(sweeps: list[list[Result]]) -> list[str]:
    rows, fixed = [], []
    for (target, fix_bias), rs in sorted(
        group(sweeps[0], "initializer.target_layer", "initializer.fix_bias").items()
    ):
        dead = _init(rs, f"neurons/dead_fraction/layer_{int(target):02d}")
        grad = _init(rs, "grad_norm/layer_01")
        fix_bias = fix_bias.lower()  # "true" from an override, "True" from hparams
        if fix_bias == "true":
            fixed += [d == 1.0 and g == 0.0 for d, g in zip(dead, grad, strict=True)]
        rows.append(
            (
                target,
                fix_bias,
                _n(rs),
                per_seed(dead),
                per_seed(grad),
                spread(values(rs, "val/acc")),
            )
        )
    return [
        "- `fix_bias=true`: the negative layer is all dead at step 0 and `grad_norm/layer_01` is "
        f"exactly 0: {holds(fixed)}.",
        "",
        *table(
            (
                "target layer",
                "fix_bias",
                "n",
                "dead fraction of that layer at step 0",
                "grad_norm/layer_01 at step 0",
                "val/acc",
            ),
            rows,
        ),
    ]


def leaky_relu_rescue(sweeps: list[list[Result]]) -> list[str]:
    groups = group(sweeps[0], "activation", "initializer")
    dead = "neurons/dead_fraction"
    rows = [
        (
            a,
            i,
            _n(rs),
            per_seed(_init(rs, dead)),
            per_seed(values(rs, dead)),
            per_seed(values(rs, "val/acc")),
        )
        for (a, i), rs in sorted(groups.items())
    ]
    leaky = [r for (a, _), rs in groups.items() if a == "leaky_relu" for r in rs]
    relu_acc = values(groups["relu", "default"], "val/acc")
    leaky_acc = values(groups["leaky_relu", "default"], "val/acc")
    test = compared(groups["leaky_relu", "default"], groups["relu", "default"], "val/acc")
    relu_dead = values(groups["relu", "default"], dead)
    return [
        "- leaky_relu has 0 dead units at step 0 and at the end: "
        + holds([r["init"][dead] == 0.0 == r["metrics"][dead] for r in leaky])
        + ". This holds by construction: its derivative is never below its slope 0.01, above "
        "the dead tolerance 1e-8.",
        f"- Default init at lr 0.1: relu ends with {fmt(min(relu_dead))}–{fmt(max(relu_dead))} of "
        f"its units dead, yet its val/acc {per_seed(relu_acc)} against leaky_relu's "
        f"{per_seed(leaky_acc)}: {verdict('leaky_relu', 'relu', test)}.",
        "",
        *table(
            (
                "activation",
                "initializer",
                "n",
                "dead at step 0",
                "dead at the end",
                "val/acc per seed",
            ),
            rows,
        ),
    ]


def universal_approximation(sweeps: list[list[Result]]) -> list[str]:
    groups = group(sweeps[0], "width")
    widths = sorted(groups, key=lambda k: int(k[0]))
    rows = [
        (
            w,
            _n(groups[(w,)]),
            per_seed(values(groups[(w,)], "val/mse")),
            spread(values(groups[(w,)], "val/mse")),
            per_seed(values(groups[(w,)], "neurons/dead_fraction")),
        )
        for (w,) in widths
    ]
    falling = []
    for i in range(len(groups[widths[0]])):  # seed by seed (each group is ordered by seed)
        mse = [groups[w][i]["metrics"]["val/mse"] for w in widths]
        falling.append(all(a > b for a, b in pairwise(mse)))
    tests = [(a[0], b[0], compared(groups[a], groups[b], "val/mse")) for a, b in pairwise(widths)]
    pairs = [f"{a} and {b} ({how_tested(t)})" for a, b, t in tests if not differ(t)]
    all_dead = [
        f"width {w} at seed {r['hparams']['seed']}"
        for (w,) in widths
        for r in groups[(w,)]
        if r["metrics"]["neurons/dead_fraction"] == 1.0
    ]
    return [
        f"- val/mse falls at every step of width 2 → 8 → 32 → 128: {holds(falling)}.",
        "- Neighbouring widths whose val/mse the test does not tell apart: "
        f"{', '.join(pairs) or 'none'}.",
        "- Every hidden unit dead at the end (a constant output): "
        f"{', '.join(all_dead) or 'never'}.",
        "",
        *table(
            ("width", "n", "val/mse per seed", "val/mse", "dead fraction at the end per seed"), rows
        ),
    ]


def zero_centering(sweeps: list[list[Result]]) -> list[str]:
    groups = group(sweeps[0], "activation")
    loss = {a: values(rs, "train/loss") for (a,), rs in groups.items()}
    diff = [s - z for s, z in zip(loss["sigmoid"], loss["zero_centred_sigmoid"], strict=True)]
    return [
        "- zero-centred sigmoid below sigmoid in final train/loss: "
        f"{holds([d > 0 for d in diff])}, "
        f"by {per_seed(diff)}.",
        "- tanh below both on every seed: "
        + holds(
            [
                t < min(s, z)
                for t, s, z in zip(
                    loss["tanh"], loss["sigmoid"], loss["zero_centred_sigmoid"], strict=True
                )
            ]
        )
        + ".",
        "",
        *table(
            ("activation", "n", "final train/loss per seed", "final train/loss"),
            [(a, len(v), per_seed(v), spread(v)) for a, v in sorted(loss.items())],
        ),
    ]


RECOMMENDED_INIT = {"selu": "lecun_normal", "relu": "kaiming_normal", "tanh": "xavier_normal"}


def selu_self_normalizing(sweeps: list[list[Result]]) -> list[str]:
    groups = group(sweeps[0], "activation", "initializer")
    rows = []
    for (activation, init), rs in sorted(groups.items()):
        role = []
        if init == "lecun_normal":
            role.append("shared")
        if RECOMMENDED_INIT.get(activation) == init:
            role.append("recommended")
        first, last = _init(rs, "activations/std/layer_01"), _init(rs, "activations/std/layer_31")
        factor = [(b / a) ** (1 / 30) for a, b in zip(first, last, strict=True)]
        rows.append(
            (
                activation,
                init,
                ", ".join(role) or "–",
                _n(rs),
                per_seed(last),
                per_seed(factor),
                spread(values(rs, "val/acc")),
            )
        )
    selu = _init(groups["selu", "lecun_normal"], "activations/std/layer_31")
    return [
        "Depth 32, width 64, digits, Adam lr 1e-3, 10 epochs. `std x per layer` is "
        "(std at layer 31 / std at layer 1)^(1/30) at step 0: x0.71 is a halving variance. "
        "On the square hidden layers xavier_normal (gain 1) is lecun_normal, and He's gain for "
        "selu is 1, so those rows share their step-0 std; they differ in the input and output "
        "layers.",
        "",
        "- selu at lecun_normal keeps std in [0.8, 1.25] at layer 31: "
        f"{holds([0.8 < s < 1.25 for s in selu])}.",
        "",
        *table(
            (
                "activation",
                "initializer",
                "which",
                "n",
                "std at layer 31 per seed",
                "std x per layer",
                "val/acc",
            ),
            rows,
        ),
    ]


def _parameters(result: Result) -> int:
    """The trainable parameter count of a job's network, rebuilt from its overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fcn_research.run_dirs import CONF_DIR
    from fcn_research.train import build

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="train"):
        cfg = compose("train", overrides=[*result["overrides"], "output_dir=unused"])
    GlobalHydra.instance().clear()
    _, module = build(cfg)
    return sum(p.numel() for p in module.model.parameters())


def _acc_rows(
    groups: dict[tuple[Any, ...], list[Result]],
) -> tuple[list[tuple[Any, ...]], list[str]]:
    """Rows with val/acc spread, each marked whether the test tells it from the best mean."""
    accs = {k: values(rs, "val/acc") for k, rs in groups.items()}
    best = max(accs, key=lambda k: statistics.mean(accs[k]))
    rows = []
    for key, acc in sorted(accs.items(), key=lambda kv: -statistics.mean(kv[1])):
        mark = "best mean"
        if key != best:
            test = compared(groups[key], groups[best], "val/acc")
            mark = f"{'below' if differ(test) else 'not distinguishable'} ({how_tested(test)})"
        rows.append((*key, len(acc), spread(acc), mark))
    return rows, [" ".join(best)]


def maxout(sweeps: list[list[Result]]) -> list[str]:
    results = [r for rs in sweeps for r in rs]
    groups = group(results, "activation", "width")
    rows = []
    for (activation, width), rs in sorted(groups.items()):
        rows.append(
            (
                activation,
                width,
                _parameters(rs[0]),
                _n(rs),
                per_seed(values(rs, "val/acc")),
                spread(values(rs, "val/acc")),
            )
        )

    def label(key: tuple[Any, ...]) -> str:
        return f"{key[0]} (width {key[1]})"

    keys = sorted(groups)
    pairs = [
        f"{label(a)} vs {label(b)} in val/acc: "
        + verdict(label(a), label(b), compared(groups[a], groups[b], "val/acc"))
        for i, a in enumerate(keys)
        for b in keys[i + 1 :]
    ]
    return [
        "Spiral, depth 3, 30 epochs. Maxout at width 22 has about relu's parameter count at "
        "width 32 (maxout's Linears are twice as wide: 2 pieces per unit).",
        "",
        *(f"- {p}." for p in pairs),
        "",
        *table(("activation", "width", "parameters", "n", "val/acc per seed", "val/acc"), rows),
    ]


def pruning(sweeps: list[list[Result]]) -> list[str]:
    groups = group(sweeps[0], "callbacks.pruning.amount")
    keys = sorted(groups, key=lambda k: float(k[0]))
    rows = []
    for (amount,) in keys:
        rs = groups[(amount,)]
        epochs = rs[0]["epochs"]
        rows.append(
            (
                amount,
                _n(rs),
                fmt(1 - (1 - float(amount)) ** epochs),
                spread(values(rs, "pruning/sparsity")),
                spread(values(rs, "val/acc")),
                per_seed(values(rs, "val/acc")),
            )
        )
    tests = [(a[0], b[0], compared(groups[a], groups[b], "val/acc")) for a, b in pairwise(keys)]
    pairs = [f"{a} and {b} ({how_tested(t)})" for a, b, t in tests if not differ(t)]
    return [
        "Digits, depth 3, width 64, 10 epochs; val/acc of the final (pruned) network.",
        "",
        "- Neighbouring amounts whose val/acc the test does not tell apart: "
        f"{', '.join(pairs) or 'none'}.",
        "",
        *table(
            (
                "amount",
                "n",
                "1 - (1 - amount)^epochs",
                "pruning/sparsity",
                "val/acc",
                "val/acc per seed",
            ),
            rows,
        ),
    ]


def activation_zoo(sweeps: list[list[Result]]) -> list[str]:
    default, *recommended, matched = sweeps
    lines = [
        "Depth 4, width 32, 20 epochs. Each activation at PyTorch's default init, and at its "
        "recommended one (kaiming_normal for the ReLU family, softplus and maxout; "
        "xavier_normal for tanh, the sigmoids and identity; lecun_normal for selu); maxout also at "
        "width 22, about relu's parameter count at width 32. Each row is tested against the best "
        "mean of its table: `below` when the test tells them apart.",
    ]
    for data in ("digits", "spiral"):
        for title, results in (
            ("default init", default),
            ("recommended init", [r for rs in recommended for r in rs]),
        ):
            rs = [r for r in results if r["hparams"]["data"] == data]
            rows, _ = _acc_rows(group(rs, "activation"))
            lines += [
                "",
                f"**{data}, {title}**",
                "",
                *table(("activation", "n", "val/acc", "vs best"), rows),
            ]
        rs = [r for r in matched if r["hparams"]["data"] == data]
        lines += [
            "",
            f"maxout at width 22 ({data}, default init): val/acc "
            f"{spread(values(rs, 'val/acc'))}, n = {len(rs)}.",
        ]
    return lines


TRAINS = 0.5  # final train/acc above which a digits network counts as trained (chance: 0.1)


def _theory_number(result: Result, key: str) -> float:
    value = result.get("theory", {}).get(key)
    return math.inf if value == "inf" else float(value)


def edge_of_chaos(sweeps: list[list[Result]]) -> list[str]:
    groups = group(sweeps[0], "initializer.sigma_w2", "depth")
    sigmas = sorted({k[0] for k in groups}, key=float)
    depths = sorted({k[1] for k in groups}, key=int)
    rows, within, beyond = [], [], []
    for sw in sigmas:
        first = next(groups[(sw, d)][0] for d in depths if (sw, d) in groups)
        xi_c = _theory_number(first, "xi_c")
        accs = []
        for d in depths:
            acc = values(groups.get((sw, d), []), "train/acc")
            accs.append(per_seed(acc) if acc else "–")
            (within if int(d) <= 6 * xi_c else beyond).extend(acc)
        rows.append((sw, fmt(_theory_number(first, "chi1")), fmt(xi_c), fmt(6 * xi_c), *accs))
    trained_within = sum(a > TRAINS for a in within)
    trained_beyond = sum(a > TRAINS for a in beyond)
    return [
        "One seed (0). tanh, b ~ N(0, 0.05), W ~ N(0, sigma_w2 / fan_in), width 128, 4 epochs "
        "of SGD on digits. "
        "chi1 and xi_c are the mean-field predictions (result.json's theory); the critical "
        "sigma_w2 is 1.76. Cells: final train/acc (chance 0.1).",
        "",
        f"- Depth ≤ 6 ξ_c: train/acc > {TRAINS} in {trained_within} of {len(within)} runs; "
        f"depth > 6 ξ_c: in {trained_beyond} of {len(beyond)} runs.",
        "",
        *table(("sigma_w2", "chi1", "xi_c", "6 xi_c", *(f"depth {d}" for d in depths)), rows),
    ]


def dynamical_isometry(sweeps: list[list[Result]]) -> list[str]:
    rows, spreads = [], defaultdict(list)
    for results, activation in zip(sweeps, ("tanh", "relu"), strict=True):
        groups = group(results, "initializer", "depth")
        for init_name, depth in sorted(groups, key=lambda k: (k[0], int(k[1]))):
            (r,) = groups[(init_name, depth)]
            init = r["init"]
            mean, top = init["jacobian/singular_value_mean"], init["jacobian/singular_value_max"]
            name = f"{activation}, {init_name} (sigma_w2 {fmt(r['theory']['sigma_w2'])})"
            spreads[name].append(top / mean)
            rows.append(
                (
                    name,
                    depth,
                    fmt(r["theory"]["chi1"]),
                    fmt(mean),
                    fmt(top),
                    fmt(init["jacobian/singular_value_min"]),
                    fmt(top / mean),
                    fmt(r["metrics"]["train/acc"]),
                )
            )
    claims = [
        f"- {name}: max / mean singular value {' → '.join(fmt(x) for x in xs)} "
        f"from the shallowest to the deepest network."
        for name, xs in spreads.items()
    ]
    return [
        "One seed (0). Step 0: singular values of the Jacobian of the last hidden layer with "
        "respect to the "
        "first (8 probe samples, width 128), chi1 from the theory; train/acc after 3 epochs of "
        "SGD (lr 0.01) on digits.",
        "",
        *claims,
        "",
        *table(
            (
                "network",
                "depth",
                "chi1",
                "mean singular value",
                "max",
                "min",
                "max / mean",
                "train/acc after 3 epochs",
            ),
            rows,
        ),
    ]
