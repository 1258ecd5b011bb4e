"""Scores computed inside sdpa/eager equal eager attention weights (last row, mean over heads)."""
import pytest
import torch

from SequentialPrune import PruneConfig, apply_pruning
from SequentialPrune.attention_hooks import last_token_scores
from tiny_models import FAMILIES, build_model, make_inputs

pytestmark = pytest.mark.core  # also run on the oldest supported transformers in CI


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("batch", [1, 2])
def test_scores_equal_eager_attention_weights(family, attn, batch):
    model = build_model(family, attn)
    assert model.config.text_config.num_key_value_heads < model.config.text_config.num_attention_heads  # GQA
    inputs = make_inputs(family, batch=batch, suffixes=[7, 4][:batch])  # batch 2 is left-padded
    # K=1 scores layer 0, which sees the full, unpruned sequence
    with torch.no_grad(), apply_pruning(model, PruneConfig("fastv", 0.5, 1)) as pruner:
        model(**inputs)
    ours = pruner.stats.scores[0]
    ref = eager_last_row(family, attn, inputs).float().mean(dim=1)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() < 1e-6


def eager_last_row(family, attn, inputs, dtype=torch.float32):
    """Layer 0's eager attention weights of the last query (B, H, L), the vision tower as in the pruned run."""
    eager = build_model(family, attn, dtype=dtype)
    eager.set_attn_implementation({"text_config": "eager"})
    with torch.no_grad():
        return eager(**inputs, output_attentions=True).attentions[0][:, :, -1, :]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_model_precision_scores_are_bitwise_eager_weights(family, attn, dtype):
    """score_dtype='model': exactly what the original code ranked, the eager weights in the model's dtype
    averaged over heads in that dtype, with GQA and left padding."""
    model = build_model(family, attn, dtype=dtype)
    inputs = {k: v.to(dtype) if v.is_floating_point() else v
              for k, v in make_inputs(family, batch=2, suffixes=[7, 4]).items()}
    with torch.no_grad(), apply_pruning(model, PruneConfig("fastv", 0.5, 1, score_dtype="model")) as pruner:
        model(**inputs)
    ours = pruner.stats.scores[0]
    ref = eager_last_row(family, attn, inputs, dtype).mean(dim=1)
    assert ours.dtype == dtype and torch.equal(ours, ref)
    # and they differ from float32 ranking values: the precision is really the model's
    with torch.no_grad(), apply_pruning(model, PruneConfig("fastv", 0.5, 1)) as p32:
        model(**inputs)
    assert p32.stats.scores[0].dtype == torch.float32 and not torch.equal(p32.stats.scores[0], ours.float())


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float", "flash2d"])
def test_score_function_handles_every_mask_form(mask_kind):
    g = torch.Generator().manual_seed(0)
    b, hq, hkv, L, d = 2, 8, 2, 9, 16
    q, k = torch.randn(b, hq, L, d, generator=g), torch.randn(b, hkv, L, d, generator=g)
    valid = torch.ones(b, L, dtype=torch.bool)
    valid[1, :3] = False  # left padding on row 1
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    allowed = causal[None, None] & valid[:, None, None, :]
    mask = {"none": None, "bool": allowed,
            "float": torch.zeros(b, 1, L, L).masked_fill(~allowed, torch.finfo(torch.float32).min),
            "flash2d": valid.long()}[mask_kind]
    if mask_kind == "none":
        valid[:] = True
    s = last_token_scores(q, k, mask, scaling=d ** -0.5)
    # reference: repeat K per query head, plain softmax over allowed keys
    kk = k.repeat_interleave(hq // hkv, dim=1)
    logits = (q[:, :, -1:] @ kk.transpose(-1, -2)).squeeze(2) * d ** -0.5
    logits = logits.masked_fill(~valid[:, None, :], float("-inf"))
    ref = logits.softmax(-1).mean(1)
    assert torch.allclose(s, ref, atol=1e-6)
    if mask_kind != "none":
        assert s[1, :3].abs().max() == 0  # padding gets no score
