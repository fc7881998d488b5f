"""``--baseline KEY=VALUE``: every other cell against the baseline cell that matches it on all
other axes (``report.stats`` for the tests), as markdown and CSV rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fcn_research.report.epochs import Summary
from fcn_research.report.loading import REPLICATE_AXIS, ReportOptionError, Sweep
from fcn_research.report.stats import ALPHA, POWER, Comparison, compare
from fcn_research.report.tables import cells, fmt
from fcn_research.sweeps import canonical_value

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
    value = canonical_value(key, value)
    if value not in sweep.axes[key]:
        raise ReportOptionError(
            f"--baseline {text}: {key} has no value {value} in this sweep; "
            f"its values: {', '.join(sweep.axes[key])}"
        )
    return key, value


def parse_match_ignore(sweep: Sweep, text: str, key: str) -> list[str]:
    """``lr`` or ``lr,width`` -> the axes a cell and its baseline may differ in, checked."""
    keys = [k.strip() for k in text.split(",") if k.strip()]
    axes = ", ".join(sweep.config_axes) or "none"
    if not keys:
        raise ReportOptionError(f"--match-ignore {text}: expected KEY[,KEY], e.g. lr")
    for k in keys:
        if k == key:
            raise ReportOptionError(
                f"--match-ignore {text}: `{k}` is the --baseline axis itself; name the axes a "
                "cell and its baseline may differ in, e.g. lr"
            )
        if k not in sweep.config_axes:
            raise ReportOptionError(
                f"--match-ignore {text}: `{k}` is not swept; swept axes: {axes}"
            )
    return keys


def comparisons(
    sweep: Sweep,
    metrics: list[str],
    key: str,
    value: str,
    summary: Summary,
    ignore: Sequence[str] = (),
) -> tuple[list[Row], list[str]]:
    """Every configuration whose ``key`` is not ``value`` against its baseline, per metric, and
    a line for each configuration not compared, saying why.

    The baseline cell has ``key=value`` and the configuration's value on every other axis but
    those in ``ignore`` (e.g. ``lr``, where each cell ran at its own tuned learning rate).
    """
    axes = sweep.config_axes
    index = axes.index(key)
    matched = [i for i, a in enumerate(axes) if a != key and a not in ignore]
    rows: list[Row] = []
    skipped: list[str] = []
    for metric in metrics:
        by_config = cells(sweep, metric, summary)
        # Configurations that have jobs: the others are holes of the axes' product.
        present = [c for c, cell in by_config.items() if cell.values or cell.others]
        for config in present:
            if config[index] == value:
                continue
            label = sweep.label(config)
            bases = [
                c for c in present if c[index] == value and all(c[i] == config[i] for i in matched)
            ]
            if len(bases) != 1:
                baselines = [c for c in present if c[index] == value]
                why = _no_baseline(sweep, config, bases, baselines, matched)
                skipped.append(f"{label}: not compared, {why}")
                continue
            cell, reference = by_config[config], by_config[bases[0]]
            if not (cell.values and reference.values):
                which = label if not cell.values else f"its baseline {sweep.label(bases[0])}"
                skipped.append(
                    f"{label}: `{metric}` not compared, {which} has no completed job with a "
                    f"finite value ({cell.text() if not cell.values else reference.text()})"
                )
                continue
            result = compare(
                dict(zip(cell.seeds, cell.values, strict=True)),
                dict(zip(reference.seeds, reference.values, strict=True)),
            )
            rows.append(Row(metric, label, sweep.label(bases[0]), result))
    return rows, list(dict.fromkeys(skipped))


def _no_baseline(
    sweep: Sweep,
    config: tuple[str, ...],
    bases: list[tuple[str, ...]],
    baselines: list[tuple[str, ...]],
    matched: list[int],
) -> str:
    """Why ``config`` has no single baseline cell (``bases``: the baseline cells that match it;
    ``baselines``: every baseline cell that has jobs)."""
    if bases:
        return (
            f"{len(bases)} baseline cells match it ({'; '.join(sweep.label(b) for b in bases)}): "
            "match on more axes (fewer --match-ignore keys)"
        )
    axes = sweep.config_axes
    where = ", ".join(f"{axes[i]}={config[i]}" for i in matched)
    text = f"no baseline cell has {where}" if where else "no baseline cell has jobs"
    # The nearest baseline cell: the axes it differs on are those to ignore, if the user means to.
    differ = min(
        ([axes[i] for i in matched if b[i] != config[i]] for b in baselines), key=len, default=[]
    )
    if differ:
        text += f" (compare across {', '.join(differ)}: --match-ignore {','.join(differ)})"
    return text


def _number(value: float | None) -> str:
    return fmt(value) if value is None or abs(value) != float("inf") else str(value)


def markdown_lines(
    rows: list[Row], baseline: str, skipped: Sequence[str] = (), ignore: Sequence[str] = ()
) -> list[str]:
    """The ``## Compared with <baseline>`` section of summary.md, with the configurations not
    compared and why."""
    lines = ["", f"## Compared with {baseline}", "", METHOD]
    if ignore:
        lines.append(
            f"Cells are matched on every axis but {', '.join(f'`{k}`' for k in ignore)} "
            "(--match-ignore): a cell and its baseline may differ there."
        )
    if skipped:
        lines += ["", "Not compared:", "", *(f"- {line}" for line in skipped)]
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
