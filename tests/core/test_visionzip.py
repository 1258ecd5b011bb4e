"""VisionZip against the slow reference of ``SequentialPrune.testing.reference_vision`` (eager vision attention
with ``output_attentions=True``, keys read off ``k_proj`` / a recording attention function): the kept image
tokens AND the merged embeddings, on LLaVA-1.5 (CLS) and Qwen2-VL (no CLS). The shared oracles
(``test_oracles.py``: ratio 0, the merge oracle, cached decoding; ``test_ragged_batches.py``: batches) run it on
every family."""
import sys

import pytest
import torch
from transformers import AttentionInterface

from SequentialPrune import PruneConfig, apply_pruning
from SequentialPrune.scorers.visionzip import contextual_count
from SequentialPrune.testing.reference_scorers import unit_shares
from SequentialPrune.testing import reference_vision as rv
from tiny_models import IMAGE_ID, build_model, make_inputs, row_inputs
from vision_oracle import _anyres_rows, eager_vision, qwen_scores, reference_features, reference_scores, sharpen

pytestmark = pytest.mark.core

KEYS = "seqprune_test_vision_keys"
_KEYS = []


def _record_keys(module, query, key, value, attention_mask, **kwargs):
    _KEYS.append((module, key.detach()))
    return sys.modules[type(module).__module__].eager_attention_forward(module, query, key, value, attention_mask,
                                                                        **kwargs)


AttentionInterface.register(KEYS, _record_keys)


def pruned_image_embeddings(model, inputs, cfg):
    """Kept image indices, and the embedding entering decoder layer 0 of each kept image token."""
    entering = []
    with torch.no_grad(), apply_pruning(model, cfg) as pruner:
        h = model.model.language_model.layers[0].register_forward_pre_hook(
            lambda m, a, k: entering.append((a[0] if a else k["hidden_states"])[0].clone()), with_kwargs=True)
        model(**inputs)
        h.remove()
    kept = pruner.stats.kept_image_indices[0][0].tolist()
    first = int((inputs["input_ids"][0] == IMAGE_ID).nonzero()[0])
    return kept, {k: entering[0][first + j] for j, k in enumerate(kept)}, pruner


def test_contextual_counts_follow_the_paper_splits():
    assert [contextual_count(k, 0.15625) for k in (192, 128, 64)] == [30, 20, 10]
    assert PruneConfig("visionzip").plan(576) == {0: 192}
    assert [PruneConfig("visionzip", r).plan(576)[0] for r in (0.777, 0.888)] == [128, 64]


@pytest.mark.parametrize("ratio,contextual_ratio", [(0.75, 0.25), (0.5, 0.15625)])
def test_llava_kept_tokens_and_merged_features_equal_the_reference(ratio, contextual_ratio):
    model = build_model("llava", "sdpa")
    sharpen(model)
    inputs = make_inputs("llava")
    cfg = PruneConfig("visionzip", ratio, options={"contextual_ratio": contextual_ratio})
    kept, emb, pruner = pruned_image_embeddings(model, inputs, cfg)
    keep = cfg.plan(64)[0]
    c = contextual_count(keep, contextual_ratio)
    layer = model.model.vision_tower.encoder.layers[-1]
    got_keys = []
    h = layer.self_attn.k_proj.register_forward_hook(lambda m, a, out: got_keys.append(out))
    with torch.no_grad(), eager_vision(model):
        out = model.model.vision_tower(inputs["pixel_values"], output_attentions=True, output_hidden_states=True)
    h.remove()
    attn, hidden = out.attentions[-1][0].double(), out.hidden_states[-1][0]
    heads = attn.shape[0]
    keys = got_keys[0][0].view(hidden.shape[0], heads, -1).transpose(0, 1)  # (H, T, Dh)
    ref_kept, feats = rv.visionzip(attn, keys, hidden, dominant=keep - c, contextual=c)
    rest = [p for p in range(hidden.shape[0]) if p not in ref_kept]
    targets = rv.visionzip_targets(rest, c)
    cls_slot = next(p for p in rest if p not in targets) - 1  # the first free patch slot (token = patch + 1)
    dominant = [p - 1 for p in ref_kept[1:]]
    assert kept == sorted(dominant + [t - 1 for t in targets] + [cls_slot])
    proj = model.model.multi_modal_projector
    with torch.no_grad():
        want = {p - 1: proj(hidden[p]) for p in ref_kept[1:]}
        want[cls_slot] = proj(feats[0].float())
        want.update({t - 1: proj(feats[len(ref_kept) + j].float()) for j, t in enumerate(targets)})
    for k in kept:
        assert torch.allclose(emb[k], want[k], atol=1e-5), k
    assert pruner.stats.merged[0][0].sum().item() == c + 1  # the contextual tokens and the CLS slot


