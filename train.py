"""Entry point: ``python train.py [overrides]``, ``python train.py -m key=a,b`` for a sweep."""

from fcn_research.cli import main

if __name__ == "__main__":
    main()
