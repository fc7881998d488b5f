"""The mean-field predictions for the run's network, beside what the instruments measure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from torch import Tensor

from fcn_research.callbacks.probe import mlp_of, probe_set, write_members
from fcn_research.initializers import implied_variances
from fcn_research.model import MLP, StackedActivation, StackedMLP
from fcn_research.results import update_result
from fcn_research.theory import NotApplicable, predict


def theory_section(
    model: MLP | StackedMLP, initializer: object, inputs: Tensor, member: int = 0
) -> dict[str, Any]:
    """result.json's ``theory``: the predictions for ``model`` (member ``member`` of a stack)
    as ``initializer`` draws it, on ``inputs`` (the probe set); ``{"not_applicable": why}``
    where the theory does not apply."""
    if initializer is None:
        return {"not_applicable": "no initializer given to the theory instrument"}
    try:
        own = model.member_activations(member) if isinstance(model, StackedMLP) else None
        variances = implied_variances(initializer, model, own)
        activations = model.activations if own is None else own
        activation = activations[0] if len(activations) else None
        if activation is None:
            raise NotApplicable("depth 1 (a perceptron) has no hidden layer to propagate through")
        return predict(activation, variances, model.widths, inputs.cpu()).as_dict()
    except NotApplicable as err:
        return {"not_applicable": str(err)}
    except Exception as err:  # a prediction that fails must not fail the training run
        return {"not_applicable": f"the theory failed on this network: {type(err).__name__}: {err}"}


class TheoryPredictions(L.Callback):
    """Writes the mean-field predictions (``fcn_research.theory``) for the run's network into
    result.json's ``theory`` and, at step 0, to every logger as ``theory/<key>`` scalars
    (``theory/chi1``, ``theory/activations/std/layer_XX``, ...), beside the instruments' own
    step-0 values of the same names. Where the theory does not apply (a pooling activation,
    the notebook's single-layer initializers, depth 1), ``theory`` holds ``not_applicable``
    and the reason, and nothing is logged.

    The predictions depend on the configuration and the probe inputs, not on the weights, so
    a resumed run recomputes the same section.

    Args:
        initializer: the run's initializer scheme (``${initializer}`` in the config).
        job_dir: the job's directory, where result.json lies.
        probe_size: number of training samples whose input norms the prediction uses
            (the neuron instrument's probe set by default).
    """

    def __init__(self, initializer: object, job_dir: str | Path, probe_size: int = 512) -> None:
        if probe_size < 1:
            raise ValueError(f"probe_size must be >= 1, got {probe_size}")
        self.initializer = initializer
        self.job_dir = Path(job_dir)
        self.probe_size = probe_size
        # A stack's members, each with its own initializer and job dir (``set_members``).
        self.members: list[tuple[object, Path]] = []

    def set_members(self, members: Sequence[tuple[object, Path]]) -> None:
        """Predict for each member of a stack: ``(initializer, job_dir)`` per member, in member
        order; called by the fit before training."""
        self.members = list(members)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        x, _ = probe_set(trainer, self.probe_size)
        model = mlp_of(pl_module)
        members = self.members or [(self.initializer, self.job_dir)]
        sections: dict[str, dict[str, Any]] = {}  # members drawn alike share a prediction
        scalars: list[dict[str, float]] = []
        # An activation with parameters has one copy per member: members share a prediction
        # where their copies hold the same values too.
        states = [a.member_state() for a in model.activations if isinstance(a, StackedActivation)]
        for m, (initializer, job_dir) in enumerate(members):
            key = repr(vars(initializer)) if initializer is not None else ""
            own = [{k: v[m].tolist() for k, v in state.items()} for state in states]
            key = f"{type(initializer).__name__}:{key}:{own!r}"
            if key not in sections:
                sections[key] = theory_section(model, initializer, x, m)
            section = sections[key]
            update_result(job_dir, theory=section)
            scalars.append(
                {
                    f"theory/{k}": float(v)
                    for k, v in section.items()
                    if isinstance(v, float | int) and math.isfinite(v)
                }
            )
        if trainer.global_step == 0 and len(scalars) == model.members:
            write_members(trainer, scalars, 0)
