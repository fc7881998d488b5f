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
        self.ranges: dict[str, float] = {}

    def compute(self, values: dict[str, Tensor]) -> tuple[Tensor, list[tuple[int, float]]]:
        """Per tag, a row on the device ``[min, max, sum, sum_sq, counts...]``, and on the host
        its value count and range half-width ``r`` (bins span ``[-r, r]``)."""
        rows, meta = [], []
        for tag, value in values.items():
            x = torch.nan_to_num(value.detach().flatten().float())
            r = self.ranges.get(tag)
            if r is None:
                # The first non-zero event fixes the range (one host read per tag and run).
                r = float(x.abs().max()) * RANGE_HEADROOM
                if r == 0.0:
                    r = 1.0
                else:
                    self.ranges[tag] = r
            counts = torch.histc(x.clamp(-r, r), bins=self.bins, min=-r, max=r)
            mn, mx = torch.aminmax(x)
            rows.append(torch.cat([torch.stack([mn, mx, x.sum(), x.pow(2).sum()]), counts]))
            meta.append((x.numel(), r))
        return torch.stack(rows), meta

    def write(
        self,
        writer: Any,
        tags: list[str],
        rows: list[list[float]],
        meta: list[tuple[int, float]],
        step: int,
    ) -> None:
        """Write host-side rows from ``compute`` as raw TensorBoard histograms, in one record."""
        values = []
        for tag, row, (num, r) in zip(tags, rows, meta, strict=True):
            mn, mx, total, total_sq = row[:4]
            width = 2 * r / self.bins
            histo = HistogramProto(
                min=mn,
                max=mx,
                num=num,
                sum=total,
                sum_squares=total_sq,
                bucket_limit=[-r + width * (i + 1) for i in range(self.bins)],
                bucket=row[4:],
            )
            values.append(Summary.Value(tag=tag, histo=histo))
        writer._get_file_writer().add_summary(Summary(value=values), step)
