"""What the experiments page is made of: the sweeps' results, read by the report's loader;
the numbers, formatted; two settings compared by the report's test (``report.stats``)."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fcn_research.report.loading import load_sweep
from fcn_research.report.stats import ALPHA, Comparison, compare
from fcn_research.results import RESULT_FILE
from fcn_research.sweeps import MULTIRUN_FILE

Result = dict[str, Any]
# The statuses whose numbers a page may show: a diverged run is an outcome too.
SHOWN = ("completed", "diverged")
COMPARISON = (
    "Two settings are compared by the report's test (`scripts/report.py --baseline`): a paired "
    "t-test on the per-seed differences when both ran the same seeds, else Welch's t-test, "
    f"two-sided at alpha = {ALPHA}; each verdict names its test and p-value."
)


# ---- reading results


def load(sweep_dir: Path) -> list[Result]:
    """The jobs' results of the sweep in ``sweep_dir`` (the report's loader), in job dir order;
    raises if the sweep has not run, or a job of it has not completed."""
    if not (sweep_dir / MULTIRUN_FILE).is_file() and not any(sweep_dir.rglob(RESULT_FILE)):
        raise FileNotFoundError(f"no {RESULT_FILE} under {sweep_dir}: run the sweep first")
    results = []
    for job in load_sweep(sweep_dir).jobs:
        if job.status not in SHOWN:
            where = job.path / RESULT_FILE if job.path else f"{sweep_dir}: job {job.name}"
            raise ValueError(f"{where}: status {job.status!r}, expected completed")
        results.append(job.result)
    if not results:
        raise FileNotFoundError(f"no {RESULT_FILE} under {sweep_dir}: run the sweep first")
    return results


def setting(result: Result, key: str) -> str:
    """A job's value of ``key`` as text: from its overrides (``key=value``), else its hparams."""
    for override in result["overrides"]:
        name, _, value = override.partition("=")
        if name == key:
            return value
    return str(result["hparams"][key])


def group(results: Iterable[Result], *keys: str) -> dict[tuple[Any, ...], list[Result]]:
    """Results by their values of ``keys``, each group ordered by seed."""
    groups: dict[tuple[Any, ...], list[Result]] = defaultdict(list)
    for result in results:
        groups[tuple(setting(result, k) for k in keys)].append(result)
    return {k: sorted(v, key=lambda r: r["hparams"]["seed"]) for k, v in groups.items()}


def values(results: list[Result], key: str, part: str = "metrics") -> list[float]:
    """``key`` of each result's ``part`` (``metrics`` or ``init``), in the results' order."""
    return [float(r[part][key]) for r in results]


# ---- formatting


def fmt(value: float) -> str:
    """Three significant digits; 0 as 0."""
    if value == 0:
        return "0"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3g}"


def spread(xs: Sequence[float]) -> str:
    """``mean ± sd [min, max]`` over seeds (the sample sd; one value alone)."""
    if len(xs) == 1:
        return fmt(xs[0])
    return (
        f"{fmt(statistics.mean(xs))} ± {fmt(statistics.stdev(xs))} [{fmt(min(xs))}, {fmt(max(xs))}]"
    )


def per_seed(xs: Sequence[float]) -> str:
    """The values seed by seed: ``a / b / c``."""
    return " / ".join(fmt(x) for x in xs)


def by_seed(results: list[Result], key: str, part: str = "metrics") -> dict[int, float]:
    """``key`` of each result's ``part``, by the result's seed."""
    return {int(r["hparams"]["seed"]): float(r[part][key]) for r in results}


def compared(a: list[Result], b: list[Result], key: str) -> Comparison:
    """Final ``key`` of ``a`` against ``b`` by the report's test: a paired t-test over the seeds
    both ran, else Welch's t-test."""
    return compare(by_seed(a, key), by_seed(b, key))


def differ(comparison: Comparison) -> bool:
    """Whether the test tells the two apart at ``ALPHA``."""
    return comparison.p is not None and comparison.p < ALPHA


def how_tested(comparison: Comparison) -> str:
    """The test, its n and its p-value: ``paired t, n = 3, p = 0.0412``."""
    c = comparison
    if c.p is None:
        return c.verdict()
    n = f"n = {c.n}" if c.test == "paired t" else f"n = {c.n} vs {c.n_baseline}"
    if c.p == 0:  # no spread in the differences: the test is decided by the mean alone
        return f"{c.test}, {n}, the same difference on every seed"
    return f"{c.test}, {n}, p = {fmt(c.p)}"


def verdict(a: str, b: str, comparison: Comparison) -> str:
    """``a`` (the first of the two compared) against ``b`` in words, with the test."""
    if not differ(comparison):
        return f"not distinguishable ({how_tested(comparison)})"
    higher = a if (comparison.difference or 0.0) > 0 else b
    return f"{higher} higher ({how_tested(comparison)})"


def holds(flags: Sequence[bool]) -> str:
    """A threshold claim's verdict over the seeds run."""
    n = len(flags)
    return (
        f"holds in all {n} runs" if all(flags) else f"**does not hold** ({sum(flags)} of {n} runs)"
    )


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _n(results: list[Result]) -> int:
    return len(results)
