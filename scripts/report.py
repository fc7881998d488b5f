"""``python scripts/report.py <sweep_dir>``: a sweep's table and figures (fcn_research.report)."""

import sys

from fcn_research.report import main

if __name__ == "__main__":
    sys.exit(main())
