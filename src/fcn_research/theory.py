"""Mean-field signal propagation in wide random MLPs (Poole et al. 2016; Schoenholz et al. 2017).

For a network whose Linear l has weights ~ (0, sigma_w2 / fan_in) and biases ~ (0, sigma_b2),
in the limit of infinite width every pre-activation is Gaussian over units, with a variance
``q`` that follows the length map

    q^{l+1} = sigma_w2 E_z[phi(sqrt(q^l) z)^2] + sigma_b2,        z ~ N(0, 1),

and the squared norm of the backpropagated gradient changes by ``chi1 = sigma_w2
E_z[phi'(sqrt(q*) z)^2]`` per layer (< 1 ordered: vanishing; > 1 chaotic: exploding; within
``CRITICAL_TOL`` of 1 critical, where the depth scales diverge).

Where the fixed point is at an end of the range, the predictions are its limits: q* = 0
(no bias and phi(0) = 0, e.g. GELU at He) gives chi1 = sigma_w2 phi'(0)^2; where q grows
without bound there is no stable fixed point, which ``predict`` says with the reason, and chi1
is its large-q limit where that exists (sigma_w2 / 2 for the ReLU family).

Gaussian expectations are computed by Gauss-Legendre quadrature on each half-line [-T, 0]
and [0, T] (T = 12 standard deviations): the breakpoint at 0 keeps the ReLU family's kink out
of the interior, where Gauss-Hermite converges only algebraically, so every elementwise
activation smooth away from 0 comes out to ~1e-12. Derivatives come from autograd on the
activation module itself, in float64, so any elementwise ``nn.Module`` works. A pooling
activation (``pool_size`` > 1, Maxout) or one that mixes units has no such map: the functions
here raise ``NotApplicable`` for it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

# Quadrature: Gauss-Legendre points per half-line and the half-line's length in std's.
QUAD_POINTS = 256
QUAD_RANGE = 12.0
# Fixed-point iteration of the length map: relative tolerance, step budget, and the
# variance beyond which q counts as unbounded (q* = inf: the map has no finite fixed point).
Q_TOL = 1e-12
Q_MAX_STEPS = 20_000
Q_UNBOUNDED = 1e12
# chi1 within this of 1 is critical (its depth scales infinite): a float64 chi1 of 1 + 1e-15
# (ReLU at He) is 1, not chaos with a depth scale of 1e8 layers.
CRITICAL_TOL = 1e-6
# A bias-free fixed point reached below this fraction of the starting q is the limit q* = 0
# (the map relaxes towards 0 ever more slowly where it is marginal, e.g. tanh at sigma_w2 = 1).
Q_ZERO = 1e-6
# Where the limits q -> 0 and q -> inf are evaluated: an error of O(q) at 0, and at infinity
# two far points that must agree for the limit to exist.
Q_SMALL = 1e-16
Q_LARGE = (1e12, 1e16)


class NotApplicable(ValueError):
    """The mean-field theory does not apply to this network; the message says why."""


def _half_line_rule() -> tuple[Tensor, Tensor]:
    """Nodes and weights for E_z[f(z)], z ~ N(0, 1): Gauss-Legendre on [-T, 0] and [0, T]."""
    x, w = np.polynomial.legendre.leggauss(QUAD_POINTS)
    half = QUAD_RANGE / 2
    pos = half * (x + 1)  # [0, T]
    nodes = np.concatenate([-pos[::-1], pos])
    weights = np.concatenate([w[::-1], w]) * half * np.exp(-(nodes**2) / 2) / math.sqrt(2 * math.pi)
    return torch.from_numpy(nodes), torch.from_numpy(weights)


_NODES, _WEIGHTS = _half_line_rule()


def elementwise(activation: nn.Module) -> nn.Module:
    """A float64 copy of ``activation`` after checking that it acts on each number alone.

    Raises ``NotApplicable`` for a pooling activation (``pool_size`` > 1: its unit's input is
    k Gaussians, not one) and for one whose output on a vector is not the map applied to each
    entry (it mixes units, or keeps per-unit parameters).
    """
    name = type(activation).__name__
    pool = int(getattr(activation, "pool_size", 1))
    if pool > 1:
        raise NotApplicable(
            f"{name} pools {pool} inputs per unit: the mean-field length map is for elementwise "
            "activations (one Gaussian pre-activation per unit)"
        )
    # A float64 copy on the CPU, where the quadrature nodes are (the network may be on a GPU).
    act = copy.deepcopy(activation).to("cpu", torch.float64).eval()
    z = torch.linspace(-3, 3, 7, dtype=torch.float64)
    try:
        with torch.no_grad():
            whole = act(z.reshape(1, -1))
            alone = act(z.reshape(-1, 1))
    except RuntimeError as err:
        raise NotApplicable(f"{name} does not act on each number alone ({err})") from err
    if whole.shape != (1, 7) or not torch.allclose(whole.reshape(-1), alone.reshape(-1)):
        raise NotApplicable(
            f"{name} is not elementwise (its output on a vector is not the map applied to each "
            "entry): the mean-field length map does not apply"
        )
    return act


def _phi_and_derivative(act: nn.Module, u: Tensor) -> tuple[Tensor, Tensor]:
    u = u.detach().requires_grad_(True)
    with torch.enable_grad():
        out = act(u.clone())
        (d,) = torch.autograd.grad(out.sum(), u)
    return out.detach(), d


@dataclass(frozen=True)
class Moments:
    """E_z of phi, phi^2, phi'^2 and z phi phi' at u = sqrt(q) z, z ~ N(0, 1), for each q."""

    mean: Tensor
    second: Tensor
    derivative_second: Tensor
    z_phi_dphi: Tensor


def moments(act: nn.Module, q: Tensor | float) -> Moments:
    """The Gaussian moments of an elementwise float64 activation (``elementwise``) at variance q."""
    q = torch.as_tensor(q, dtype=torch.float64).reshape(-1, 1)
    u = q.clamp_min(0).sqrt() * _NODES
    phi, dphi = _phi_and_derivative(act, u)

    def expect(values: Tensor) -> Tensor:
        return (values * _WEIGHTS).sum(-1)

    return Moments(expect(phi), expect(phi**2), expect(dphi**2), expect(_NODES * phi * dphi))


def length_map(act: nn.Module, q: Tensor | float, sigma_w2: float, sigma_b2: float) -> Tensor:
    """q^{l+1} = sigma_w2 E[phi(sqrt(q^l) z)^2] + sigma_b2, for each q."""
    q = torch.as_tensor(q, dtype=torch.float64).reshape(-1, 1)
    with torch.no_grad():
        phi = act(q.clamp_min(0).sqrt() * _NODES)
    return sigma_w2 * (phi**2 * _WEIGHTS).sum(-1) + sigma_b2


def iterate_length_map(
    act: nn.Module, sigma_w2: float, sigma_b2: float, q0: float = 1.0, max_steps: int = Q_MAX_STEPS
) -> tuple[float, bool]:
    """Iterate the length map from ``q0``: (the fixed point, True), or (the last q, False)
    where q grows unbounded or is still moving after ``max_steps``.

    Where the map contracts, each step tries Steffensen's extrapolation and keeps it only
    where it lies closer to a fixed point than the plain step: near a marginal map (slope ~1,
    e.g. ReLU at sigma_w2 close to 2) plain iteration would need ~1 / (1 - slope) steps.
    """

    def step(q: float) -> float:
        return float(length_map(act, q, sigma_w2, sigma_b2))

    q = float(q0)
    for _ in range(max_steps):
        q1 = step(q)
        if not math.isfinite(q1) or q1 > Q_UNBOUNDED:
            return q, False
        if abs(q1 - q) <= Q_TOL * max(1.0, q):
            return q1, True
        q2 = step(q1)
        denominator = q2 - 2 * q1 + q
        # Only where the map contracts: elsewhere the extrapolation finds unstable fixed
        # points (q = 0 of a bias-free ReLU net at sigma_w2 > 2).
        contracting = math.isfinite(q2) and abs(q2 - q1) < abs(q1 - q)
        if denominator != 0 and contracting:
            guess = q - (q1 - q) ** 2 / denominator
            if 0 <= guess < Q_UNBOUNDED and abs(step(guess) - guess) < abs(q2 - q1) / 2:
                q = guess
                continue
        if not math.isfinite(q2) or q2 > Q_UNBOUNDED:
            return q1, False
        q = q2
    return q, False


def q_star(act: nn.Module, sigma_w2: float, sigma_b2: float, q0: float = 1.0) -> float:
    """The fixed point of the length map reached from ``q0`` (``inf`` where q grows unbounded:
    e.g. ReLU at sigma_w2 >= 2 with a bias, where q grows by a constant per layer)."""
    q, converged = iterate_length_map(act, sigma_w2, sigma_b2, q0)
    return q if converged else math.inf


def chi1(act: nn.Module, sigma_w2: float, q: float) -> float:
    """chi1 = sigma_w2 E[phi'(sqrt(q) z)^2]: per-layer factor of the gradient's squared norm."""
    return float(sigma_w2 * moments(act, q).derivative_second)


def length_map_slope(act: nn.Module, sigma_w2: float, q: float) -> float:
    """d q^{l+1} / d q^l = sigma_w2 E[phi'^2 + phi phi''], by Stein's lemma sigma_w2
    E[z phi phi'] / sqrt(q): first derivatives only, so kinks (ReLU) are handled exactly."""
    q = max(q, 1e-12)  # q* = 0 (no bias, ordered): the slope's limit at 0
    return float(sigma_w2 * moments(act, q).z_phi_dphi / math.sqrt(q))


# The correlation map's 2-D expectations: a coarser product rule keeps them cheap (64^2 nodes
# per quadrant; ~1e-8 for smooth activations, which is all c* and chi_c are needed for).
_PAIR_POINTS = 64


def _make_pair_rule() -> tuple[Tensor, Tensor, Tensor]:
    x, w = np.polynomial.legendre.leggauss(_PAIR_POINTS)
    half = QUAD_RANGE / 2
    pos = half * (x + 1)
    nodes = torch.from_numpy(np.concatenate([-pos[::-1], pos]))
    weights = torch.from_numpy(
        np.concatenate([w[::-1], w]) * half * np.exp(-(nodes.numpy() ** 2) / 2)
    ) / math.sqrt(2 * math.pi)
    z1, z2 = torch.meshgrid(nodes, nodes, indexing="ij")
    return z1.reshape(-1), z2.reshape(-1), torch.outer(weights, weights).reshape(-1)


_PAIR_RULE = _make_pair_rule()


def _pair(q: float, c: float) -> tuple[Tensor, Tensor, Tensor]:
    """Two pre-activations of variance q and correlation c on the product rule, and weights."""
    z1, z2, w = _PAIR_RULE
    s = math.sqrt(q)
    return s * z1, s * (c * z1 + math.sqrt(max(0.0, 1 - c * c)) * z2), w


def correlation_fixed_point(act: nn.Module, sigma_w2: float, sigma_b2: float, q: float) -> float:
    """c*, the stable fixed point of the correlation map of two inputs at variance q: 1 in the
    ordered and critical phases (chi1 <= 1 + CRITICAL_TOL), else the root of c_map(c) = c
    below 1, by bisection."""
    if chi1(act, sigma_w2, q) <= 1 + CRITICAL_TOL:
        return 1.0

    def excess(c: float) -> float:
        u1, u2, w = _pair(q, c)
        with torch.no_grad():
            return float((sigma_w2 * (w * act(u1) * act(u2)).sum() + sigma_b2) / q) - c

    lo, hi = -1.0, 1.0 - 1e-9
    if excess(lo) <= 0:
        return lo
    for _ in range(50):
        mid = (lo + hi) / 2
        if excess(mid) > 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def chi_c(act: nn.Module, sigma_w2: float, sigma_b2: float, q: float) -> float:
    """chi_c = sigma_w2 E[phi'(u1) phi'(u2)] at the correlation fixed point c* (chi1 if c* = 1)."""
    c = correlation_fixed_point(act, sigma_w2, sigma_b2, q)
    if c >= 1 - 1e-9:
        return chi1(act, sigma_w2, q)
    u1, u2, w = _pair(q, c)
    _, d1 = _phi_and_derivative(act, u1)
    _, d2 = _phi_and_derivative(act, u2)
    return float(sigma_w2 * (w * d1 * d2).sum())


def depth_scale(rate: float) -> float:
    """xi = -1 / log(rate): the depth over which a deviation shrinks (or grows) by e; infinite
    within ``CRITICAL_TOL`` of rate 1."""
    if rate <= 0:
        return 0.0
    if abs(rate - 1) < CRITICAL_TOL:
        return math.inf
    return abs(1.0 / math.log(rate))


def phase(chi: float) -> str:
    """``ordered`` (chi1 < 1: gradients vanish), ``critical`` (within ``CRITICAL_TOL`` of 1)
    or ``chaotic`` (chi1 > 1: they explode)."""
    if abs(chi - 1) < CRITICAL_TOL:
        return "critical"
    return "ordered" if chi < 1 else "chaotic"


def large_q_limit(act: nn.Module, sigma_w2: float) -> tuple[float, float] | None:
    """(chi1, q^{l+1} / q^l) as q -> inf, where both settle (the ReLU family: sigma_w2 / 2
    twice), else None."""
    far = [(chi1(act, sigma_w2, q), float(length_map(act, q, sigma_w2, 0.0)) / q) for q in Q_LARGE]
    (c_a, g_a), (c_b, g_b) = far
    settled = all(
        math.isfinite(a) and math.isfinite(b) and abs(a - b) <= 1e-9 * max(1.0, abs(b))
        for a, b in ((c_a, c_b), (g_a, g_b))
    )
    return (c_b, g_b) if settled else None


@dataclass(frozen=True)
class FixedPoint:
    """The length map's fixed point reached from q0 and the numbers at it (or at its limit).

    ``q_star``, ``xi_q`` and ``xi_c`` are None where there is no stable fixed point, and
    ``chi1`` where, besides, it has no large-q limit; ``about`` says which case it is.
    """

    q_star: float | None
    chi1: float | None
    xi_q: float | None
    xi_c: float | None
    about: str

    @property
    def phase(self) -> str | None:
        """``phase(chi1)``, or None without a chi1."""
        return phase(self.chi1) if self.chi1 is not None else None


def fixed_point(act: nn.Module, sigma_w2: float, sigma_b2: float, q0: float) -> FixedPoint:
    """q*, chi1, xi_q and xi_c for an elementwise float64 activation, iterated from ``q0``,
    with the limits q* = 0 and q -> inf taken where the fixed point is at an end."""
    q, converged = iterate_length_map(act, sigma_w2, sigma_b2, q0)
    if not converged:
        limit = large_q_limit(act, sigma_w2)
        why = f"no stable fixed point: from q = {q0:.4g}, q grows without bound"
        if limit is None:
            return FixedPoint(None, None, None, None, f"{why}; chi1 has no large-q limit")
        c1, growth = limit
        how = (
            "by a constant per layer: the map's slope is 1 at large q"
            if abs(growth - 1) < CRITICAL_TOL
            else f"x{growth:.4g} per layer at large q"
        )
        return FixedPoint(
            None,
            c1,
            None,
            None,
            f"{why} ({how}); chi1 is its large-q limit; xi_q and xi_c, depth scales of the "
            "approach to a fixed point, do not apply",
        )
    at_zero = sigma_b2 == 0 and q < Q_ZERO * max(1.0, q0)
    at = Q_SMALL if at_zero else q
    slope = length_map_slope(act, sigma_w2, at)
    if at_zero:
        about = "q* = 0 (no bias and phi(0) = 0): chi1, xi_q and xi_c are their limits as q -> 0"
    elif abs(slope - 1) < CRITICAL_TOL:
        about = f"marginal fixed point q* = {q:.4g}: the map's slope is 1, q stays where it starts"
    else:
        about = f"stable fixed point q* = {q:.4g}"
    c1 = chi1(act, sigma_w2, at)
    xi_q = depth_scale(slope)
    critical = phase(c1) == "critical"
    xi_c = math.inf if critical else depth_scale(chi_c(act, sigma_w2, sigma_b2, at))
    return FixedPoint(0.0 if at_zero else q, c1, xi_q, xi_c, about)


def critical_sigma_w2(
    activation: nn.Module, sigma_b2: float, low: float = 1e-3, high: float = 100.0
) -> float:
    """The sigma_w2 at which chi1(q*) = 1 for this sigma_b2 (the edge of chaos), by bisection.

    Raises ``NotApplicable`` if chi1 - 1 does not change sign on [low, high].
    """
    act = elementwise(activation)

    def excess(sigma_w2: float) -> float:
        # Where q grows unbounded, chi1 at the last q: for ReLU it does not depend on q.
        q, _ = iterate_length_map(act, sigma_w2, sigma_b2, max_steps=200)
        return chi1(act, sigma_w2, q) - 1.0

    lo, hi = low, high
    if excess(lo) > 0 or excess(hi) < 0:
        raise NotApplicable(
            f"{type(activation).__name__}: chi1 = 1 is not crossed for sigma_w2 in [{low}, {high}] "
            f"at sigma_b2 = {sigma_b2}"
        )
    for _ in range(60):
        mid = (lo + hi) / 2
        if excess(mid) > 0:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class LayerVariances:
    """The (sigma_w2, sigma_b2) of one Linear: W ~ (0, sigma_w2 / fan_in), b ~ (0, sigma_b2)."""

    sigma_w2: float
    sigma_b2: float


@dataclass
class Prediction:
    """Mean-field predictions for one network: summary numbers and per-layer values.

    ``values`` uses the instruments' tag names (``activations/std/layer_XX``,
    ``grad_norm/ratio_first_last``, ...); ``notes`` say where the prediction is known to be
    approximate (finite width, inputs of unequal norm). ``q_star``, ``chi1``, ``xi_q`` and
    ``xi_c`` are None where they do not apply; ``fixed_point`` says why (``FixedPoint``).
    """

    sigma_w2: float
    sigma_b2: float
    q_star: float | None
    chi1: float | None
    xi_q: float | None
    xi_c: float | None
    values: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    fixed_point: str = ""

    def as_dict(self) -> dict[str, object]:
        """The ``theory`` section of result.json: a number left out where it does not apply
        (``fixed_point`` says why); an infinite depth scale (critical) as ``"inf"``."""

        def num(x: float) -> float | str:
            return x if math.isfinite(x) else str(x)

        summary = {"q_star": self.q_star, "chi1": self.chi1, "xi_q": self.xi_q, "xi_c": self.xi_c}
        return {
            "sigma_w2": self.sigma_w2,
            "sigma_b2": self.sigma_b2,
            **{k: num(v) for k, v in summary.items() if v is not None},
            **({"phase": phase(self.chi1)} if self.chi1 is not None else {}),
            "fixed_point": self.fixed_point,
            **{k: num(v) for k, v in self.values.items()},
            "notes": list(self.notes),
        }


# The probe samples' squared norms are grouped into at most this many quantile groups, each
# propagated with its mean: the mixture over inputs at a fraction of the cost of every sample.
NORM_GROUPS = 32
# Below this hidden width, per-layer statistics deviate from the infinite-width limit by
# more than a few percent (O(1/sqrt(width)) per layer, compounding with depth).
WIDE = 100


def _bulk(variances: Sequence[LayerVariances]) -> LayerVariances:
    """The (sigma_w2, sigma_b2) of the Linears that read a hidden layer (2..depth), which set
    q*, chi1 and the depth scales; the output Linear is left out where others exist."""
    reading_hidden = list(variances[1:])
    bulk = reading_hidden[:-1] or reading_hidden
    first = bulk[0]
    if any(not math.isclose(v.sigma_w2, first.sigma_w2, rel_tol=1e-9) for v in bulk) or any(
        not math.isclose(v.sigma_b2, first.sigma_b2, rel_tol=1e-9, abs_tol=1e-15) for v in bulk
    ):
        raise NotApplicable(
            "the hidden Linears have different (sigma_w2, sigma_b2) "
            f"({[(v.sigma_w2, v.sigma_b2) for v in bulk]}): no single fixed point q*"
        )
    return first


def predict(
    activation: nn.Module,
    variances: Sequence[LayerVariances],
    widths: Sequence[int],
    inputs: Tensor,
) -> Prediction:
    """Mean-field predictions for an MLP with the given per-Linear variances, hidden widths and
    inputs (the probe set, ``(n, d)``).

    Each input sample is propagated with its own q^1 = sigma_w2 |x|^2 / d + sigma_b2 (samples of
    similar norm grouped: ``NORM_GROUPS``), so inputs of unequal norm are accounted for; a
    layer's predicted ``activations/std`` is the std over
    (sample, unit) of that mixture. ``grad_norm/ratio_to_last/layer_XX`` is the predicted
    ``grad_norm/layer_XX / grad_norm/layer_<depth>``: per sample the gradient of Linear l is
    delta_l x_{l-1}^T, with E|delta_l|^2 = prod_{k=l}^{depth-1} chi_k E|delta_depth|^2 and
    |x_{l-1}|^2 = width E[phi^2]; samples are added as if their gradients were uncorrelated.
    """
    depth = len(variances)
    if depth < 2:
        raise NotApplicable("depth 1 (a perceptron) has no hidden layer to propagate through")
    act = elementwise(activation)
    bulk = _bulk(variances)
    x = inputs.detach().to(torch.float64).reshape(len(inputs), -1)
    d = x.shape[1]
    sq_norm = (x**2).sum(1)  # |x_0|^2 per sample
    groups = torch.sort(sq_norm).values.tensor_split(min(len(sq_norm), NORM_GROUPS))
    weight = torch.tensor([len(g) / len(sq_norm) for g in groups], dtype=torch.float64)

    def mean(values: Tensor) -> Tensor:
        return (values * weight).sum()

    norm = torch.stack([g.mean() for g in groups])
    q = variances[0].sigma_w2 * norm / d + variances[0].sigma_b2
    values: dict[str, float] = {}
    # Per sample: |x_{l-1}|^2 and the product of chi's from layer l to the last hidden layer.
    input_norms = [norm]
    chis = []
    for layer in range(1, depth):
        m = moments(act, q)
        first = mean(m.mean)
        values[f"activations/mean/layer_{layer:02d}"] = float(first)
        values[f"activations/std/layer_{layer:02d}"] = float(
            (mean(m.second) - first**2).clamp_min(0).sqrt()
        )
        values[f"preactivations/std/layer_{layer:02d}"] = float(mean(q).sqrt())
        chis.append(variances[layer].sigma_w2 * m.derivative_second)
        input_norms.append(widths[layer - 1] * m.second)
        q = variances[layer].sigma_w2 * m.second + variances[layer].sigma_b2
    tail = torch.ones_like(norm)
    sq_grad = [torch.zeros_like(norm)] * depth
    for layer in range(depth, 0, -1):  # |delta_l|^2 relative to |delta_depth|^2
        sq_grad[layer - 1] = tail * input_norms[layer - 1]
        if layer > 1:
            tail = tail * chis[layer - 2]
    last = mean(sq_grad[-1])
    for layer in range(1, depth + 1):
        values[f"grad_norm/ratio_to_last/layer_{layer:02d}"] = float(
            (mean(sq_grad[layer - 1]) / last).sqrt()
        )
    values["grad_norm/ratio_first_last"] = values["grad_norm/ratio_to_last/layer_01"]

    # From the first hidden layer's q (the mean over samples): where the map has two basins
    # (GELU at He: q -> 0 below an unstable point, q -> inf above), the network's own.
    q1 = float(variances[0].sigma_w2 * sq_norm.mean() / d + variances[0].sigma_b2)
    point = fixed_point(act, bulk.sigma_w2, bulk.sigma_b2, q1)
    notes = []
    narrow = min(widths) if widths else 0
    if narrow < WIDE:
        notes.append(
            f"finite width: the narrowest hidden layer has {narrow} units; the theory is the "
            f"infinite-width limit (per-layer deviations ~1/sqrt(width) that compound with depth)"
        )
    spread = float(sq_norm.std() / sq_norm.mean()) if len(sq_norm) > 1 else 0.0
    if spread > 0.1:
        notes.append(
            f"inputs of unequal norm (|x|^2 varies by {spread:.0%} of its mean over the probe "
            "set): each sample is propagated with its own q, so layer 1 is a mixture of Gaussians"
        )
    return Prediction(
        bulk.sigma_w2,
        bulk.sigma_b2,
        point.q_star,
        point.chi1,
        point.xi_q,
        point.xi_c,
        values,
        notes,
        point.about,
    )
