"""``python scripts/experiments.py [--run] <sweeps dir>``: the experiments' numbers as
docs/experiments.md (fcn_research.programs.experiments)."""

import sys

from fcn_research.programs.experiments import main

if __name__ == "__main__":
    sys.exit(main())
