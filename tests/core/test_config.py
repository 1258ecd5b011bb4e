"""PruneConfig: the schedules' exact counts against the original code, methods' defaults against their
papers' code, validation, the budget solver and tags."""
import pytest

from SequentialPrune import METHODS, SCHEDULES, SCORERS, PruneConfig
from SequentialPrune.config import parse_option
from SequentialPrune.schedules import stepwise_fractions

pytestmark = pytest.mark.core  # also run on the oldest supported transformers in CI


def original_sequential_counts(attention_rank: float, prune_step: int, agg_layer: int, image_tokens: int = 576):
    """The image tokens entering each layer in LeeBumSeok/Tokenpruning @0898f4a (LLaVA modeling_llama.py, the
    fast_v_sequential_prune + fast_v_inplace branch), re-derived line by line from its layer loop."""
    counts = {}
    for idx in range(64):
        if idx < agg_layer:
            continue
        ratio = prune_step / 100
        total_layers_to_prune = int(1 / ratio * attention_rank)
        current_prune_ratio = ratio * (idx - agg_layer + 1)
        if idx - agg_layer < total_layers_to_prune:
            if idx - agg_layer == total_layers_to_prune - 1:
                current_prune_ratio = attention_rank
            counts[idx] = int((1 - current_prune_ratio) * image_tokens)
    return counts


@pytest.mark.parametrize("prune_step", [5, 10, 20])
def test_sequential_schedule_equals_the_original_loop_for_every_ratio(prune_step):
    mismatches = []
    for i in range(1, 101):
        r = i / 100
        expected = original_sequential_counts(r, prune_step, 2)
        if not expected:  # R < step: the original prunes nothing; we prune once, to R (documented)
            assert r < prune_step / 100
            assert PruneConfig("sequential", r, 2, prune_step / 100).plan(576) == {2: int((1 - r) * 576)}
            continue
        got = PruneConfig("sequential", r, 2, prune_step / 100).plan(576)
        if got != expected:
            mismatches.append((r, got, expected))
    assert not mismatches, mismatches[:3]


def test_the_formula_is_the_originals_not_r_over_step():
    # int(R / step) would give 5 layers for R = 0.6 at 10% and drop 345 -> 230 at once
    assert PruneConfig("sequential", 0.6, 2).plan(576) == {2: 518, 3: 460, 4: 403, 5: 345, 6: 288, 7: 230}
    assert int(0.6 / 0.1) == 5 and int(1 / 0.1 * 0.6) == 6


def test_original_table_and_ratio_one():
    assert PruneConfig("sequential", 0.75, 2).plan(576) == {2: 518, 3: 460, 4: 403, 5: 345, 6: 288, 7: 230,
                                                            8: 144}
    assert PruneConfig("sequential", 0.9, 5).plan(576) == original_sequential_counts(0.9, 10, 5)
    # R = 1.0 (the paper's Qwen column): every image token gone at the last stage
    assert PruneConfig("sequential", 1.0, 2).plan(576) == original_sequential_counts(1.0, 10, 2)
    assert PruneConfig("sequential", 1.0, 2).plan(576)[11] == 0
    assert PruneConfig("fastv", 1.0, 2).plan(576) == {2: 0}


def test_fastv_schedule_is_one_shot():
    assert PruneConfig("fastv", 0.75, 2).plan(576) == {2: 144}
    assert PruneConfig("fastv", 0.5, 3).plan(576) == {3: 288}


def test_ratio_below_one_step_still_prunes():
    # int(1 / 0.1 * 0.05) == 0 would prune nothing; we prune once, to the ratio.
    assert stepwise_fractions(0.05, 0.1) == [0.05]
    assert PruneConfig("sequential", 0.05, 2).plan(100) == {2: 95}


