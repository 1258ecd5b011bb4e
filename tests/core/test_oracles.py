"""The correctness oracles: ratio 0 is bit-identical, pruning equals the masked reference.

Every registered method runs here, on every supported family, with sdpa and eager.
"""
from dataclasses import replace

import pytest
import torch

from SequentialPrune import METHODS, SCORERS, PruneConfig, apply_pruning
from SequentialPrune.adapters import families
from SequentialPrune.testing.oracle import masked_reference, merge_reference
from SequentialPrune.vision_capture import VisionCapture
from tiny_models import FAMILIES, IMAGE_ID, QWEN, TOKENS, VIDEO_ID, build_model, make_inputs
from vision_oracle import reference_features, reference_scores, sharpen

pytestmark = pytest.mark.core  # also run on the oldest supported transformers in CI

ATTNS = ("sdpa", "eager")
NEW = 8
# One setting per method that fits the tiny 12-layer models; the others use their paper's defaults.
ORACLE_CONFIGS = {
    "fastv": PruneConfig("fastv", 0.75, 2),
    "sequential": PruneConfig("sequential", 0.75, 2),
    "random": PruneConfig("random", 0.75, 2, seed=3),
    "random_oneshot": PruneConfig("random_oneshot", 0.6, 0, seed=3),
    "pdrop": PruneConfig("pdrop", 0.875, options={"stages": (2, 5, 8)}),
    "dart": PruneConfig("dart", 0.7, 2, options={"image_pivots": 2, "text_pivots": 2}),
    "divprune": PruneConfig("divprune", 0.8),
    "spatial": PruneConfig("spatial", 0.75),
    "fastervlm": PruneConfig("fastervlm", 0.75),
    "visionzip": PruneConfig("visionzip", 0.75, options={"contextual_ratio": 0.25}),
    "vispruner": PruneConfig("vispruner", 0.6, options={"per_round": 2}),
    "hiprune": PruneConfig("hiprune", 0.5, options={"alpha": 0.5}),
    "cdpruner": PruneConfig("cdpruner", 0.7),
    "custom": PruneConfig("custom", options={"schedule": "1:0.7,4:0.4,6:0.2"}),
}
assert set(ORACLE_CONFIGS) == set(METHODS) - {"none"}, "every method must be in the oracle"
# Merging methods rewrite kept slots, which the masked reference cannot express: the merge oracle checks them.
MERGING = sorted(m for m, c in ORACLE_CONFIGS.items() if SCORERS[c.scorer_name].merges)
MASKED = sorted(set(ORACLE_CONFIGS) - set(MERGING))


def supported(method, family) -> bool:
    """Whether ``method`` runs on ``family`` (a scorer of the tower's keys or features needs its mapping)."""
    needs = SCORERS[ORACLE_CONFIGS[method].scorer_name].needs_vision if method in ORACLE_CONFIGS else False
    return not isinstance(needs, frozenset) or families()[family].vision.merge is not None


def runnable(methods, fams=FAMILIES):
    return [(f, m) for f in fams for m in methods if supported(m, f)]


# Eager attention runs on two families (its hooks and masks are family-independent; the left-padded batch oracle
# below runs eager on four more): this bounds the suite's time. FasterVLM runs eager everywhere, which exercises
# the vision capture under eager on every tower. The later vision-side methods run R = 0 on two families only.
LATER_VISION = ("visionzip", "vispruner", "hiprune", "cdpruner")
EAGER_FAMILIES = ("llava", "qwen2_5_vl")


def with_attns(cases, eager_everywhere=("fastervlm",)):
    return [(f, m, a) for f, m in cases for a in ATTNS
            if a == "sdpa" or m in eager_everywhere or f in EAGER_FAMILIES]


def greedy(model, inputs, **kw):
    out = model.generate(**inputs, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                         output_logits=True, return_dict_in_generate=True, **kw)
    return out.sequences, torch.stack(out.logits, 1)


def image_grids(family: str, n_images: int = 1):
    """The test's own description of each family's image token grids (rows, cols, image indices)."""
    per = TOKENS[family]
    if family == "llava":
        shapes = [(8, 8)]
    elif family in ("llava_next", "llava_onevision"):
        shapes = [(4, 4), (4, 5)]  # the base image, then the tile map with a newline token ending each row
    elif family == "internvl":
        shapes = [(4, 4), (4, 4)]  # two tiles
    else:
        shapes = [(4, 4)]          # 8x8 patches merged 2x2
    out, start = [], 0
    for _ in range(n_images):
        for h, w in shapes:
            out.append((h, w, list(range(start, start + h * w))))
            start += h * w
    assert start == per * n_images
    return lambda row: out


