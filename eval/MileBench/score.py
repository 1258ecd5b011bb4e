#!/usr/bin/env python
"""MileBench tables (result.json, result.csv), with the original's command line (``--result-dir --models``);
see ``SequentialPrune.frontends.milebench.scoring_tables``."""
import sys

from SequentialPrune.frontends.milebench.scoring_tables import main

if __name__ == "__main__":
    sys.exit(main())
