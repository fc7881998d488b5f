"""Instruments: Lightning callbacks, one file each, configured in ``conf/callbacks/``."""

from fcn_research.callbacks.activation_params import ActivationParameters
from fcn_research.callbacks.decision_boundary import DecisionBoundary
from fcn_research.callbacks.function_fit import FunctionFit
from fcn_research.callbacks.gradients import GradientMonitor
from fcn_research.callbacks.hparams import HParamsSummary
from fcn_research.callbacks.jacobian import JacobianSpectrum
from fcn_research.callbacks.layout import ScalarsLayout
from fcn_research.callbacks.neurons import NeuronMonitor
from fcn_research.callbacks.schedule import LogSchedule
from fcn_research.callbacks.sparsity import WeightSparsity
from fcn_research.callbacks.theory import TheoryPredictions

__all__ = [
    "ActivationParameters",
    "DecisionBoundary",
    "FunctionFit",
    "GradientMonitor",
    "HParamsSummary",
    "JacobianSpectrum",
    "LogSchedule",
    "NeuronMonitor",
    "ScalarsLayout",
    "TheoryPredictions",
    "WeightSparsity",
]
