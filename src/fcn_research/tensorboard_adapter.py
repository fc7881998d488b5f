"""What only TensorBoard shows (histograms, images, the HParams dashboard, Custom Scalars) and
the one-record scalar write: the library's one place that speaks to TensorBoard's writer.

Instruments log scalars through every logger of a run (``Logger.log_metrics``); what other
loggers cannot take goes through the functions here, to the run's TensorBoard writer when it
has one, and is skipped otherwise. The writer is torch's ``SummaryWriter``
(``TensorBoardLogger.experiment``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries


def writer_of(loggers: Sequence[Logger]) -> SummaryWriter | None:
    """The TensorBoard writer among ``loggers`` (one member's logger set), or None."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def _add(writer: SummaryWriter, summary: Summary, step: int | None = None) -> None:
    # The SummaryWriter's own event-file writer: the public add_* methods write one tag per
    # record and cannot write a histogram binned already or an edited HParams summary. A
    # closed writer (Lightning's finalize closes it) reopens here, as its add_* methods do.
    writer._get_file_writer().add_summary(summary, step)


def write_scalars(writer: SummaryWriter, values: Mapping[str, float], step: int) -> None:
    """An event's scalars as one record, as ``add_scalar`` would write each (float32
    ``simple_value``): one write for all tags."""
    _add(
        writer,
        Summary(value=[Summary.Value(tag=t, simple_value=v) for t, v in values.items()]),
        step,
    )


@dataclass
class Histogram:
    """A histogram binned already: ``bucket[i]`` values up to ``bucket_limit[i]`` (TensorBoard's
    ``HistogramProto``), with the values' count, extremes, sum and sum of squares."""

    min: float
    max: float
    num: int
    sum: float
    sum_squares: float
    bucket_limit: list[float]
    bucket: list[float]


def write_histograms(writer: SummaryWriter, histograms: Mapping[str, Histogram], step: int) -> None:
    """Histograms binned already (``add_histogram`` bins on the host), in one record."""
    values = [
        Summary.Value(tag=tag, histo=HistogramProto(**vars(h))) for tag, h in histograms.items()
    ]
    _add(writer, Summary(value=values), step)


def write_image(writer: SummaryWriter, tag: str, image: Tensor, step: int) -> None:
    """A (3, H, W) image with values in [0, 1]."""
    writer.add_image(tag, image, step)


def write_custom_scalars(writer: SummaryWriter, layout: dict[str, dict[str, list]]) -> None:
    """The Custom Scalars dashboard's layout (``SummaryWriter.add_custom_scalars`` form)."""
    writer.add_custom_scalars(layout)


def write_hparams(
    writer: SummaryWriter,
    hparams: Mapping[str, bool | int | float | str],
    metrics: Mapping[str, float],
    varied: Sequence[str],
) -> None:
    """The run's HParams dashboard entry: its ``hparams``, the tags of ``metrics`` (the
    dashboard shows each run's last scalar of the tag), the ``varied`` ones marked differing."""
    experiment, start, end = hparams_summaries(dict(hparams), dict(metrics))
    mark_varied(experiment, varied)
    for summary in (experiment, start, end):
        _add(writer, summary)


def mark_varied(experiment: Summary, varied: Sequence[str]) -> None:
    """Mark the hparams ``varied`` as differing across runs, in the experiment summary.

    The HParams dashboard ticks the first five hparams by default, differing ones first
    (TensorBoard 2.21 sorts by ``differs``, then by name). TensorBoard sets ``differs`` only
    when it builds the experiment itself; torch's ``hparams()`` leaves it unset, so the five
    would be the alphabetical first (activation, batch_size, data, ...).
    """
    metadata = experiment.value[0].metadata
    data = HParamsPluginData.FromString(metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in varied
    metadata.plugin_data.content = data.SerializeToString()
