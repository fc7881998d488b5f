"""Statistics over seeds: t-intervals, the test of a cell against its baseline, and power.

- Confidence interval: Student's t-interval, mean ± t(0.975, n-1) · s / sqrt(n), with s the
  sample std (n-1). It assumes the seeds' values are roughly normal; with n = 2 it is wide
  (t = 12.7) because two seeds say little.
- Bounded metrics (accuracies, fractions, sparsity: ``metric_bounds``) cannot leave [0, 1];
  their interval is clipped to it, and the tables say so where it was.
- Comparison: a paired t-test on the per-seed differences when both cells completed the same
  seeds (the seed fixes the initialization and the batch order, so pairs share their luck),
  else Welch's t-test. Effect size: Cohen's d_z (mean difference / std of the differences)
  for paired, Cohen's d (mean difference / pooled std) for Welch.
- Seeds needed: the smallest n per cell at which the same test, at alpha = 0.05 two-sided,
  has 80 % power if the observed effect size were the true one (exact power from the
  noncentral t distribution). An effect estimated from a few seeds is itself uncertain: read
  the number as an order of magnitude.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats as scipy_stats

LEVEL = 0.95
ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 10_000  # beyond this, "more than 10000"
# Metrics are float32 (about 7 digits): a spread below this fraction of the values' magnitude
# is rounding (0.95 - 0.84 in three seeds), not variation, and counts as none.
ROUNDING = 1e-6


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    """Student's t confidence interval of the mean; None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = scipy_stats.t.ppf(0.5 + level / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean - half, mean + half


# The metrics that live in [0, 1], by tag: accuracies (``val/acc``), fractions of units or
# (unit, sample) pairs (``neurons/dead_fraction/layer_02``), weight sparsity.
UNIT_INTERVAL = re.compile(r"(^|/)acc$|_fraction(/|$)|(^|/)sparsity(/|$)")


def metric_bounds(tag: str) -> tuple[float, float] | None:
    """The range a metric cannot leave ((0, 1) for accuracies, fractions, sparsity), or None."""
    return (0.0, 1.0) if UNIT_INTERVAL.search(tag) else None


def clip_interval(
    interval: tuple[float, float], bounds: tuple[float, float] | None
) -> tuple[tuple[float, float], bool]:
    """The interval clipped to ``bounds`` and whether that changed it."""
    if bounds is None:
        return interval, False
    low, high = max(interval[0], bounds[0]), min(interval[1], bounds[1])
    return (low, high), (low, high) != interval


def _power(effect: float, n: int, paired: bool) -> float:
    """Power of the two-sided t-test at ALPHA with n seeds per cell, true effect ``effect``."""
    df = n - 1 if paired else 2 * n - 2
    ncp = abs(effect) * (math.sqrt(n) if paired else math.sqrt(n / 2))
    crit = scipy_stats.t.ppf(1 - ALPHA / 2, df)
    power = float(scipy_stats.nct.sf(crit, df, ncp) + scipy_stats.nct.cdf(-crit, df, ncp))
    # scipy's noncentral t returns NaN far in its tail; there the normal limit is exact enough.
    return power if math.isfinite(power) else float(scipy_stats.norm.sf(crit - ncp))


def seeds_needed(effect: float, paired: bool) -> int | None:
    """Smallest n per cell with POWER at ALPHA for this effect size; None if over MAX_SEEDS
    (or the effect is 0 or undefined)."""
    if math.isinf(effect):
        return 2
    if not math.isfinite(effect) or effect == 0:
        return None
    # The normal approximation is a lower bound; the t-test needs that many or a few more.
    z = scipy_stats.norm.ppf(1 - ALPHA / 2) + scipy_stats.norm.ppf(POWER)
    n = max(2, math.floor((1 if paired else 2) * (z / effect) ** 2))
    while n <= MAX_SEEDS:
        if _power(effect, n, paired) >= POWER:
            return n
        n += 1
    return None


@dataclass
class Comparison:
    """One cell against its baseline cell for one metric."""

    test: str  # "paired t" | "Welch t" | "" (too few seeds)
    n: int  # pairs (paired) or the cell's own n (Welch)
    n_baseline: int
    difference: float | None  # mean(cell) - mean(baseline)
    p: float | None
    effect_name: str  # "d_z" | "d"
    effect: float | None
    needed: int | None  # seeds per cell for 80 % power at the observed effect

    def verdict(self) -> str:
        """The plain sentence: not distinguishable, higher or lower (at alpha 0.05)."""
        if self.p is None:
            return f"no test: needs n >= 2 in both cells (n = {self.n} vs {self.n_baseline})"
        n = str(self.n) if self.test == "paired t" else f"{self.n} vs {self.n_baseline}"
        if self.p >= ALPHA:
            return f"not distinguishable with n = {n}"
        side = "higher" if (self.difference or 0.0) > 0 else "lower"
        return f"{side} than the baseline (p < {ALPHA})"

    def needed_text(self) -> str:
        """Seeds per cell for 80 % power, as a short phrase."""
        if self.effect is None:
            return "–"
        return str(self.needed) if self.needed is not None else f"> {MAX_SEEDS}"


def compare(cell: Mapping[str, float], baseline: Mapping[str, float]) -> Comparison:
    """Test ``cell`` (seed -> value) against ``baseline``: paired when the seeds match."""
    paired = set(cell) == set(baseline) and len(cell) >= 2
    scale = max(abs(v) for v in [*cell.values(), *baseline.values()]) or 1.0
    if paired:
        diffs = [cell[s] - baseline[s] for s in sorted(cell)]
        mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
        p, effect = _test(mean, sd, scale, lambda: scipy_stats.ttest_1samp(diffs, 0.0))
        needed = seeds_needed(effect, paired=True)
        return Comparison("paired t", len(diffs), len(baseline), mean, p, "d_z", effect, needed)
    a, b = list(cell.values()), list(baseline.values())
    if len(a) < 2 or len(b) < 2:
        return Comparison("", len(a), len(b), None, None, "d", None, None)
    mean = statistics.fmean(a) - statistics.fmean(b)
    pooled = math.sqrt(
        ((len(a) - 1) * statistics.variance(a) + (len(b) - 1) * statistics.variance(b))
        / (len(a) + len(b) - 2)
    )
    p, effect = _test(mean, pooled, scale, lambda: scipy_stats.ttest_ind(a, b, equal_var=False))
    needed = seeds_needed(effect, paired=False)
    return Comparison("Welch t", len(a), len(b), mean, p, "d", effect, needed)


def _test(mean: float, sd: float, scale: float, run: Callable[[], Any]) -> tuple[float, float]:
    """(p, effect size); without spread the test is decided by the mean alone."""
    if sd <= ROUNDING * scale:
        # The same difference in every seed: equal (p = 1) or as certain as it gets (p = 0).
        if abs(mean) <= ROUNDING * scale:
            return 1.0, 0.0
        return 0.0, math.copysign(math.inf, mean)
    return float(run().pvalue), mean / sd
