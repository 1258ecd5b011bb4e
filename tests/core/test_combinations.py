"""Combinations: a stage before the decoder (``PruneConfig(before=...)``) then a decoder-side schedule, in one pass.

The oracle: a combined run equals the decoder-side method run on the reduced sequence the before stage gives
(``merge_reference(..., then=...)``: the stock model's text-model inputs reduced to the kept tokens, the merged
embeddings written into their slots, then the masked reference of the decoder-side plan of N'), with cached
decoding; both ratios 0 are bit-identical to the unpruned model; bad combinations are refused.
"""
import pytest
import torch

from SequentialPrune import PruneConfig, apply_pruning
from SequentialPrune.testing.oracle import merge_reference
from tiny_models import IMAGE_ID, TOKENS, VIDEO_ID, build_model, make_inputs
from vision_oracle import sharpen

pytestmark = pytest.mark.core

NEW = 6
VISIONZIP = PruneConfig("visionzip", 0.75, options={"contextual_ratio": 0.25})  # 16 of 64 kept, 4 of them merged
CASES = {
    # VisionZip (merging, renumbered) then Sequential (original positions): the kept positions stay renumbered
    "visionzip+sequential": PruneConfig("sequential", 0.5, 2, step=0.25, before=VISIONZIP),
    # a selection (FasterVLM, renumbered) then PyramidDrop (renumbered again, from its own probe)
    "fastervlm+pdrop": PruneConfig("pdrop", 0.75, options={"stages": (2, 5)}, before=PruneConfig("fastervlm", 0.5)),
}


def greedy(model, inputs):
    out = model.generate(**inputs, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                         output_logits=True, return_dict_in_generate=True)
    return out.sequences[0, -NEW:], torch.stack(out.logits, 1)[0]


@pytest.mark.parametrize("family,case", [("llava", "visionzip+sequential"), ("qwen2_vl", "visionzip+sequential"),
                                         ("llava", "fastervlm+pdrop")])
def test_combination_equals_the_decoder_method_on_the_reduced_sequence(family, case):
    cfg = CASES[case]
    before, decoder = cfg.stages
    model = build_model(family)
    sharpen(model)
    inputs = make_inputs(family)
    entering = []
    with torch.no_grad():
        with apply_pruning(model, cfg) as pruner:
            h = model.model.language_model.layers[0].register_forward_pre_hook(  # after the pruner's own hook
                lambda m, a, k: entering.append((a[0] if a else k["hidden_states"]).clone()), with_kwargs=True)
            last = model(**inputs).logits[0, -1]
            h.remove()
            kept_idx = {i: t.clone() for i, t in pruner.stats.kept_image_indices.items()}
            merged = pruner.stats.merged.get(0)
            seq, steps = greedy(model, inputs)
        n = TOKENS[family]
        plan = cfg.plan(n)
        n_reduced = before.plan(n)[0]
        assert plan == {0: n_reduced, **decoder.plan(n_reduced)} and len(plan) > 1
        assert pruner.stats.image_tokens_per_layer == cfg.tokens_per_layer(n, 12)
        kept = kept_idx[0][0].tolist()
        visual = torch.isin(inputs["input_ids"][0], torch.tensor([IMAGE_ID, VIDEO_ID]))
        at = (~visual).clone()
        at[visual.nonzero().flatten()[kept]] = True
        at = at.nonzero().flatten().tolist()
        image_pos = visual.nonzero().flatten()
        embeds = {k: entering[0][0, at.index(int(image_pos[k]))] for k, m in
                  zip(kept, merged[0].tolist() if merged is not None else [False] * len(kept)) if m}
        assert bool(embeds) == (before.method == "visionzip")
        stage_pos = [s.positions for s in pruner.stages]
        ref_last, ref_seq, ref_steps, ref_kept = merge_reference(
            model, inputs, kept, embeds, stage_pos[0] == "renumber", NEW, [IMAGE_ID, VIDEO_ID],
            then=dict(plan=decoder.plan(n_reduced), scorer=decoder.scorer_name, options=decoder.options_dict,
                      renumber=stage_pos[1] == "renumber"))
    assert sorted(kept_idx) == sorted(plan)
    for layer, ref_layer in ref_kept.items():
        assert torch.equal(kept_idx[layer][0], ref_layer[0]), f"layer {layer}"
    assert (last - ref_last).abs().max().item() < 1e-5
    assert torch.equal(seq, ref_seq)  # cached decoding on the combined cache
    assert (steps - ref_steps).abs().max().item() < 1e-4


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_both_ratios_zero_are_bit_identical(family):
    model = build_model(family)
    inputs = make_inputs(family)
    cfg = CASES["visionzip+sequential"].replace(ratio=0.0, before=VISIONZIP.replace(ratio=0.0))
    assert not cfg.prunes and cfg.plan(64) == {} and cfg.tag() == "none"
    with torch.no_grad():
        ref_logits = model(**inputs).logits
        ref_seq, ref_steps = greedy(model, inputs)
        with apply_pruning(model, cfg) as pruner:
            assert pruner.vision is None  # nothing prunes: no capture is installed
            logits = model(**inputs).logits
            seq, steps = greedy(model, inputs)
    assert torch.equal(logits, ref_logits) and torch.equal(seq, ref_seq) and torch.equal(steps, ref_steps)


