"""fcn-research's Hydra launcher: a sweep's jobs trained as stacks (``launcher=stacked``)."""
