"""Fixtures shared by the evaluation tests; module-scoped, so each test module (one pytest-xdist worker) builds
its own once."""
import pytest
from run_rig import Rig, build_rig

from scripts.tiny import checkpoints as tc


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> Rig:
    """Tiny checkpoints (answering, empty, never stopping; a Qwen2-VL) and small and long benchmarks."""
    return build_rig(tmp_path_factory.mktemp("rig"))


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    """A random-weight 2-layer Qwen2-VL checkpoint."""
    return tc.build_tiny_qwen2vl(tmp_path_factory.mktemp("qwen") / "tiny-qwen", num_layers=2)