def test_qwen2_vl_kept_tokens_and_merged_features_equal_the_reference():
    """No CLS: dominant tokens by attention received (pooled per 2x2 group); keys and features per LLM token."""
    model = build_model("qwen2_vl", "sdpa")
    sharpen(model)
    inputs = row_inputs("qwen2_vl", images=[(8, 12)])  # 24 LLM tokens
    cfg = PruneConfig("visionzip", 0.5, options={"contextual_ratio": 0.25})
    kept, emb, _ = pruned_image_embeddings(model, inputs, cfg)
    keep = cfg.plan(24)[0]
    c = contextual_count(keep, 0.25)
    grid = inputs["image_grid_thw"]
    with torch.no_grad():
        with eager_vision(model, recorder=True) as calls:
            model.model.get_image_features(inputs["pixel_values"], grid)
            scores = qwen_scores(model, inputs, calls)
        visual = model.model.visual
        orig = model.config.vision_config._attn_implementation
        model.set_attn_implementation({"vision_config": KEYS})
        _KEYS.clear()
        try:
            hidden = visual(inputs["pixel_values"], grid_thw=grid).last_hidden_state  # the merger's input
        finally:
            model.set_attn_implementation({"vision_config": orig})
        key = torch.cat([k[0] for m, k in _KEYS if m is visual.blocks[-1].attn], dim=1)  # (H, seq, Dh)
        metric = key.mean(0).reshape(-1, 4, key.shape[-1]).mean(1)
        per_token = hidden.reshape(-1, 4 * hidden.shape[-1])
        dominant, targets, feats = rv.visionzip_no_cls(scores, metric, per_token, keep - c, c)
        assert kept == sorted(dominant + targets)
        merger = visual.merger
        want = {p: merger(per_token[p].view(4, -1))[0] for p in dominant}
        want.update({t: merger(feats[j].float().view(4, -1))[0] for j, t in enumerate(targets)})
    for k in kept:
        assert torch.allclose(emb[k], want[k], atol=1e-5), k


