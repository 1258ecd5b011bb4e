"""PruneConfig validation, the schedules' exact counts, the budget solver and tags."""
import pytest

from SequentialPrune import METHODS, PruneConfig
from SequentialPrune.schedules import stepwise_fractions

pytestmark = pytest.mark.core  # also run on the oldest supported transformers in CI

# The original research code's counts for N = 576 (image tokens entering each layer).
ORIGINAL_TABLE = {
    (0.5, 2): {2: 518, 3: 460, 4: 403, 5: 345, 6: 288},
    (0.75, 2): {2: 518, 3: 460, 4: 403, 5: 345, 6: 288, 7: 230, 8: 144},
    (0.9, 5): {5: 518, 6: 460, 7: 403, 8: 345, 9: 288, 10: 230, 11: 172, 12: 115, 13: 57},
}


@pytest.mark.parametrize("ratio,layer", list(ORIGINAL_TABLE))
def test_sequential_schedule_matches_original_counts(ratio, layer):
    assert PruneConfig("sequential", ratio, layer, 0.1).plan(576) == ORIGINAL_TABLE[(ratio, layer)]


def test_fastv_schedule_is_one_shot():
    assert PruneConfig("fastv", 0.75, 2).plan(576) == {2: 144}
    assert PruneConfig("fastv", 0.5, 3).plan(576) == {3: 288}


def test_tokens_per_layer_and_average():
    cfg = PruneConfig("sequential", 0.5, 2)
    per = cfg.tokens_per_layer(576, 32)
    assert per[:2] == [576, 576] and per[2:7] == [518, 460, 403, 345, 288] and per[7:] == [288] * 25
    assert cfg.average_image_tokens(576, 32) == pytest.approx(sum(per) / 32)


def test_ratio_below_one_step_still_prunes():
    # int(0.05 / 0.1) == 0 would prune nothing; we prune once, to the ratio.
    assert stepwise_fractions(0.05, 0.1) == [0.05]
    assert PruneConfig("sequential", 0.05, 2).plan(100) == {2: 95}


@pytest.mark.parametrize("kwargs,msg", [
    (dict(method="fast"), "unknown pruning method"),
    (dict(ratio=1.0), "ratio must be in"),
    (dict(ratio=-0.1), "ratio must be in"),
    (dict(layer=0), "layer K must be an integer >= 1"),
    (dict(layer=1.5), "layer K must be an integer"),
    (dict(step=0), "step must be > 0"),
    (dict(step=10), "did you mean 0.1"),
    (dict(scorer="magic"), "unknown scorer"),
    (dict(cache_mode="paged"), "cache_mode must be one of"),
])
def test_invalid_settings_fail_eagerly(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        PruneConfig(**kwargs)


def test_model_dependent_checks():
    with pytest.raises(ValueError, match="must be < the number of decoder layers"):
        PruneConfig("fastv", 0.5, 12).check_model(12)
    with pytest.raises(ValueError, match="prunes up to layer 13"):
        PruneConfig("sequential", 0.9, 5).check_model(12)
    PruneConfig("sequential", 0.9, 5).check_model(14)
    PruneConfig("none", 0.0, 50).check_model(12)  # never prunes: nothing to check


def test_every_method_is_a_schedule_plus_scorer():
    for name, (schedule, scorer) in METHODS.items():
        cfg = PruneConfig(name, 0.5, 2)
        assert cfg.schedule_name == schedule and cfg.scorer_name == scorer


def test_budget_solver_hits_the_target():
    for method, targets in (("fastv", (192, 128, 64)), ("sequential", (192, 128))):
        for target in targets:
            cfg = PruneConfig.for_budget(method, target, n_image=576, num_layers=32, layer=2)
            avg = cfg.average_image_tokens(576, 32)
            assert avg <= target + 1e-9
            # one resolution step less pruning would exceed the budget
            looser = cfg.replace(ratio=round(cfg.ratio - 1e-4, 10))
            assert looser.average_image_tokens(576, 32) > target
    # 10% steps from layer 2 cannot average 64 of 576 over 32 layers: say so, don't approximate
    with pytest.raises(ValueError, match="closest: 115"):
        PruneConfig.for_budget("sequential", 64, n_image=576, num_layers=32, layer=2)


def test_tag_names_every_setting_apart():
    tags = {PruneConfig(m, r, k, s).tag() for m in ("fastv", "sequential", "random")
            for r in (0.5, 0.75) for k in (2, 3) for s in (0.1, 0.05)}
    assert len(tags) == 3 * 2 * 2 * 2 - 2 * 2  # fastv ignores the step
    assert PruneConfig("sequential", 0.75, 2).tag() == "sequential_r0.75_l2_s10"
    assert PruneConfig("fastv", 0.0, 2).tag() == "none"
    assert PruneConfig("sequential", 0.5, 2, cache_mode="recompute").tag().endswith("_recompute")


def test_flops_ratio_at_llava_7b_dimensions():
    # LLaVA-1.5-7B (d=4096, m=11008, 32 layers), 576 image + 40 text tokens, K=2, R=0.75
    from SequentialPrune import prefill_flops
    ratios = {}
    for method in ("sequential", "fastv"):
        per_layer = [40 + n for n in PruneConfig(method, 0.75, 2).tokens_per_layer(576, 32)]
        ratios[method] = prefill_flops(per_layer, 616, 4096, 11008).ratio
    assert round(ratios["sequential"], 3) == 0.407 and round(ratios["fastv"], 3) == 0.336
