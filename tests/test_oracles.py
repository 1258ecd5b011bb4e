"""The correctness oracles: ratio 0 is bit-identical, pruning equals the masked reference.

Every registered method runs here, on every supported family, with sdpa and eager.
"""
import pytest
import torch

from oracle import masked_reference
from SequentialPrune import METHODS, PruneConfig, apply_pruning
from tiny_models import FAMILIES, IMAGE_ID, VIDEO_ID, build_model, make_inputs

pytestmark = pytest.mark.core  # also run on the oldest supported transformers in CI

ATTNS = ("sdpa", "eager")
PRUNING_METHODS = [m for m in METHODS if m != "none"]
NEW = 8


def greedy(model, inputs, **kw):
    out = model.generate(**inputs, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                         output_logits=True, return_dict_in_generate=True, **kw)
    return out.sequences, torch.stack(out.logits, 1)


def random_reference_scorer(seed):
    """The reference's twin of the engine's random scorer: same stream, over present tokens."""
    state = {}

    def score(layer, present):
        if "gen" not in state or layer == min(state["layers"]):
            state["gen"] = torch.Generator().manual_seed(seed)
        b = present.shape[0]
        n = int(present[0].sum())
        full = torch.full(present.shape, float("-inf"))
        full[present] = torch.rand(b, n, generator=state["gen"]).reshape(-1)
        return full
    return score, state


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("method", ["none", "fastv", "sequential"])
def test_ratio_zero_is_bit_identical(family, attn, method):
    model = build_model(family, attn)
    inputs = make_inputs(family)
    with torch.no_grad():
        ref_logits = model(**inputs).logits
        ref_seq, ref_step_logits = greedy(model, inputs)
        with apply_pruning(model, PruneConfig(method, 0.0, 2)) as pruner:
            logits = model(**inputs).logits
            seq, step_logits = greedy(model, inputs)
    assert torch.equal(logits, ref_logits)
    assert torch.equal(seq, ref_seq) and torch.equal(step_logits, ref_step_logits)
    n = pruner.stats.n_image_tokens
    assert n > 0 and pruner.stats.image_tokens_per_layer == [n] * 12


def run_against_reference(family, attn, cfg, n_images=1, batch=1):
    model = build_model(family, attn)
    inputs = make_inputs(family, n_images=n_images, batch=batch)
    with torch.no_grad():
        with apply_pruning(model, cfg) as pruner:
            last = model(**inputs).logits[:, -1]
            seq, step_logits = greedy(model, inputs)
        n = pruner.stats.n_image_tokens
        plan = cfg.plan(n)
        scorer = None
        if cfg.scorer_name == "random":
            scorer, state = random_reference_scorer(cfg.seed)
            state["layers"] = list(plan)
        with masked_reference(model, plan, [IMAGE_ID, VIDEO_ID], scorer) as ref:
            ref_last = model(**inputs).logits[:, -1]
            ref_kept = dict(ref.kept_image_indices)
            ref_seq, ref_step_logits = greedy(model, inputs)
    return pruner, plan, (last, seq, step_logits), (ref_last, ref_kept, ref_seq, ref_step_logits)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("method", PRUNING_METHODS)
def test_pruned_equals_masked_reference(family, attn, method):
    cfg = PruneConfig(method, 0.75, 2, seed=3)
    pruner, plan, (last, seq, step_logits), (ref_last, ref_kept, ref_seq, ref_step_logits) = \
        run_against_reference(family, attn, cfg)
    assert plan, "the setting must prune something"
    # the same image tokens were chosen, layer by layer
    assert set(pruner.stats.kept_image_indices) == set(ref_kept) == set(plan)
    for layer, kept in ref_kept.items():
        assert torch.equal(pruner.stats.kept_image_indices[layer], kept), f"layer {layer}"
    assert (last - ref_last).abs().max().item() < 1e-5
    # cached decoding on the pruned cache equals the reference's masked decoding
    assert torch.equal(seq, ref_seq)
    assert (step_logits - ref_step_logits).abs().max().item() < 1e-4


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_reference_holds_for_several_images_and_other_settings(family):
    for cfg in (PruneConfig("sequential", 0.9, 2), PruneConfig("fastv", 0.5, 3),
                PruneConfig("sequential", 0.5, 3, step=0.2)):
        pruner, plan, (last, seq, _), (ref_last, ref_kept, ref_seq, _) = \
            run_against_reference(family, "sdpa", cfg, n_images=2)
        assert pruner.stats.n_image_tokens == 2 * (64 if family == "llava" else 16)
        for layer, kept in ref_kept.items():
            assert torch.equal(pruner.stats.kept_image_indices[layer], kept)
        assert (last - ref_last).abs().max().item() < 1e-5
        assert torch.equal(seq, ref_seq)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_recompute_mode_equals_reference_without_cache(family):
    cfg = PruneConfig("sequential", 0.75, 2, cache_mode="recompute")
    model = build_model(family, "sdpa")
    inputs = make_inputs(family)
    with torch.no_grad():
        with apply_pruning(model, cfg) as pruner:
            seq, logits = greedy(model, inputs, use_cache=False)
            with pytest.raises(ValueError, match="use_cache=False"):
                model.generate(**inputs, max_new_tokens=2)
        assert pruner.stats.prefills == NEW  # one full re-selection per generated token
        with masked_reference(model, cfg.plan(pruner.stats.n_image_tokens), [IMAGE_ID]):
            ref_seq, ref_logits = greedy(model, inputs, use_cache=False)
    assert torch.equal(seq, ref_seq)
    assert (logits - ref_logits).abs().max().item() < 1e-4


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_video_tokens_are_pruned_like_image_tokens(family):
    from tiny_models import make_video_inputs
    model = build_model(family)
    inputs = make_video_inputs(family)
    cfg = PruneConfig("sequential", 0.75, 2)
    with torch.no_grad():
        with apply_pruning(model, cfg) as pruner:
            last = model(**inputs).logits[:, -1]
        assert pruner.stats.image_tokens_per_layer == cfg.tokens_per_layer(32, 12)
        with masked_reference(model, cfg.plan(32), [IMAGE_ID, VIDEO_ID]) as ref:
            ref_last = model(**inputs).logits[:, -1]
    for layer, kept in ref.kept_image_indices.items():
        assert torch.equal(pruner.stats.kept_image_indices[layer], kept)
    assert (last - ref_last).abs().max().item() < 1e-5
