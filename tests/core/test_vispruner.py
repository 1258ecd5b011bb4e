"""VisPruner against ``reference_vision.vispruner`` on the cases where the official loop raises (an odd residual,
a round dropping more than the even-place half), with eager ``output_attentions`` scores and the tower's own
pre-projector features. The shared oracles (``test_oracles.py``) run it on every family against the same
reference through the masked reference."""
import pytest
import torch

from SequentialPrune import PruneConfig, apply_pruning
from SequentialPrune.testing import reference_vision as rv
from tiny_models import build_model, make_inputs
from vision_oracle import reference_features, reference_scores, sharpen

pytestmark = pytest.mark.core


@pytest.mark.parametrize("family,ratio", [("llava", 0.765), ("qwen2_vl", 0.75)], ids=["odd_residual", "wide_round"])
def test_default_rounds_equal_the_reference_where_the_official_loop_raises(family, ratio):
    model = build_model(family)
    sharpen(model)
    inputs = make_inputs(family)
    cfg = PruneConfig("vispruner", ratio)
    n = int(torch.isin(inputs["input_ids"], torch.tensor([150])).sum())
    keep = cfg.plan(n)[0]
    residual = n - int(keep * 0.5)
    # LLaVA: 64 tokens, keep 15: a residual of 57 (odd); Qwen2-VL: 16 tokens, keep 4: a first round of 8 > 7 evens
    assert residual % 2 == 1 if family == "llava" else min(8, residual - (keep - keep // 2)) > (residual + 1) // 2
    with torch.no_grad(), apply_pruning(model, cfg) as pruner:
        model(**inputs)
    want = rv.vispruner(reference_scores(model, family, inputs)[0], reference_features(model, family, inputs)[0], keep)
    assert pruner.stats.kept_image_indices[0][0].tolist() == want


def test_options_are_checked():
    with pytest.raises(ValueError, match="important_ratio"):
        PruneConfig("vispruner", options={"important_ratio": -0.1})
    with pytest.raises(ValueError, match="per_round"):
        PruneConfig("vispruner", options={"per_round": 0})
    assert PruneConfig("vispruner").plan(576) == {0: 128}
