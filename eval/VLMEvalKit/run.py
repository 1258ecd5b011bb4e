#!/usr/bin/env python
"""VLMEvalKit's run loop with Sequential Prune models (``--help`` lists our flags, then VLMEvalKit's).

The front end is the installed package ``SequentialPrune.frontends.vlmevalkit``; see its ``cli`` module.
"""
import sys

from SequentialPrune.frontends.vlmevalkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
