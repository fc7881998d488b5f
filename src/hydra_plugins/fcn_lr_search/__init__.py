"""fcn-research's Hydra sweeper that tunes the learning rate per cell (``hparams_search=lr``)."""
