"""Our flags in process (no launch): the original research code's flags translate to the new setting, bad
combinations are refused with a message, --model-path takes one path or NAME=PATH pairs, defaults normalise;
every vision-side method through the three front ends' flags at the equal budgets."""
from __future__ import annotations

from dataclasses import replace

import pytest

from SequentialPrune import METHODS, PruneConfig
from SequentialPrune.evaluation.resolve import solve_budget
from SequentialPrune.frontends.vlmevalkit.flags import parse_flags


@pytest.mark.parametrize("original,new", [
    (["--use-fast-v", "--fast-v-attention-rank", "0.75", "--fast-v-agg-layer", "2", "--fast-v-sequential-prune"],
     ["--prune-method", "sequential", "--prune-ratio", "0.75", "--prune-layer", "2"]),
    (["--use-fast-v", "--fast-v-inplace", "--fast-v-attention-rank", "0.9", "--fast-v-agg-layer", "5"],
     ["--prune-method", "fastv", "--prune-ratio", "0.9", "--prune-layer", "5"]),
    (["--use-fast-v", "--fast-v-sequential-prune", "--fast-v-attention-rank", "0.5", "--fast-v-agg-layer", "3",
      "--prune-step", "20"],
     ["--prune-method", "sequential", "--prune-ratio", "0.5", "--prune-layer", "3", "--prune-step", "20"]),
])
def test_original_flags_parse_to_the_new_setting(original, new):
    a, rest_a, _ = parse_flags(original + ["--model", "llava_seqprune"])
    # the original procedure: no KV cache, scores in the model's precision
    b, rest_b, _ = parse_flags(new + ["--cache-mode", "recompute", "--score-dtype", "model",
                                      "--model", "llava_seqprune"])
    assert a.prune == b.prune and a.prune.tag() == b.prune.tag()
    assert rest_a == rest_b == ["--model", "llava_seqprune"]  # --model is not eaten by --model-path


