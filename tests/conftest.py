"""Shared test set-up: import paths, thread count, tiny-model fixtures."""
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

# Two cores: oversubscribed OpenMP threads make tiny-model steps ~30x slower.
torch.set_num_threads(int(os.environ.get("SEQPRUNE_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
