#!/usr/bin/env python
"""MileBench scoring of one dataset, with the original's command line
(``--data-dir --dataset --result-dir [--adv]``); see ``SequentialPrune.frontends.milebench.scoring``."""
import sys

from SequentialPrune.frontends.milebench.scoring import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