@pytest.mark.parametrize("scope", ["image", "prompt"])
def test_llava_next_keeps_each_crops_cls_and_never_a_newline(scope):
    """LLaVA-NeXT (the tiny image: a base crop, then one tile whose rows each end in a newline token): dominant
    tokens by each crop's CLS row, one CLS feature per crop (the official keeps one per crop), contextual merging
    by the crops' keys; ``scope="image"`` (the official code's): each crop zips its own share of the budget, its
    CLS in its first free slot; ``"prompt"``: one pool of the image's patch tokens, the CLS features from the
    image's first token on. The newline tokens, which no tower patch made, are neither kept nor merged.
    Re-derived from eager attentions, ``k_proj`` and the hidden states."""
    model = build_model("llava_next", "sdpa")
    sharpen(model)
    inputs = make_inputs("llava_next")
    cfg = PruneConfig("visionzip", 0.6, options={"contextual_ratio": 0.25, "scope": scope})
    kept, emb, pruner = pruned_image_embeddings(model, inputs, cfg)
    layer = model.model.vision_tower.vision_model.encoder.layers[-1] if hasattr(model.model.vision_tower,
                                                                                 "vision_model") else \
        model.model.vision_tower.encoder.layers[-1]
    got_keys = []
    h = layer.self_attn.k_proj.register_forward_hook(lambda m, a, out: got_keys.append(out))
    with torch.no_grad(), eager_vision(model):
        out = model.model.vision_tower(inputs["pixel_values"].flatten(0, 1), output_hidden_states=True)
    h.remove()
    hidden = out.hidden_states[model.config.vision_feature_layer]  # (crops, T, C), CLS at 0
    crops, t, _ = hidden.shape
    heads = model.config.vision_config.num_attention_heads
    keys = got_keys[0].view(crops, t, heads, -1).mean(2)  # head mean, as VisionZip's metric
    side = int((t - 1) ** 0.5)
    scores = reference_scores(model, "llava_next", inputs)[0]  # CLS rows, laid out with newline rows
    feats = reference_features(model, "llava_next", inputs)[0]
    metric = _anyres_rows(keys[:, 1:], side)
    cand = [p for p in range(len(scores)) if not bool(torch.isnan(feats[p]).any())]
    assert len(scores) - len(cand) == side  # one newline per tile row
    keep = cfg.plan(len(scores))[0]
    # the pools: the base crop's side^2 tokens first, then the tile's (the layout of _anyres_rows)
    pools = [cand[:side * side], cand[side * side:]] if scope == "image" else [cand]
    shares = unit_shares([0] * side * side + [1] * side * side, keep) if scope == "image" else {0: keep}
    want_kept, want, cls_slots, n_contextual = [], {}, [], 0
    proj = model.model.multi_modal_projector
    for u, pool in enumerate(pools):
        q = shares[u]
        c = contextual_count(q, 0.25)
        n_cls = 1 if scope == "image" else crops
        dominant, targets, merged = rv.visionzip_no_cls([scores[p] for p in pool], metric[pool], feats[pool],
                                                        q - c - n_cls, c)
        free = [j for j in range(len(pool)) if j not in set(dominant) | set(targets)]
        slots = [pool[j] for j in free[:n_cls]]  # the crop's CLS (pooled: each crop's, base first), first free on
        want_kept += [pool[j] for j in dominant + targets] + slots
        with torch.no_grad():
            want.update({pool[j]: proj(feats[pool[j]]) for j in dominant})
            want.update({slot: proj(hidden[u + i, 0]) for i, slot in enumerate(slots)})
            want.update({pool[t]: proj(merged[j].float()) for j, t in enumerate(targets)})
        cls_slots += slots
        n_contextual += c
    assert kept == sorted(want_kept)
    for k in kept:
        assert torch.allclose(emb[k], want[k], atol=1e-5), k
    assert pruner.stats.merged[0][0].sum().item() == n_contextual + crops


def test_visionzip_runs_before_the_decoder_only():
    with pytest.raises(ValueError, match="one-shot schedule at layer 0"):
        PruneConfig("visionzip", layer=2)
    with pytest.raises(ValueError, match="one-shot schedule at layer 0"):
        PruneConfig("sequential", scorer="visionzip")
    with pytest.raises(ValueError, match="contextual_ratio"):
        PruneConfig("visionzip", options={"contextual_ratio": 1.5})


def test_no_contextual_tokens_keeps_cls_and_dominant_tokens():
    """contextual_ratio 0: the CLS slot and the top patches, no merge (the official code divides by zero)."""
    model = build_model("llava")
    sharpen(model)
    inputs = make_inputs("llava")
    kept, emb, pruner = pruned_image_embeddings(model, inputs, PruneConfig("visionzip", 0.75,
                                                                           options={"contextual_ratio": 0.0}))
    assert len(kept) == 16 and pruner.stats.merged[0][0].sum().item() == 1  # only the CLS slot


def test_llava_two_images_each_zip_their_own_share_with_their_own_cls():
    """LLaVA-1.5 with two images (``scope="image"``, the official code's per-image VisionZip): each image keeps
    half of the budget, merges its own contextual tokens (the count from its share) and holds its own CLS feature,
    in its first free slot; pooled, the images compete and the CLS features go from each image's first token."""
    model = build_model("llava", "sdpa")
    sharpen(model)
    inputs = make_inputs("llava", n_images=2)
    per = 64
    for scope in ("image", "prompt"):
        cfg = PruneConfig("visionzip", 0.75, options={"contextual_ratio": 0.25, "scope": scope})
        kept, emb, pruner = pruned_image_embeddings(model, inputs, cfg)
        merged = pruner.stats.merged[0][0].tolist()
        keep = cfg.plan(2 * per)[0]
        by_image = [[k for k in kept if k // per == i] for i in (0, 1)]
        merged_by_image = [sum(m for k, m in zip(kept, merged) if k // per == i) for i in (0, 1)]
        if scope == "image":
            assert [len(x) for x in by_image] == [keep // 2] * 2
            assert merged_by_image == [contextual_count(keep // 2, 0.25) + 1] * 2  # contextual tokens + its CLS
        else:
            assert sum(merged_by_image) == contextual_count(keep, 0.25) + 2
    assert keep % 2 == 0