def test_the_combined_plan_budget_and_record():
    cfg = CASES["visionzip+sequential"]
    assert [s.method for s in cfg.stages] == ["visionzip", "sequential"] and cfg.stages[1].before is None
    assert cfg.plan(64) == {0: 16, 2: 12, 3: 8}  # the decoder-side fractions are of N' = 16
    assert cfg.tokens_per_layer(64, 12) == [16, 16, 12] + [8] * 9
    assert cfg.replace(ratio=0.0).plan(64) == {0: 16} and cfg.replace(ratio=0.0).prunes
    assert cfg.replace(before=VISIONZIP.replace(ratio=0.0)).plan(64) == CASES["visionzip+sequential"].stages[1].plan(64)
    assert cfg.tag() == "visionzip_r0.75_l0_contextual_ratio0.25+sequential_r0.5_l2_s25"
    assert "before the decoder: visionzip" in cfg.describe()
    assert PruneConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["before"]["method"] == "visionzip"
    assert "before" not in VISIONZIP.to_dict()  # single-stage records (run identities) are unchanged
    solved = PruneConfig.for_budget("sequential", 10, 64, 12, layer=2, before=VISIONZIP)
    assert solved.before == VISIONZIP and solved.average_image_tokens(64, 12) <= 10
    assert solved.solve_ratio(12, 64, 12).before == VISIONZIP
    with pytest.raises(ValueError, match="prunes up to layer"):
        PruneConfig("sequential", 0.9, 10, before=VISIONZIP).check_model(12)


@pytest.mark.parametrize("make,match", [
    (lambda: PruneConfig("sequential", 0.5, 0, before=VISIONZIP), "two stages at layer 0"),
    (lambda: PruneConfig("fastervlm", before=VISIONZIP), "two stages at layer 0"),
    (lambda: PruneConfig("fastv", 0.5, 2, before=PruneConfig("divprune", 0.5, before=VISIONZIP)),
     "two stages at layer 0"),
    (lambda: PruneConfig("sequential", before=PruneConfig("fastv", 0.5, 2, before=VISIONZIP)), "nested once"),
    (lambda: PruneConfig("sequential", before=PruneConfig("sequential", 0.5, 2)), "a one-shot schedule at layer 0"),
    (lambda: PruneConfig("sequential", before=PruneConfig("divprune", 0.5, 1)), "a one-shot schedule at layer 0"),
    (lambda: PruneConfig("sequential", before=PruneConfig("pdrop")), "a one-shot schedule at layer 0"),
    (lambda: PruneConfig("none", before=VISIONZIP), "on its own"),
    (lambda: PruneConfig("sequential", scorer="vision_attention", before=VISIONZIP), "both stages read the vision"),
    (lambda: PruneConfig("sequential", before="visionzip"), "must be a PruneConfig"),
    (lambda: PruneConfig("sequential", before=VISIONZIP.replace(cache_mode="recompute")), "cache mode"),
])
def test_bad_combinations_are_refused(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_a_mixed_batch_of_a_combination_gives_each_row_what_it_gives_alone(family):
    from test_ragged_batches import assert_rows_alone, mixed_rows
    cfg = CASES["visionzip+sequential"]
    per_row = assert_rows_alone(family, cfg, mixed_rows(family))
    for s in per_row:  # each row: its own N, its own N', the decoder-side plan of its N'
        assert s.image_tokens_per_layer == cfg.tokens_per_layer(s.n_image_tokens, 12)


def test_a_stage_at_ratio_zero_leaves_the_other_alone():
    model = build_model("llava")
    inputs = make_inputs("llava")
    cfg = CASES["visionzip+sequential"]
    with torch.no_grad():
        for combined, alone in ((cfg.replace(ratio=0.0), VISIONZIP),
                                (cfg.replace(before=VISIONZIP.replace(ratio=0.0)), cfg.stages[1])):
            with apply_pruning(model, alone) as pruner:
                ref, ref_stats = model(**inputs).logits, pruner.stats
            with apply_pruning(model, combined) as pruner:
                assert torch.equal(model(**inputs).logits, ref)
                assert pruner.stats.image_tokens_per_layer == ref_stats.image_tokens_per_layer
                assert pruner.stats.positions == ref_stats.positions