def image_units(family: str, n_images: int = 1):
    """The vision-encoder input of each prompt image token, from the test's own grids above: one per grid (an
    image; a NeXT / OneVision crop; an InternVL tile), -1 for the newline token ending each tile-map row."""
    unit = {}
    for u, (h, w, cells) in enumerate(image_grids(family, n_images)(0)):
        newlines = family in ("llava_next", "llava_onevision") and w == h + 1
        for j, t in enumerate(cells):
            unit[t] = -1 if newlines and j % w == w - 1 else u
    units = [unit[t] for t in range(len(unit))]
    return lambda row: units


def hiprune_object_layer(model) -> int:
    """HiPrune's default object layer, 0-based, re-derived from the official code's two settings: layer 9 of
    CLIP-L's 24 (a tower with CLS) and layer 16 of Qwen2.5-VL's 32 (no CLS), scaled to the tower's depth."""
    vc = model.config.vision_config
    depth = getattr(vc, "depth", None) or vc.num_hidden_layers
    cls = any(n.endswith(("class_embedding", "cls_token")) for n, _ in model.named_parameters())
    official, of = (9, 24) if cls else (16, 32)
    return max(1, round(depth * official / of)) - 1


def run_against_reference(family, attn, cfg, n_images=1, batch=1, dtype=torch.float32, inputs=None):
    model = build_model(family, attn, dtype=dtype)
    inputs = inputs or make_inputs(family, n_images=n_images, batch=batch)
    if dtype != torch.float32:
        inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
    vision = features = shallow = None
    if cfg.scorer_name in ("vision_attention", "vispruner", "hiprune"):
        sharpen(model)  # the tiny towers attend almost uniformly: rounding would decide the ranking
        vision_rows = reference_scores(model, family, inputs, received=cfg.scorer_name == "hiprune")
        vision = lambda row: vision_rows[row]  # noqa: E731
    if cfg.scorer_name == "hiprune":
        shallow_rows = reference_scores(model, family, inputs, received=True, layer=hiprune_object_layer(model))
        shallow = lambda row: shallow_rows[row]  # noqa: E731
    if cfg.scorer_name == "vispruner":
        feature_rows = reference_features(model, family, inputs)
        features = lambda row: feature_rows[row]  # noqa: E731
    with torch.no_grad():
        with apply_pruning(model, cfg) as pruner:
            last = model(**inputs).logits[:, -1]
            # the picks of this forward (generate's prefill may differ: it derives positions from the mask)
            kept = dict(pruner.stats.kept_image_indices)
            seq, step_logits = greedy(model, inputs)
        plan = cfg.plan(pruner.stats.n_image_tokens)
        with masked_reference(model, plan, [IMAGE_ID, VIDEO_ID], cfg.scorer_name, precision=cfg.score_dtype or
                              "float32", renumber=pruner.positions == "renumber", seed=cfg.seed or 0,
                              options=cfg.options_dict, grids=image_grids(family, n_images), vision=vision,
                              vision_features=features, vision_object=shallow,
                              units=image_units(family, n_images)) as ref:
            ref_last = model(**inputs).logits[:, -1]
            ref_kept = dict(ref.kept_image_indices)
            ref_seq, ref_step_logits = greedy(model, inputs)
    return pruner, plan, (last, seq, step_logits, kept), (ref_last, ref_kept, ref_seq, ref_step_logits)


def assert_same_picks(kept, ref_kept):
    """The same image tokens were chosen, layer by layer."""
    assert set(kept) == set(ref_kept)
    for layer, ref_layer_kept in ref_kept.items():
        assert torch.equal(kept[layer], ref_layer_kept), f"layer {layer}"


def assert_matches(pruner, plan, ours, theirs, logit_tol=1e-5, step_tol=1e-4):
    last, seq, step_logits, kept = ours
    ref_last, ref_kept, ref_seq, ref_step_logits = theirs
    assert set(kept) <= set(plan)
    assert_same_picks(kept, ref_kept)
    assert (last - ref_last).abs().max().item() < logit_tol
    # cached decoding on the pruned cache equals the reference's masked decoding
    assert torch.equal(seq, ref_seq)
    assert (step_logits - ref_step_logits).abs().max().item() < step_tol


# At R = 0 a vision-side pruner installs no capture at all.
@pytest.mark.parametrize("family,method,attn", with_attns(
    [(f, m) for f, m in runnable(["none"] + sorted(ORACLE_CONFIGS)) if m not in LATER_VISION or
     f in EAGER_FAMILIES], eager_everywhere=()))
