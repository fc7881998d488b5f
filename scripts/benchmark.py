"""Benchmark: plain PyTorch loop vs the template with and without instruments (prints ratios)."""

from fcn_research.programs.benchmark import main

if __name__ == "__main__":
    main()
