"""HiPrune against ``reference_vision.hiprune`` (the official single-image rule: clamped buffers) on towers deep
enough for the object layer to differ from the deep one: LLaVA-1.5 (CLIP, CLS) and Qwen2-VL (no CLS), with eager
``output_attentions`` weights (a recording attention function for Qwen). The shared oracles (``test_oracles.py``)
run it on every family through ``reference_vision.hiprune_segments``."""
import pytest
import torch
import transformers

from SequentialPrune import PruneConfig, apply_pruning
from SequentialPrune.scorers.hiprune import HiPrune
from SequentialPrune.testing import reference_vision as rv
from tiny_models import make_inputs, row_inputs, tiny_config
from vision_oracle import eager_vision, qwen_scores, sharpen

pytestmark = pytest.mark.core


def deeper(family, depth):
    torch.manual_seed(0)
    cfg = tiny_config(family)
    if family == "llava":
        cfg.vision_config.num_hidden_layers = depth
    else:
        cfg.vision_config.depth = depth
    cfg._attn_implementation = "sdpa"
    model = getattr(transformers, {"llava": "LlavaForConditionalGeneration",
                                   "qwen2_vl": "Qwen2VLForConditionalGeneration"}[family])(cfg).eval()
    model.generation_config.pad_token_id = 0
    sharpen(model)
    return model


@pytest.mark.parametrize("ratio", [0.5, 0.8])
def test_llava_equals_the_reference(ratio):
    model = deeper("llava", 3)
    inputs = make_inputs("llava")
    cfg = PruneConfig("hiprune", ratio, options={"alpha": 0.5, "object_layer": 1})
    with torch.no_grad():
        with apply_pruning(model, cfg) as pruner:
            model(**inputs)
        with eager_vision(model):
            attn = model.model.vision_tower(inputs["pixel_values"], output_attentions=True).attentions
    shallow = rv.received_attention(attn[0][0].double(), drop_cls=True)
    deep = rv.received_attention(attn[-1][0].double(), drop_cls=True)
    keep = cfg.plan(64)[0]
    want = rv.hiprune(shallow, deep, keep, width=8, alpha=0.5)
    assert round(keep * 0.5 / 5) >= 1 and pruner.stats.kept_image_indices[0][0].tolist() == want


def test_qwen2_vl_equals_the_reference():
    model = deeper("qwen2_vl", 2)
    inputs = row_inputs("qwen2_vl", images=[(8, 12)])  # a 4x6 grid of LLM tokens
    cfg = PruneConfig("hiprune", 0.5, options={"alpha": 1.0, "object_layer": 1})
    with torch.no_grad():
        with apply_pruning(model, cfg) as pruner:
            model(**inputs)
        with eager_vision(model, recorder=True) as calls:
            model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
            shallow, deep = qwen_scores(model, inputs, calls, 0), qwen_scores(model, inputs, calls, -1)
    assert shallow != deep
    want = rv.hiprune(shallow, deep, cfg.plan(24)[0], width=6, alpha=1.0)
    assert pruner.stats.kept_image_indices[0][0].tolist() == want


def test_object_layer_defaults_and_checks():
    assert HiPrune().extra_vision_layers(24) == (8,)  # the official layer 9 of CLIP-L
    assert HiPrune().extra_vision_layers(1) == (0,) and HiPrune(object_layer=16).extra_vision_layers(32) == (15,)
    # towers without CLS: the official Qwen2.5-VL layer 16 of its 32 blocks (HIPRUNE_OBJECT_LAYER there)
    assert HiPrune().extra_vision_layers(32, has_cls=False) == (15,)
    assert HiPrune().extra_vision_layers(32, has_cls=True) == (11,)
    with pytest.raises(ValueError, match="object_layer"):
        PruneConfig("hiprune", options={"object_layer": 0})
    model = deeper("llava", 2)
    with pytest.raises(ValueError, match="vision layer 5 is outside"):
        apply_pruning(model, PruneConfig("hiprune", options={"object_layer": 5}))
    assert model.config.vision_config._attn_implementation == "sdpa"  # a refused capture leaves the tower as it was
