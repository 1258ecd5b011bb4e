"""The repository's commands, one folder per pipeline: ``bench/`` (the benchmark's parts; its CLI is
``benchmark.py``), ``tiny/`` (the tiny models: scenes, checkpoints, training, study, LMUData benchmarks) and
``gpu/`` (the one-command GPU check, run through ``gpu_check.sh``).

Not an installed package: run the entry files as ``python scripts/...`` from anywhere (each puts the repository
root on ``sys.path`` itself); the tests import them as ``scripts.*`` from the repository root.
"""
