"""Histograms with a range that doubles to follow the data, computed with torch on the device
and written raw to TensorBoard."""

from __future__ import annotations

from typing import Any

import torch
from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary
from torch import Tensor

# Headroom over the first event's largest |value|, so growth during training stays in range.
RANGE_HEADROOM = 1.5
# Most doublings of a range in one event: a diverged value (inf, 1e38) lands in the edge bins
# instead of pushing every finite value into the two centre bins.
MAX_DOUBLINGS = 64


class FixedRangeHistograms:
    """Histograms with ``bins`` equal bins over a symmetric range per tag that doubles to
    follow the data.

    A tag's range starts at ``RANGE_HEADROOM`` times the largest |value| of its first non-zero
    event. When a later event has values beyond it, the range doubles (as often as needed)
    and stays doubled: with an even bin count each new bin is exactly two old ones, so every
    event's bins are unions of the first event's and histograms over steps compare. Counts
    always sum to the number of values (only beyond ``MAX_DOUBLINGS`` do values fall into
    the edge bins). The doubling is decided on the device: no extra host read per event.
    """

    def __init__(self, bins: int = 64) -> None:
        if bins < 2 or bins % 2:
            raise ValueError(f"histogram bins must be an even number >= 2, got {bins}")
        self.bins = bins
        self.ranges: dict[str, float] = {}

    def compute(self, values: dict[str, Tensor]) -> tuple[Tensor, list[int]]:
        """Per tag, a row on the device ``[r, min, max, sum, sum_sq, counts...]`` (bins span
        ``[-r, r]``), and on the host its value count."""
        rows, meta = [], []
        for tag, value in values.items():
            x = torch.nan_to_num(value.detach().flatten().float())
            r = self.ranges.get(tag)
            if r is None:
                # The first non-zero event sets the range (one host read per tag and run).
                r = float(x.abs().max()) * RANGE_HEADROOM
                if r == 0.0:
                    r = 1.0
                else:
                    self.ranges[tag] = r
            mn, mx = torch.aminmax(x)
            # The fewest doublings that bring every value into [-r, r] (none when they fit).
            doublings = torch.log2(torch.maximum(-mn, mx) / r).ceil().clamp(0, MAX_DOUBLINGS)
            r_now = r * torch.exp2(doublings)
            # Binned in units of the range, so the range can stay on the device.
            y = (x / r_now).clamp(-1.0, 1.0)
            counts = torch.histc(y, bins=self.bins, min=-1.0, max=1.0)
            stats = torch.stack([r_now, mn, mx, x.sum(), x.pow(2).sum()])
            rows.append(torch.cat([stats, counts]))
            meta.append(x.numel())
        return torch.stack(rows), meta

    def write(
        self,
        writer: Any,
        tags: list[str],
        rows: list[list[float]],
        meta: list[int],
        step: int,
    ) -> None:
        """Write host-side rows from ``compute`` as raw TensorBoard histograms, in one record."""
        values = []
        for tag, row, num in zip(tags, rows, meta, strict=True):
            r, mn, mx, total, total_sq = row[:5]
            width = 2 * r / self.bins
            histo = HistogramProto(
                min=mn,
                max=mx,
                num=num,
                sum=total,
                sum_squares=total_sq,
                bucket_limit=[-r + width * (i + 1) for i in range(self.bins)],
                bucket=row[5:],
            )
            values.append(Summary.Value(tag=tag, histo=histo))
        writer._get_file_writer().add_summary(Summary(value=values), step)

    def keep_ranges(self, tags: list[str], rows: list[list[float]]) -> None:
        """Keep each tag's range as ``compute`` widened it, from the rows read to the host."""
        for tag, row in zip(tags, rows, strict=True):
            if tag in self.ranges:
                self.ranges[tag] = row[0]
