"""fcn-research: study fully connected networks with Lightning and Hydra."""

__version__ = "0.1.0"
