"""KV cache contents, batches with left padding, statistics and FLOPs of real runs."""
import pytest
import torch

from SequentialPrune import PruneConfig, apply_pruning, prefill_flops
from tiny_models import FAMILIES, build_model, make_inputs, split_row

pytestmark = pytest.mark.core  # also run on the oldest supported transformers in CI


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("cfg", [PruneConfig("fastv", 0.75, 2), PruneConfig("sequential", 0.75, 2),
                                 PruneConfig("divprune", 0.75), PruneConfig("sequential", 1.0, 3, step=0.25)],
                         ids=["fastv", "sequential", "k0", "ratio1"])
def test_cache_holds_only_kept_tokens(family, cfg):
    model = build_model(family)
    inputs = make_inputs(family)
    with torch.no_grad(), apply_pruning(model, cfg) as pruner:
        out = model(**inputs, use_cache=True)
    n, length = pruner.stats.n_image_tokens, inputs["input_ids"].shape[1]
    expected = cfg.tokens_per_layer(n, 12)
    assert pruner.stats.image_tokens_per_layer == expected
    cache_lengths = [layer.keys.shape[2] for layer in out.past_key_values.layers]
    assert cache_lengths == [length - n + k for k in expected]
    # bytes held match the kept-token arithmetic exactly
    cfgt = model.config.text_config
    per_token = 2 * cfgt.num_key_value_heads * (cfgt.hidden_size // cfgt.num_attention_heads) * 4
    held = sum(l.keys.numel() * 4 + l.values.numel() * 4 for l in out.past_key_values.layers)
    assert held == per_token * sum(cache_lengths)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_left_padded_batch_equals_single_runs(family, attn):
    model = build_model(family, attn)
    inputs = make_inputs(family, batch=2, suffixes=[9, 4])
    assert inputs["attention_mask"][1, 0] == 0  # row 1 is left-padded
    cfg = PruneConfig("sequential", 0.75, 2)
    gen = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    with torch.no_grad(), apply_pruning(model, cfg) as pruner:
        batch_last = model(**inputs).logits[:, -1]
        batch_kept = {k: v.clone() for k, v in pruner.stats.kept_image_indices.items()}
        batch_seq = model.generate(**inputs, **gen)[:, -6:]
        for r in range(2):
            row = split_row(inputs, r, family)
            single_last = model(**row).logits[:, -1]
            assert (single_last - batch_last[r]).abs().max().item() < 1e-5
            for layer, kept in pruner.stats.kept_image_indices.items():
                assert torch.equal(kept[0], batch_kept[layer][r])
            assert torch.equal(model.generate(**row, **gen)[0, -6:], batch_seq[r])


def test_prompt_without_images_runs_unpruned():
    model = build_model("llava")
    ids = torch.randint(3, 140, (1, 12))
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        with apply_pruning(model, PruneConfig("sequential", 0.75, 2)) as pruner:
            out = model(input_ids=ids).logits
            seq = model.generate(input_ids=ids, max_new_tokens=3, do_sample=False)
    assert torch.equal(out, ref) and seq.shape[1] == 15
    assert pruner.stats.n_image_tokens == 0 and pruner.stats.image_tokens_per_layer == [0] * 12


def test_stats_flops_match_formula():
    model = build_model("llava")
    inputs = make_inputs("llava")
    cfg = PruneConfig("fastv", 0.5, 2)
    with torch.no_grad(), apply_pruning(model, cfg) as pruner:
        model(**inputs)
    s = pruner.stats
    length, d, m = inputs["input_ids"].shape[1], 64, 128
    f = lambda n: 4 * n * d * d + 2 * n * n * d + 2 * n * d * m
    assert s.prefill_flops.unpruned == 12 * f(length)
    assert s.prefill_flops.pruned == 2 * f(length) + 10 * f(length - 32)
    assert s.flops("swiglu").pruned == prefill_flops(s.tokens_per_layer, length, d, m, "swiglu").pruned
    assert s.flops("swiglu").pruned > s.prefill_flops.pruned
    assert s.avg_image_tokens_per_layer == (2 * 64 + 10 * 32) / 12
    d_ = s.to_dict()
    assert d_["image_tokens_per_layer"] == s.image_tokens_per_layer and d_["prefill_flops_ratio"] < 1
    with pytest.raises(ValueError, match="unknown FLOPs formula"):
        s.flops("gelu")


def test_remove_restores_the_model_exactly():
    model = build_model("qwen2_vl", "eager")
    inputs = make_inputs("qwen2_vl")
    with torch.no_grad():
        ref = model(**inputs).logits
        pruner = apply_pruning(model, PruneConfig("sequential", 0.75, 2))
        assert model.config.text_config._attn_implementation == "seqprune_eager"
        assert model(**inputs).logits.shape[1] < ref.shape[1]
        pruner.remove()
        assert model.config.text_config._attn_implementation == "eager"
        assert not model._forward_pre_hooks and not any(l._forward_pre_hooks for l in model.model.language_model.layers)
        assert torch.equal(model(**inputs).logits, ref)
        # and it can be applied again with another setting
        with apply_pruning(model, PruneConfig("fastv", 0.5, 3)) as p2:
            model(**inputs)
        assert p2.stats.image_tokens_per_layer[3] == 8


def test_random_scorer_is_reproducible_and_seeded():
    model = build_model("llava")
    inputs = make_inputs("llava")
    kept = []
    for seed in (5, 5, 6):
        with torch.no_grad(), apply_pruning(model, PruneConfig("random", 0.75, 2, seed=seed)) as p:
            model(**inputs)
            model(**inputs)  # a second prefill reseeds: same selection again
        assert p.stats.image_tokens_per_layer == PruneConfig("random", 0.75, 2).tokens_per_layer(64, 12)
        kept.append(p.stats.kept_image_indices[8])
    assert torch.equal(kept[0], kept[1]) and not torch.equal(kept[0], kept[2])


def test_accelerate_offloaded_model_prunes_identically():
    from accelerate import cpu_offload
    model = build_model("llava")
    inputs = make_inputs("llava")
    cfg = PruneConfig("sequential", 0.75, 2)
    with torch.no_grad():
        with apply_pruning(model, cfg):
            ref = model(**inputs).logits
        cpu_offload(model, execution_device="cpu")  # accelerate hooks on every module
        with apply_pruning(model, cfg) as p:
            out = model(**inputs).logits
    assert p.stats.image_tokens_per_layer == cfg.tokens_per_layer(64, 12)
    assert torch.allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize("family", ["llava", "llava_next", "llava_onevision", "internvl"])
@pytest.mark.parametrize("cfg", [PruneConfig("fastv", 0.75, 2), PruneConfig("divprune", 0.75),
                                 PruneConfig("random_oneshot", 0.75, 0, seed=1)], ids=["k2", "divprune_k0", "random_k0"])
@pytest.mark.parametrize("return_dict", [True, False])
def test_decoding_by_hand_equals_generate(family, cfg, return_dict):
    """A prefill and then single-token calls on its cache, without position ids, give generate's logits: at
    K = 0 the model would count positions from layer 0's pruned cache, so the pruner supplies them; with
    return_dict=False the cache is found in the output tuple."""
    model = build_model(family)
    inputs = make_inputs(family)
    with torch.no_grad(), apply_pruning(model, cfg):
        ref = model.generate(**inputs, max_new_tokens=3, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
        out = model(**inputs, use_cache=True, return_dict=return_dict)
        logits, cache = (out.logits, out.past_key_values) if return_dict else (out[0], out[1])
        mask = inputs["attention_mask"]
        for step in range(3):
            assert torch.allclose(logits[:, -1], ref.logits[step], atol=1e-5), step
            token = logits[:, -1].argmax(-1, keepdim=True)
            mask = torch.cat([mask, torch.ones_like(token)], 1)
            out = model(input_ids=token, past_key_values=cache, attention_mask=mask, return_dict=return_dict)
            logits = out.logits if return_dict else out[0]


def test_decoding_by_hand_without_a_mask_at_layer_zero_is_refused_on_mrope():
    model = build_model("qwen2_vl")
    with torch.no_grad(), apply_pruning(model, PruneConfig("divprune", 0.75)):
        out = model(**make_inputs("qwen2_vl"), use_cache=True)
        with pytest.raises(ValueError, match="needs the attention_mask"):
            model(input_ids=torch.tensor([[5]]), past_key_values=out.past_key_values)