def test_methods_defaults_are_their_papers():
    n = 576
    fastv = PruneConfig("fastv")  # FastV: K = 2, R = 50%
    assert (fastv.layer, fastv.ratio, fastv.plan(n)) == (2, 0.5, {2: 288})
    # PyramidDrop: layer_list [8, 16, 24], image_token_ratio_list [0.5, 0.25, 0.125], int(N * ratio)
    assert PruneConfig("pdrop").plan(n) == {8: int(n * 0.5), 16: int(n * 0.25), 24: int(n * 0.125)}
    assert PruneConfig("pdrop").positions is None and \
        PruneConfig("pdrop").effective_positions(mrope=False) == "renumber"
    # DART: K = 2, 4 + 4 pivots, and its code keeps 4 + 8 * (128 // 8) = 132 image tokens
    dart = PruneConfig("dart")
    assert dart.layer == 2 and dart.plan(n) == {2: 4 + 8 * (128 // 8)}
    assert dart.options_dict == {"image_pivots": 4, "text_pivots": 4}
    # DivPrune: before the LLM, SUBSET_RATIO 0.098 kept: int(round(0.098 * 576)) = 56, positions contiguous
    div = PruneConfig("divprune")
    assert div.layer == 0 and div.plan(n) == {0: int(round(0.098 * n))}
    assert div.effective_positions(mrope=False) == "renumber" and div.effective_positions(mrope=True) == "original"
    assert PruneConfig("spatial").plan(n) == {0: 144}
    assert PruneConfig("sequential").plan(n) == PruneConfig("sequential", 0.75, 2, 0.1).plan(n)


def test_pdrop_lambda_and_budgets():
    cfg = PruneConfig("pdrop", options={"stages": "2,8,16"})
    assert cfg.layer == 2 and cfg.schedule_obj.lam(cfg.ratio) == 0.5
    # the author's low-budget advice (PyramidDrop issue #29): stages [2, 8, 16], lambda ~0.19 for ~64 tokens
    low = PruneConfig.for_budget("pdrop", 64, 576, 32, options={"stages": (2, 8, 16)})
    assert 0.18 < low.schedule_obj.lam(low.ratio) < 0.2 and low.average_image_tokens(576, 32) <= 64


def test_custom_schedules():
    cfg = PruneConfig("custom", options={"schedule": "2:0.5,6:0.3"})
    assert cfg.ratio == 0.7 and cfg.layer == 2 and cfg.plan(576) == {2: 288, 6: 172}
    assert cfg.tag() == "custom_2k0.5_6k0.3"
    # another R scales every dropped fraction: the shape stays
    half = cfg.replace(ratio=0.35)
    assert half.plan(576) == {2: int(576 * 0.75), 6: int(576 * 0.65)}
    assert PruneConfig("custom", scorer="dart", options={"schedule": {3: 0.4}, "image_pivots": 2}).plan(100) == \
        {3: 40}
    for bad, msg in (("2:0.5,6:0.7", "must not increase"), ("2:1.5", "in \\[0, 1\\]"), ("2-0.5", "LAYER:KEPT"),
                     ("2:1", "keeps every token"), ("", "at least one")):
        with pytest.raises(ValueError, match=msg):
            PruneConfig("custom", options={"schedule": bad})


@pytest.mark.parametrize("kwargs,msg", [
    (dict(method="fast"), "unknown pruning method"),
    (dict(ratio=1.01), "ratio must be in \\[0, 1\\]"),
    (dict(ratio=-0.1), "ratio must be in"),
    (dict(layer=-1), "layer K must be an integer >= 0"),
    (dict(layer=1.5), "layer K must be an integer"),
    (dict(layer=0), "layer 0 has no previous layer"),
    (dict(method="fastv", layer=0), "use a layer >= 1, or a scorer that needs no previous layer"),
    (dict(step=0), "step is a fraction in \\(0, 1\\]"),
    (dict(step=10), "did you mean 0.1"),
    (dict(scorer="magic"), "unknown scorer"),
    (dict(cache_mode="paged"), "cache_mode must be one of"),
    (dict(score_dtype="fp8"), "score_dtype must be one of"),
    (dict(positions="shifted"), "positions must be one of"),
    (dict(method="fastv", step=0.1), "step has no effect with method fastv"),
    (dict(method="sequential", seed=3), "seed has no effect"),
    (dict(method="divprune", score_dtype="model"), "score_dtype has no effect"),
    (dict(method="pdrop", layer=2), "set by its options"),
    (dict(method="dart", options={"pivots": 3}), "unknown option\\(s\\) \\['pivots'\\]"),
    (dict(method="dart", options={"image_pivots": -1}), "integer >= 0"),
    (dict(method="custom"), "needs options"),
    (dict(method="none", ratio=0.5), "prunes nothing"),
    (dict(method="none", layer=2), "no effect with method 'none'"),
])
def test_invalid_settings_fail_eagerly(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        PruneConfig(**kwargs)


def test_layer_zero_is_allowed_for_scorers_without_a_previous_layer():
    for scorer in ("random", "dart", "divprune", "spatial", "pdrop"):
        assert PruneConfig("fastv", 0.5, 0, scorer=scorer).plan(100) == {0: 50}
    assert PruneConfig("random_oneshot", 0.5, 0).layer == 0


def test_model_dependent_checks():
    with pytest.raises(ValueError, match="must be < the number of decoder layers"):
        PruneConfig("fastv", 0.5, 12).check_model(12)
    with pytest.raises(ValueError, match="prunes up to layer 13"):
        PruneConfig("sequential", 0.9, 5).check_model(12)
    PruneConfig("sequential", 0.9, 5).check_model(14)
    with pytest.raises(ValueError, match="prunes up to layer 24"):
        PruneConfig("pdrop").check_model(12)
    PruneConfig("none").check_model(1)  # never prunes: nothing to check


def test_every_method_is_a_schedule_plus_scorer():
    for name, method in METHODS.items():
        cfg = PruneConfig(name, options={"schedule": "2:0.5"}) if name == "custom" else PruneConfig(name)
        assert cfg.schedule_name == method.schedule in SCHEDULES and cfg.scorer_name == method.scorer in SCORERS
        assert PruneConfig.from_dict(cfg.to_dict()) == cfg
        assert name == "none" or cfg.prunes


@pytest.mark.parametrize("method,extra", [
    ("fastv", {}), ("sequential", {}), ("random", {}), ("dart", {}), ("divprune", {}), ("spatial", {}),
    ("pdrop", {"options": {"stages": (2, 8, 16)}}), ("custom", {"options": {"schedule": "1:0.5,4:0.25,8:0.1"}}),
])
def test_budget_solver_hits_the_target_for_every_schedule(method, extra):
    for target in (192, 128, 64):
        try:
            cfg = PruneConfig.for_budget(method, target, n_image=576, num_layers=32, **extra)
        except ValueError as e:
            # 10% steps from layer 2 cannot reach 64 (see below); every other pair must be solved
            assert "closest" in str(e) and method in ("sequential", "random") and target == 64
            continue
        avg = cfg.average_image_tokens(576, 32)
        assert avg <= target + 1e-9
        looser = cfg.replace(ratio=round(cfg.ratio - 1e-4, 10))  # one resolution step less pruning overshoots
        assert looser.average_image_tokens(576, 32) > target


def test_budget_solver_refuses_what_it_cannot_reach():
    # 10% steps from layer 2 cannot average 64 of 576 over 32 layers: say so, don't approximate
    with pytest.raises(ValueError, match="closest: 115"):
        PruneConfig.for_budget("sequential", 64, n_image=576, num_layers=32, layer=2)


def test_tag_names_every_setting_apart():
    cfgs = [PruneConfig(m, r, k, s) for m in ("sequential", "random") for r in (0.5, 0.75) for k in (2, 3)
            for s in (0.1, 0.05)] + [PruneConfig("fastv", r, k) for r in (0.5, 0.75) for k in (2, 3)]
    cfgs += [PruneConfig("dart", 0.5, 2), PruneConfig("dart", 0.5, 2, options={"image_pivots": 2}),
             PruneConfig("pdrop"), PruneConfig("pdrop", options={"stages": (2, 8, 16)}),
             PruneConfig("pdrop", positions="original"), PruneConfig("fastv", 0.5, 2, score_dtype="model"),
             PruneConfig("sequential", 0.5, 2, scorer="dart"), PruneConfig("divprune"), PruneConfig("spatial")]
    tags = [c.tag() for c in cfgs]
    assert len(set(tags)) == len(tags)
    assert PruneConfig("sequential", 0.75, 2).tag() == "sequential_r0.75_l2_s10"
    assert PruneConfig("fastv", 0.0, 2).tag() == "none"
    assert PruneConfig("sequential", 0.5, 2, cache_mode="recompute").tag().endswith("_recompute")
    assert PruneConfig("pdrop", options={"stages": (2, 8, 16)}).tag() == "pdrop_r0.875_stages2-8-16"


def test_flops_ratio_at_llava_7b_dimensions():
    # LLaVA-1.5-7B (d=4096, m=11008, 32 layers), 576 image + 40 text tokens, K=2, R=0.75
    from SequentialPrune import prefill_flops
    ratios = {}
    for method in ("sequential", "fastv"):
        per_layer = [40 + n for n in PruneConfig(method, 0.75, 2).tokens_per_layer(576, 32)]
        ratios[method] = prefill_flops(per_layer, 616, 4096, 11008).ratio
    assert round(ratios["sequential"], 3) == 0.407 and round(ratios["fastv"], 3) == 0.336


@pytest.mark.parametrize("text,expected", [
    ("image_pivots=4", ("image_pivots", 4)), ("n=-2", ("n", -2)),
    ("lam=0.5", ("lam", 0.5)), ("eps=1e-3", ("eps", 1e-3)),
    ("stages=2,8,16", ("stages", "2,8,16")), ("schedule=2:0.5,6:0.3", ("schedule", "2:0.5,6:0.3")),
    ("name=a=b", ("name", "a=b")), ("empty=", ("empty", "")),
])
def test_parse_option_casts_int_then_float_else_keeps_the_string(text, expected):
    key, value = parse_option(text)
    assert (key, value) == expected and type(value) is type(expected[1])


@pytest.mark.parametrize("bad", ["stages", "=4", ""])
def test_parse_option_names_the_expected_form(bad):
    with pytest.raises(ValueError) as e:
        parse_option(bad)
    assert str(e.value) == f"expected KEY=VALUE (e.g. stages=2,8,16 or image_pivots=4), got {bad!r}"


# One non-default setting per method: every field solve_ratio must keep differs from the method's default where
# the method has it, so a field dropped on the way would change the solved config.
SOLVE_BASES = {
    "fastv": dict(layer=3, scorer="dart", cache_mode="recompute", options={"image_pivots": 2}),
    "sequential": dict(layer=1, step=0.2, score_dtype="model", positions="renumber"),
    "random": dict(layer=1, step=0.25, seed=7),
    "random_oneshot": dict(layer=1, seed=5, positions="renumber"),
    "pdrop": dict(options={"stages": (2, 5, 8)}, score_dtype="model", positions="original"),
    "dart": dict(layer=1, options={"image_pivots": 2, "text_pivots": 3}),
    "divprune": dict(layer=1, positions="original"),
    "spatial": dict(layer=2, cache_mode="recompute"),
    "fastervlm": dict(layer=1, positions="original"),
    "visionzip": dict(positions="original", options={"contextual_ratio": 0.25}),
    "vispruner": dict(layer=1, positions="original", options={"important_ratio": 0.25, "per_round": 4}),
    "hiprune": dict(layer=1, positions="original", options={"alpha": 0.3, "object_layer": 2}),
    "cdpruner": dict(layer=1, positions="original", options={"theta": 0.5}),
    "custom": dict(options={"schedule": "1:0.6,4:0.3"}, scorer="random", seed=2),
}
assert set(SOLVE_BASES) == set(METHODS) - {"none"}, "every method must be in solve_ratio's test"


@pytest.mark.parametrize("method", sorted(SOLVE_BASES))
def test_solve_ratio_keeps_every_other_field_and_meets_the_budget(method):
    fixed = SOLVE_BASES[method]
    base = PruneConfig(method, **fixed)
    for target in (40, 24):
        solved = base.solve_ratio(target, n_image=64, num_layers=12)
        assert solved == PruneConfig.for_budget(method, target, 64, 12, **fixed)  # the hand-made call
        assert solved == base.replace(ratio=solved.ratio)  # only the ratio moved
        assert solved.average_image_tokens(64, 12) <= target
    # every layer before the first pruning one holds all 64: no ratio averages 0.5, and it is refused as for_budget
    # refuses it (a merging method prunes at layer 0 only, where R = 1 reaches any budget)
    if base.layer == 0:
        assert SCORERS[base.scorer_name].merges and base.solve_ratio(0.5, 64, 12).plan(64) == {0: 0}
        return
    with pytest.raises(ValueError, match="closest"):
        base.solve_ratio(0.5, 64, 12)


def test_solve_ratio_of_none_and_of_defaults():
    assert PruneConfig("none").solve_ratio(64, 64, 12) == PruneConfig("none")
    with pytest.raises(ValueError, match="closest"):
        PruneConfig("none").solve_ratio(32, 64, 12)
    # a schedule that takes its layer from its options ignores the resolved layer: the stages decide it
    pdrop = PruneConfig("pdrop", options={"stages": (2, 5, 8)})
    assert pdrop.solve_ratio(40, 64, 12).layer == 2
    assert PruneConfig("sequential").solve_ratio(192, 576, 32) == \
        PruneConfig.for_budget("sequential", 192, 576, 32, layer=2, step=0.1)


def test_step_is_a_bounded_number():
    assert PruneConfig("sequential", 0.75, 2, step="0.2").step == 0.2  # as a ratio given as text is
    with pytest.raises(ValueError, match="step must be a number"):
        PruneConfig("sequential", 0.75, 2, step="ten")
    with pytest.raises(ValueError, match=r"step must be >= 0.001 .*more than 1000 pruning layers"):
        PruneConfig("sequential", 0.75, 2, step=1e-9)  # --prune-step 1e-7: a plan of 7.5e8 layers before
    assert PruneConfig("sequential", 0.75, 2, step=0.001).plan(1000)[2] == 999


def test_from_dict_refuses_what_it_does_not_know():
    cfg = PruneConfig("fastv", 0.5, 2)
    assert PruneConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown PruneConfig key\(s\) \['methd'\]"):
        PruneConfig.from_dict({"methd": "fastv"})  # was silently a Sequential config
    with pytest.raises(ValueError, match="needs its 'method'"):
        PruneConfig.from_dict({"ratio": 0.5})