@pytest.mark.parametrize("flags,message", [
    (["--use-fast-v", "--prune-method", "none"], "turns it off"),
    (["--use-fast-v", "--fast-v-sequential-prune", "--prune-method", "fastv"], "means --prune-method sequential"),
    (["--fast-v-sequential-prune"], "only take effect with --use-fast-v"),
    (["--fast-v-attention-rank", "0.5"], "only take effect with --use-fast-v"),
    (["--use-fast-v", "--fast-v-attention-rank", "288", "--fast-v-image-token-length", "576"], "ratio 0.5"),
    (["--use-fast-v", "--fast-v-agg-layer", "2", "--prune-layer", "3"], "contradicts"),
    (["--prune-ratio", "-0.1"], "ratio must be in [0, 1]"),
    (["--prune-layer", "0"], "use a layer >= 1, or a scorer that needs no previous layer"),
    (["--prune-layer", "-1"], "--prune-layer K must be an integer >= 0"),
    (["--prune-step", "0"], "must be in (0, 100]"),
    (["--prune-step", "150"], "must be in (0, 100]"),
    (["--prune-method", "fastv", "--prune-step", "20"], "--prune-step has no effect"),
    (["--prune-method", "sequential", "--prune-seed", "3"], "--prune-seed has no effect"),
    (["--prune-method", "dart", "--prune-option", "pivots=2"], "unknown option(s) ['pivots']"),
    (["--prune-method", "custom"], "--prune-option KEY=VALUE"),
    (["--prune-method", "divprune", "--score-dtype", "model"], "--score-dtype has no effect"),
    (["--prune-budget", "0.3", "--prune-ratio", "0.5"], "not both"),
    (["--prune-option", "stages"], "expected KEY=VALUE"),
    (["--prune-method", "none", "--prune-ratio", "0.5"], "no effect with --prune-method none"),
    (["--prune-ratio", "0", "--cache-mode", "recompute"], "nothing is pruned"),
    (["--attn-impl", "flash"], "invalid choice"),
    (["--model-path", "./no/such/dir"], "neither a local checkpoint directory nor a hub id"),
    (["--model-path", "llava_seqprune=./no/such/dir"], "neither a local checkpoint directory nor a hub id"),
    (["--model-path", "org/a", "org/b"], "takes NAME=PATH pairs"),
    (["--model-path", "llava_seqprune=org/a", "llava_seqprune=org/b"], "names a model twice"),
    (["--max-new-tokens", "0"], "must be an integer >= 1"),
    (["--register-dataset", "Foo"], "expected NAME=KIND"),
    # a stage before the decoder (--prune-before)
    (["--prune-before-ratio", "0.5"], "--prune-before-ratio set the stage before the decoder: add --prune-before"),
    (["--prune-before-option", "contextual_ratio=0.2"], "add --prune-before METHOD"),
    (["--prune-method", "none", "--prune-before", "visionzip"], "run it as --prune-method visionzip"),
    (["--prune-before", "fastv"], "invalid choice"),  # not one-shot at layer 0: not offered
    (["--prune-before", "sequential"], "invalid choice"),
    (["--prune-before", "visionzip", "--prune-before-ratio", "1.5"], "--prune-before-ratio must be in [0, 1]"),
    (["--prune-before", "visionzip", "--prune-before-option", "pivots=2"],
     "unknown option(s) ['pivots'] for method visionzip"),
    (["--prune-before", "visionzip", "--prune-before-option", "pivots=2"], "--prune-before-option KEY=VALUE"),
    (["--prune-before", "visionzip", "--prune-before-option", "contextual_ratio=0.1", "--prune-before-option",
      "contextual_ratio=0.2"], "--prune-before-option repeats a key"),
    (["--prune-before", "visionzip", "--prune-method", "divprune"], "give the decoder-side stage --prune-layer >= 1"),
    (["--prune-before", "visionzip", "--prune-method", "fastervlm", "--prune-layer", "2"],
     "both stages read the vision tower"),
])
def test_bad_flag_combinations_are_refused(capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        parse_flags(flags + ["--model", "llava_seqprune"])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_model_path_takes_one_path_or_a_pair_per_model(tmp_path):
    ckpt = tmp_path / "ck=pt"  # a directory whose name holds '=' is still one path
    ckpt.mkdir()
    s, _, _ = parse_flags(["--model-path", str(ckpt)])
    assert s.model_path == str(ckpt) and s.model_paths == () and s.for_model("any").model_path == str(ckpt)
    s, rest, _ = parse_flags(["--model-path", "llava_seqprune=org/a", "qwen2vl_seqprune=" + str(ckpt), "--model",
                              "llava_seqprune", "qwen2vl_seqprune"])
    assert rest == ["--model", "llava_seqprune", "qwen2vl_seqprune"]
    assert s.model_path is None and dict(s.model_paths) == {"llava_seqprune": "org/a", "qwen2vl_seqprune": str(ckpt)}
    assert s.for_model("qwen2vl_seqprune").model_path == str(ckpt)
    assert s.for_model("internvl_seqprune").model_path is None  # not named: its default checkpoint
    assert "model_paths" not in s.for_model("llava_seqprune").to_dict()  # each model records only its own path


def test_defaults_and_normalisation():
    s, _, _ = parse_flags(["--model", "x"])
    assert s.prune == PruneConfig("sequential", 0.75, 2, 0.1)
    assert s.attn_impl is None and s.protocol is None and s.dtype is None  # the protocol's, resolved per model
    s, _, _ = parse_flags(["--prune-ratio", "0"])  # nothing pruned = the unpruned run, one name for both
    assert s.prune.tag() == "none"
    s, _, _ = parse_flags(["--prune-method", "random", "--prune-seed", "4", "--prune-step", "5"])
    assert s.prune.tag() == "random_r0.75_l2_s5_seed4"


def test_a_before_stage_combines_with_the_decoder_side_setting():
    s, rest, _ = parse_flags(["--prune-method", "sequential", "--prune-ratio", "0.75", "--prune-layer", "2",
                              "--prune-before", "visionzip", "--prune-before-ratio", "0.666", "--model", "x"])
    assert rest == ["--model", "x"]
    assert s.prune == PruneConfig("sequential", 0.75, 2, before=PruneConfig("visionzip", 0.666))
    assert s.prune.tag() == "visionzip_r0.666_l0+sequential_r0.75_l2_s10"
    # options of the before stage; a method whose own K is not 0 (dart) runs at layer 0 before the decoder
    s, _, _ = parse_flags(["--prune-before", "dart", "--prune-before-option", "image_pivots=2"])
    assert (s.prune.before.method, s.prune.before.layer, s.prune.before.options_dict["image_pivots"]) == ("dart", 0, 2)
    assert s.prune.before.ratio == METHODS["dart"].defaults["ratio"]  # the method's default ratio
    # a before stage at ratio 0 prunes nothing: the single-stage run, its name and files
    s, _, _ = parse_flags(["--prune-before", "visionzip", "--prune-before-ratio", "0"])
    assert s.prune == PruneConfig("sequential") and s.prune.tag() == "sequential_r0.75_l2_s10"
    # MileBench takes the same flags
    from SequentialPrune.frontends.milebench.flags import parse

    _, m = parse(["--dataset_name", "X", "--model_name", "llava-v1.5-7b", "--prune-before", "visionzip"])
    assert m.prune.tag() == "visionzip_r0.666_l0+sequential_r0.75_l2_s10"


def test_the_before_choices_are_the_one_shot_methods_that_prune_at_layer_0():
    from SequentialPrune.config import before_methods

    names = before_methods()
    assert {"visionzip", "fastervlm", "divprune", "dart", "random_oneshot"} <= set(names)
    assert not {"fastv", "sequential", "pdrop", "none", "custom"} & set(names)  # layer >= 1 or not one-shot
    for name in names:
        assert METHODS[name].schedule == "oneshot"
        PruneConfig("sequential", before=PruneConfig(name, layer=0))  # what the flag builds is accepted


def test_a_budget_with_a_before_stage_solves_the_decoder_side_ratio():
    s, _, _ = parse_flags(["--prune-budget", "64", "--prune-before", "visionzip"])
    assert s.budget == 64 and s.prune.before == PruneConfig("visionzip")
    cfg = solve_budget(s, LAYERS, N)  # PruneConfig.solve_ratio keeps the before stage
    assert cfg.before == PruneConfig("visionzip") and cfg.tokens_per_layer(N, LAYERS)[0] == 192
    assert cfg.average_image_tokens(N, LAYERS) <= 64 and cfg.ratio != s.prune.ratio


# The vision-side methods (issue 23) through each front end's pruning flags, without a model: the VLMEvalKit
# flags, the MileBench command line and the lmms-eval model_args each take every one with its K = 0 default, and a
# launch solves the papers' equal budgets (192 / 128 / 64 of LLaVA-1.5's 576 tokens, 32 layers) exactly.
VISION = ("fastervlm", "visionzip", "vispruner", "hiprune", "cdpruner")
N, LAYERS = 576, 32


def vlmevalkit(method, budget):
    setting, rest, _ = parse_flags(["--prune-method", method, "--prune-budget", str(budget),
                                    "--model", "llava_seqprune"])
    assert rest == ["--model", "llava_seqprune"]
    return setting


def milebench(method, budget):
    from SequentialPrune.frontends.milebench.flags import parse

    args, setting = parse(["--dataset_name", "X", "--model_name", "llava-v1.5-7b", "--prune-method", method,
                           "--prune-budget", str(budget)])
    assert args.base == "llava_seqprune"
    return setting


def lmms_eval(method, budget):
    from SequentialPrune.frontends.lmms_eval.model_args import parse_model_args

    setting, _ = parse_model_args({"prune_method": method, "prune_budget": budget})
    return setting


@pytest.mark.parametrize("method, solved", list(zip(VISION, (192, 128, 64, 192, 64))))
def test_every_front_end_takes_each_vision_method_at_the_equal_budgets(method, solved):
    assert method in METHODS  # the front ends' choices are the registry's
    for budget in (192, 128, 64):
        settings = [f(method, budget) for f in (vlmevalkit, milebench, lmms_eval)]
        for s in settings:
            assert (s.prune.method, s.prune.layer, s.budget) == (method, 0, budget)
        assert settings[0].prune == settings[1].prune == settings[2].prune  # the method's own defaults
    # the launch solves R per model (one budget per method here: each solve tries 10,001 ratios)
    cfg = solve_budget(replace(settings[0], budget=solved), LAYERS, N)
    assert (cfg.method, cfg.layer, cfg.options) == (method, 0, settings[0].prune.options)
    assert cfg.tokens_per_layer(N, LAYERS) == [solved] * LAYERS  # one-shot before layer 0
