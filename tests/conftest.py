"""Shared test set-up: thread count, the order of parallel work, the per-test time guard.

Import paths come from pyproject's ``pythonpath`` (the repository root and ``tests/support``).
"""
import os
from pathlib import Path

import pytest
import torch

from time_guard import pytest_runtest_makereport  # noqa: F401  (the per-test time guard: a hook)

pytest_plugins = ("pytester",)  # tests/core/test_time_guard.py runs the guard in an inner pytest

# Two cores: oversubscribed OpenMP threads make tiny-model steps ~30x slower.
torch.set_num_threads(int(os.environ.get("SEQPRUNE_TEST_THREADS", "1")))

# Parallel runs (pyproject's addopts: -n auto --dist loadfile --no-loadscope-reorder): each test module runs
# on one pytest-xdist worker, so its module- and session-scoped fixtures (the end-to-end grid, the demo, the
# benchmark CLI) are built once per run, not once per worker. (--dist loadgroup cannot do it per fixture here:
# xdist 3.8 marks a group by rewriting Node._nodeid, which pytest >= 9.2 no longer reads.)
# Modules are handed out in this order, the longest first, so the last ones to start are short.
LONGEST_FIRST = ("test_launch.py", "test_run_identity.py", "test_resume_and_locks.py", "test_demo_tiny.py",
                 "test_oracles.py", "test_failures.py", "test_paper_commands.py", "test_benchmark.py",
                 "test_gpu_check.py", "test_tiny_model.py", "test_paper_inputs.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))  # stable within a module


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
