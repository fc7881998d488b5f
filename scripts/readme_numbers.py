"""``python scripts/readme_numbers.py --run|--check``: the README's number blocks, re-run from
the commands shown above them (fcn_research.programs.readme_numbers)."""

import sys

from fcn_research.programs.readme_numbers import main

if __name__ == "__main__":
    sys.exit(main())
