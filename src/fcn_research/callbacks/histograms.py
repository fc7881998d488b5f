"""Histograms with a range that doubles to follow the data, computed with torch on the device
and handed to TensorBoard binned."""

from __future__ import annotations

import torch
from torch import Tensor

from fcn_research.tensorboard_adapter import Histogram

# Headroom over the first event's largest |value|, so growth during training stays in range.
RANGE_HEADROOM = 1.5
# Most doublings of a range in one event: a diverged value (inf, 1e38) lands in the edge bins
# instead of pushing every finite value into the two centre bins.
MAX_DOUBLINGS = 64


class FixedRangeHistograms:
    """Histograms with ``bins`` equal bins over a symmetric range per tag and member that
    doubles to follow the data.

    A tag's range starts at ``RANGE_HEADROOM`` times the largest |value| of its first non-zero
    event. When a later event has values beyond it, the range doubles (as often as needed)
    and stays doubled: with an even bin count each new bin is exactly two old ones, so every
    event's bins are unions of the first event's and histograms over steps compare. Counts
    always sum to the number of values (only beyond ``MAX_DOUBLINGS`` do values fall into
    the edge bins). The doubling is decided on the device: no extra host read per event.
    Values carry a leading member dimension: every member of a stack is binned in the same
    operations, each over its own range.
    """

    def __init__(self, bins: int = 64) -> None:
        if bins < 2 or bins % 2:
            raise ValueError(f"histogram bins must be an even number >= 2, got {bins}")
        self.bins = bins
        # Per tag, one range per member (0.0: not set yet, the member's values were all 0).
        self.ranges: dict[str, list[float]] = {}

    def compute(self, values: dict[str, Tensor]) -> tuple[Tensor, list[int]]:
        """Per tag and member, a row on the device ``[r, min, max, sum, sum_sq, counts...]``
        (bins span ``[-r, r]``), shaped (tags, M, 5 + bins); on the host each tag's value
        count per member."""
        rows, meta = [], []
        for tag, value in values.items():
            x = torch.nan_to_num(value.detach().flatten(1).float())
            members = x.shape[0]
            r = self.ranges.get(tag)
            if r is None or 0.0 in r:
                # The first non-zero event sets the range (one host read per tag and run).
                first = (x.abs().amax(1) * RANGE_HEADROOM).tolist()
                r = [old or new for old, new in zip(r or [0.0] * members, first, strict=True)]
                if any(r):
                    self.ranges[tag] = r
            r_t = torch.tensor([v or 1.0 for v in r], device=x.device)
            mn, mx = torch.aminmax(x, dim=1)
            # The fewest doublings that bring every value into [-r, r] (none when they fit).
            doublings = torch.log2(torch.maximum(-mn, mx) / r_t).ceil().clamp(0, MAX_DOUBLINGS)
            r_now = r_t * torch.exp2(doublings)
            # Binned in units of the range, so the range can stay on the device; the bin of a
            # value as torch.histc finds it, offset by its member so one bincount does all.
            y = (x / r_now[:, None]).clamp(-1.0, 1.0)
            idx = ((y + 1.0) / 2.0 * self.bins).long().clamp(max=self.bins - 1)
            idx += torch.arange(members, device=x.device)[:, None] * self.bins
            counts = torch.bincount(idx.flatten(), minlength=members * self.bins)
            counts = counts.view(members, self.bins).float()
            stats = torch.stack([r_now, mn, mx, x.sum(1), x.pow(2).sum(1)], 1)
            rows.append(torch.cat([stats, counts], 1))
            meta.append(x.shape[1])
        return torch.stack(rows), meta

    def histograms(
        self, tags: list[str], rows: list[list[float]], meta: list[int]
    ) -> dict[str, Histogram]:
        """One member's host-side rows from ``compute`` as histograms binned already, by tag."""
        out = {}
        for tag, row, num in zip(tags, rows, meta, strict=True):
            r, mn, mx, total, total_sq = row[:5]
            width = 2 * r / self.bins
            out[tag] = Histogram(
                min=mn,
                max=mx,
                num=num,
                sum=total,
                sum_squares=total_sq,
                bucket_limit=[-r + width * (i + 1) for i in range(self.bins)],
                bucket=row[5:],
            )
        return out

    def keep_ranges(self, tags: list[str], rows: list[list[list[float]]]) -> None:
        """Keep each tag's ranges as ``compute`` widened them, from the rows read to the host
        (per tag, one row per member)."""
        for tag, member_rows in zip(tags, rows, strict=True):
            if tag in self.ranges:
                self.ranges[tag] = [
                    row[0] if old else 0.0
                    for old, row in zip(self.ranges[tag], member_rows, strict=True)
                ]