def test_ratio_zero_is_bit_identical(family, attn, method):
    model = build_model(family, attn)
    inputs = make_inputs(family)
    cfg = PruneConfig("none") if method == "none" else ORACLE_CONFIGS[method].replace(ratio=0.0)
    assert not cfg.prunes
    with torch.no_grad():
        ref_logits = model(**inputs).logits
        ref_seq, ref_step_logits = greedy(model, inputs)
        with apply_pruning(model, cfg) as pruner:
            logits = model(**inputs).logits
            seq, step_logits = greedy(model, inputs)
    assert torch.equal(logits, ref_logits)
    assert torch.equal(seq, ref_seq) and torch.equal(step_logits, ref_step_logits)
    n = pruner.stats.n_image_tokens
    assert n == TOKENS[family] and pruner.stats.image_tokens_per_layer == [n] * 12


@pytest.mark.parametrize("family,method,attn", with_attns(runnable(MASKED)))
def test_pruned_equals_masked_reference(family, attn, method):
    cfg = ORACLE_CONFIGS[method]
    pruner, plan, ours, theirs = run_against_reference(family, attn, cfg)
    assert plan and any(k < TOKENS[family] for k in plan.values()), "the setting must prune something"
    assert pruner.stats.image_tokens_per_layer == cfg.tokens_per_layer(TOKENS[family], 12)
    assert_matches(pruner, plan, ours, theirs)


@pytest.mark.parametrize("family,method", runnable(MASKED, ["llava", "llava_onevision", "qwen2_vl", "qwen3_vl"]))
def test_left_padded_batch_equals_masked_reference(family, method):
    pruner, plan, ours, theirs = run_against_reference(family, "eager", ORACLE_CONFIGS[method], batch=2)
    assert pruner.stats.batch_size == 2
    assert_matches(pruner, plan, ours, theirs)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "qwen3_vl"])
def test_reference_holds_for_several_images_and_other_settings(family):
    for cfg in (PruneConfig("sequential", 0.9, 2), PruneConfig("fastv", 0.5, 3),
                PruneConfig("sequential", 0.5, 3, step=0.2), PruneConfig("spatial", 0.6),
                PruneConfig("dart", 0.5, 1), PruneConfig("sequential", 0.75, 1, scorer="dart"),
                PruneConfig("divprune", 0.7, 2)):
        pruner, plan, ours, theirs = run_against_reference(family, "sdpa", cfg, n_images=2)
        assert pruner.stats.n_image_tokens == 2 * TOKENS[family]
        assert_matches(pruner, plan, ours, theirs)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("cfg", [PruneConfig("fastv", 1.0, 2), PruneConfig("sequential", 1.0, 2, step=0.2),
                                 PruneConfig("divprune", 1.0)], ids=["fastv", "sequential", "divprune_k0"])
def test_ratio_one_drops_every_image_token(family, cfg):
    pruner, plan, ours, theirs = run_against_reference(family, "sdpa", cfg)
    per_layer = pruner.stats.image_tokens_per_layer
    first, last = min(plan), max(plan)
    assert per_layer[:first] == [TOKENS[family]] * first and per_layer[last:] == [0] * (12 - last)
    assert pruner.stats.kept_image_indices[max(plan)].shape[1] == 0
    flops = pruner.stats.prefill_flops
    assert flops.pruned < flops.unpruned
    assert_matches(pruner, plan, ours, theirs)


