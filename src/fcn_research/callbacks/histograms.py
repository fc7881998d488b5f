"""Fixed-bin histograms computed with torch on the device and written raw to TensorBoard."""

from __future__ import annotations

from typing import Any

import torch
from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary
from torch import Tensor

# Headroom over the first event's largest |value|, so growth during training stays in range.
RANGE_HEADROOM = 1.5


class FixedRangeHistograms:
    """Histograms with ``bins`` equal bins over a range fixed per tag at its first event.

    The range is symmetric, ``RANGE_HEADROOM`` times the largest |value| the tag had at its
    first non-zero event, so the same bins describe every step and histograms over steps
    compare. Values outside the range fall into the edge bins: counts always sum to the
    number of values.
    """

    def __init__(self, bins: int = 64) -> None:
        if bins < 2:
            raise ValueError(f"histogram bins must be >= 2, got {bins}")
        self.bins = bins
        self.ranges: dict[str, Tensor] = {}

    def compute(self, values: dict[str, Tensor]) -> Tensor:
        """One row per tag on the device: [min, max, num, sum, sum_sq, lo, hi, counts...]."""
        rows = []
        for tag, value in values.items():
            x = torch.nan_to_num(value.detach().flatten().float())
            if tag not in self.ranges:
                # The first event fixes the range (one host read per tag, once per run).
                r = float(x.abs().max()) * RANGE_HEADROOM
                if r == 0.0:
                    r = 1.0
                else:
                    self.ranges[tag] = torch.tensor([-r, r])
            else:
                r = float(self.ranges[tag][1])
            counts = torch.histc(x.clamp(-r, r), bins=self.bins, min=-r, max=r)
            head = torch.stack(
                [
                    x.min(),
                    x.max(),
                    torch.tensor(float(x.numel()), device=x.device),
                    x.sum(),
                    x.pow(2).sum(),
                    torch.tensor(-r, device=x.device),
                    torch.tensor(r, device=x.device),
                ]
            )
            rows.append(torch.cat([head, counts]))
        return torch.stack(rows)

    def write(self, writer: Any, tags: list[str], rows: list[list[float]], step: int) -> None:
        """Write host-side rows from ``compute`` as raw TensorBoard histograms, in one record."""
        values = []
        for tag, row in zip(tags, rows, strict=True):
            mn, mx, num, total, total_sq, lo, hi = row[:7]
            width = (hi - lo) / self.bins
            histo = HistogramProto(
                min=mn,
                max=mx,
                num=num,
                sum=total,
                sum_squares=total_sq,
                bucket_limit=[lo + width * (i + 1) for i in range(self.bins)],
                bucket=row[7:],
            )
            values.append(Summary.Value(tag=tag, histo=histo))
        writer._get_file_writer().add_summary(Summary(value=values), step)
