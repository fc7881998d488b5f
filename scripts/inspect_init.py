"""Per-layer table of a network at init: ``python scripts/inspect_init.py [overrides]``."""

from fcn_research.inspection import main

if __name__ == "__main__":
    main()