@pytest.mark.parametrize("family", ["llava", "llava_onevision", "internvl", "qwen2_vl", "qwen3_vl"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("method", ["sequential", "fastv", "pdrop"])
def test_model_precision_scores_equal_the_reference(family, dtype, method):
    """score_dtype='model' ranks the probabilities the original's eager half-precision attention gave."""
    cfg = ORACLE_CONFIGS[method].replace(score_dtype="model")
    pruner, plan, ours, theirs = run_against_reference(family, "eager", cfg, dtype=dtype)
    assert_half_precision_matches(ours, theirs)


# Half precision: physical removal and masking sum different sets of keys, so every layer rounds differently
# (on a CPU, by kernels that vary with the processor). Over every case above, on the 2-core Xeon VM, the largest
# gap in last-token logits and in decoding logits up to the first near-tie was 0.019: one bf16 ulp at the
# logits' magnitude here (2 to 4, ulp 2**-6). 0.05 allows three ulps.
HALF_LOGIT_TOL = HALF_STEP_TOL = 0.05


def assert_half_precision_matches(ours, theirs):
    """What half precision defines on any CPU: the same picks, close logits, and the same greedy tokens up to the
    first step where the reference's top two logits are within 2 x the tolerance (there, logits that agree within
    it may still order the two differently, and the sequences may part)."""
    last, seq, step_logits, kept = ours
    ref_last, ref_kept, ref_seq, ref_step_logits = theirs
    assert_same_picks(kept, ref_kept)
    assert (last.float() - ref_last.float()).abs().max().item() < HALF_LOGIT_TOL
    prompt = seq.shape[1] - NEW
    top2 = ref_step_logits.float().topk(2, dim=-1).values
    near_tie = (top2[..., 0] - top2[..., 1]) < 2 * HALF_STEP_TOL  # (batch, NEW)
    for b in range(seq.shape[0]):
        ties = near_tie[b].nonzero()
        until = ties[0].item() if len(ties) else NEW  # steps before it have one greedy answer
        # the prefixes are equal up to and including step `until`, so its logits are comparable too
        gap = (step_logits[b, :until + 1].float() - ref_step_logits[b, :until + 1].float()).abs().max().item()
        assert gap < HALF_STEP_TOL, f"row {b}: decoding logits differ by {gap} before the first near-tie"
        assert torch.equal(seq[b, :prompt + until], ref_seq[b, :prompt + until]), f"row {b}, first {until} steps"


@pytest.mark.parametrize("family", ["llava", "internvl"])
@pytest.mark.parametrize("positions", ["original", "renumber"])
def test_positions_conventions_against_the_reference(family, positions):
    for method in ("pdrop", "sequential", "divprune"):
        cfg = ORACLE_CONFIGS[method].replace(positions=positions)
        pruner, plan, ours, theirs = run_against_reference(family, "eager", cfg)
        assert pruner.positions == positions
        assert_matches(pruner, plan, ours, theirs)


def test_renumbering_is_refused_on_mrope_and_defaults_to_original():
    model = build_model("qwen2_vl")
    with pytest.raises(ValueError, match="M-RoPE"):
        apply_pruning(model, ORACLE_CONFIGS["pdrop"].replace(positions="renumber"))
    with apply_pruning(model, ORACLE_CONFIGS["pdrop"]) as pruner:
        assert pruner.positions == "original"
    with apply_pruning(build_model("llava"), ORACLE_CONFIGS["pdrop"]) as pruner:
        assert pruner.positions == "renumber"


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


@pytest.mark.parametrize("family", [f for f in QWEN if f != "qwen3_vl_moe"])
@pytest.mark.parametrize("method", ["sequential", "spatial", "dart"])
def test_video_tokens_are_pruned_like_image_tokens(family, method):
    from tiny_models import make_video_inputs
    cfg = ORACLE_CONFIGS[method]
    grids = [(4, 4, list(range(0, 16))), (4, 4, list(range(16, 32)))]  # two frame groups of 4x4
    model = build_model(family)
    inputs = make_video_inputs(family)
    with torch.no_grad():
        with apply_pruning(model, cfg) as pruner:
            last = model(**inputs).logits[:, -1]
        assert pruner.stats.image_tokens_per_layer == cfg.tokens_per_layer(32, 12)
        with masked_reference(model, cfg.plan(32), [IMAGE_ID, VIDEO_ID], cfg.scorer_name,
                              options=cfg.options_dict, grids=lambda row: grids) as ref:
            ref_last = model(**inputs).logits[:, -1]
    for layer, kept in ref.kept_image_indices.items():
        assert torch.equal(pruner.stats.kept_image_indices[layer], kept)
    assert (last - ref_last).abs().max().item() < 1e-5


HOLE_CASES = sorted({(f, m) for f in ("llava", "qwen2_vl", "qwen3_vl")
                     for m in ("random_oneshot", "divprune", "spatial", "fastv", "sequential")}
                    | {(f, m) for f in FAMILIES for m in ("divprune", "sequential")})  # K = 0 and K > 0 everywhere


@pytest.mark.parametrize("family,method", HOLE_CASES)
def test_mask_hole_after_the_image_equals_masked_reference(family, method):
    """A 2-D mask that hides a text token after the image. Decode masks must be gathered to the keys each
    pruned layer holds (at K = 0 they are sized from layer 0's pruned cache), so the hole has to move with
    the tokens kept before it; left padding alone cannot show this, as its zeros precede every image token."""
    inputs = make_inputs(family)
    mask = inputs["attention_mask"].clone()
    after = (inputs["input_ids"][0] == IMAGE_ID).nonzero().max().item() + 2
    assert after < mask.shape[1] - 1
    mask[0, after] = 0
    inputs["attention_mask"] = mask
    pruner, plan, ours, theirs = run_against_reference(family, "eager", ORACLE_CONFIGS[method], inputs=inputs)
    assert_matches(pruner, plan, ours, theirs)


# ---------------------------------------------------------------------------------------------- merging
def run_against_merge_reference(family, attn, cfg, inputs=None):
    """The pruned run, and the merge oracle fed the kept image tokens and the merged slots' embeddings that the
    pruned run wrote into layer 0 (``merge_reference`` builds the reduced sequence from the stock model)."""
    model = build_model(family, attn)
    sharpen(model)
    inputs = inputs or make_inputs(family)
    entering = []
    with torch.no_grad():
        with apply_pruning(model, cfg) as pruner:
            layer0 = model.model.language_model.layers[0]
            h = layer0.register_forward_pre_hook(  # after the pruner's own hook: the pruned hidden states
                lambda m, a, k: entering.append((a[0] if a else k["hidden_states"]).clone()), with_kwargs=True)
            last = model(**inputs).logits[0, -1]
            h.remove()
            kept = pruner.stats.kept_image_indices[0][0].tolist()
            merged = pruner.stats.merged[0][0].tolist()
            seq, step_logits = greedy(model, inputs)
        visual = torch.isin(inputs["input_ids"][0], torch.tensor([IMAGE_ID, VIDEO_ID]))
        image_pos = visual.nonzero().flatten()
        keep_tok = ~visual
        keep_tok[image_pos[kept]] = True
        at = keep_tok.nonzero().flatten().tolist()
        embeds = {k: entering[0][0, at.index(int(image_pos[k]))] for k, m in zip(kept, merged) if m}
        ref = merge_reference(model, inputs, kept, embeds, pruner.positions == "renumber", NEW, [IMAGE_ID, VIDEO_ID])
    return pruner, (last, seq[0, -NEW:], step_logits[0]), ref, embeds


@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("family,method", runnable(MERGING))
def test_merging_equals_the_merge_reference(family, attn, method):
    cfg = ORACLE_CONFIGS[method]
    pruner, (last, seq, steps), (ref_last, ref_seq, ref_steps), embeds = run_against_merge_reference(
        family, attn, cfg)
    assert embeds, "the setting must merge something"
    assert pruner.stats.image_tokens_per_layer == cfg.tokens_per_layer(TOKENS[family], 12)
    assert (last - ref_last).abs().max().item() < 1e-5
    assert torch.equal(seq, ref_seq)  # cached decoding on the pruned, merged cache
    assert (steps - ref_steps).abs().max().item() < 1e-4


def test_scorers_of_keys_or_features_are_refused_where_a_family_has_no_mapping():
    """Every family maps the tower's keys and features (so every method runs above); an adapter without the
    mapping is refused with the reason, never run without its merge."""
    assert all(supported(m, f) for f in FAMILIES for m in ORACLE_CONFIGS)
    adapter = families()["llava_next"]
    bare = replace(adapter, vision=replace(adapter.vision, merge=None))
    with pytest.raises(ValueError, match="keys or features .* are not supported on the llava_next family: no merge"):
        VisionCapture(build_model("llava_next"), bare, needs=frozenset({"features"}))


# The vision-side budget: each image / crop / tile its share (the official code encodes and prunes each on its own),
# or one pool per prompt. Per-unit counts written out: N image tokens, R = 0.75 keeps N - round(0.75 N).
PER_UNIT = {("llava", 2): [16, 16], ("llava_next", 1): [5, 4], ("internvl", 1): [4, 4], ("qwen2_vl", 3): [4, 4, 4]}
PER_UNIT_METHODS = {"fastervlm": {}, "vispruner": {"per_round": 2}, "hiprune": {"alpha": 0.5}}


@pytest.mark.parametrize("method", list(PER_UNIT_METHODS))
@pytest.mark.parametrize("family,n_images", list(PER_UNIT))
def test_vision_side_methods_keep_each_image_or_crops_share_and_pool_on_request(family, n_images, method):
    units = image_units(family, n_images)(0)
    counts = {}
    for scope in ("image", "prompt"):
        cfg = PruneConfig(method, 0.75, options={"scope": scope, **PER_UNIT_METHODS[method]})
        pruner, plan, ours, theirs = run_against_reference(family, "sdpa", cfg, n_images=n_images)
        assert_matches(pruner, plan, ours, theirs)
        kept = ours[3][0][0].tolist()
        counts[scope] = [sum(units[i] == u for i in kept) for u in sorted(set(units) - {-1})]
        assert all(units[i] >= 0 for i in kept)  # the units hold the budget: no newline token is kept
    assert counts["image"] == PER_UNIT[family, n_images]
    if method == "fastervlm":  # the sharpened towers favour one unit: the split is not a no-op
        assert counts["prompt"] != counts["image"]
