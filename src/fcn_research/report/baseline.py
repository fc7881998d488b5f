"""``--baseline KEY=VALUE``: every other cell against the baseline cell that matches it on all
other axes (``report.stats`` for the tests), as markdown and CSV rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fcn_research.report.epochs import Summary
from fcn_research.report.loading import REPLICATE_AXIS, ReportOptionError, Sweep, _canonical
from fcn_research.report.stats import ALPHA, POWER, Comparison, compare
from fcn_research.report.tables import cells, fmt

METHOD = (
    "Each cell is compared with the baseline cell that matches it on every other axis: a "
    f"paired t-test on the per-seed differences when both completed the same `{REPLICATE_AXIS}`s "
    "(effect size Cohen's d_z = mean difference / std of the differences), else Welch's "
    "t-test (Cohen's d = mean difference / pooled std); two-sided, alpha = "
    f"{ALPHA}. *Seeds for {POWER:.0%} power*: seeds per cell at which that test would detect "
    "a difference of the observed effect size with 80 % probability (exact noncentral t; it "
    "takes the observed effect as the true one, so read it as an order of magnitude)."
)


@dataclass
class Row:
    """One comparison: the metric, the two configurations and the test's outcome."""

    metric: str
    label: str
    baseline: str
    result: Comparison


def parse_baseline(sweep: Sweep, text: str) -> tuple[str, str]:
    """``activation=relu`` -> (axis, canonical value), checked against the sweep's axes."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    axes = ", ".join(sweep.config_axes) or "none"
    if not sep or not key or not value:
        raise ReportOptionError(f"--baseline {text}: expected KEY=VALUE, e.g. activation=relu")
    if key == REPLICATE_AXIS:
        raise ReportOptionError(
            f"--baseline {text}: `{REPLICATE_AXIS}` is the replicate axis that cells average "
            f"over; choose one of the swept axes: {axes}"
        )
    if key not in sweep.config_axes:
        raise ReportOptionError(f"--baseline {text}: `{key}` is not swept; swept axes: {axes}")
    value = _canonical(key, value)
    if value not in sweep.axes[key]:
        raise ReportOptionError(
            f"--baseline {text}: {key} has no value {value} in this sweep; "
            f"its values: {', '.join(sweep.axes[key])}"
        )
    return key, value


def comparisons(
    sweep: Sweep, metrics: list[str], key: str, value: str, summary: Summary
) -> list[Row]:
    """Every configuration whose ``key`` is not ``value`` against its baseline, per metric."""
    index = sweep.config_axes.index(key)
    rows = []
    for metric in metrics:
        by_config = cells(sweep, metric, summary)
        for config in sweep.configs():
            if config[index] == value:
                continue
            base = (*config[:index], value, *config[index + 1 :])
            cell, reference = by_config.get(config), by_config.get(base)
            if cell is None or reference is None or not (cell.values and reference.values):
                continue
            result = compare(
                dict(zip(cell.seeds, cell.values, strict=True)),
                dict(zip(reference.seeds, reference.values, strict=True)),
            )
            rows.append(Row(metric, sweep.label(config), sweep.label(base), result))
    return rows


def _number(value: float | None) -> str:
    return fmt(value) if value is None or abs(value) != float("inf") else str(value)


def markdown_lines(rows: list[Row], baseline: str) -> list[str]:
    """The ``## Compared with <baseline>`` section of summary.md."""
    lines = ["", f"## Compared with {baseline}", "", METHOD]
    if not rows:
        return [*lines, "", "No cell has a completed baseline cell to compare with."]
    for metric in dict.fromkeys(r.metric for r in rows):
        lines += [
            "",
            f"### {metric}",
            "",
            "| configuration | baseline | difference | test | p | effect size | verdict "
            f"| seeds for {POWER:.0%} power |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in rows if r.metric == metric):
            c = r.result
            effect = f"{c.effect_name} = {_number(c.effect)}" if c.effect is not None else "–"
            p = f"{c.p:.3g}" if c.p is not None else "–"
            lines.append(
                f"| {r.label} | {r.baseline} | {_number(c.difference)} | {c.test or '–'} | {p} "
                f"| {effect} | {c.verdict()} | {c.needed_text()} |"
            )
    return lines


def csv_rows(rows: list[Row]) -> list[dict[str, Any]]:
    """One CSV row per comparison (``comparisons.csv``)."""
    return [
        {
            "metric": r.metric,
            "configuration": r.label,
            "baseline": r.baseline,
            "test": r.result.test,
            "n": r.result.n,
            "n_baseline": r.result.n_baseline,
            "difference": r.result.difference,
            "p": r.result.p,
            "effect_size": r.result.effect_name,
            "effect": r.result.effect,
            "verdict": r.result.verdict(),
            f"seeds_for_{round(POWER * 100)}pct_power": r.result.needed_text(),
        }
        for r in rows
    ]
