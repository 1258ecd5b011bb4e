#!/usr/bin/env python
"""MileBench generation, scoring and tables with Sequential Prune models (``--help`` lists the flags).

The front end is the installed package ``SequentialPrune.frontends.milebench``; see its ``generate`` module.
"""
import sys

from SequentialPrune.frontends.milebench.generate import main

if __name__ == "__main__":
    sys.exit(main())
