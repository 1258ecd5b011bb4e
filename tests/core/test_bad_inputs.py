"""Every unsupported input fails loudly, naming the fix; pruning never silently does nothing."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from SequentialPrune import PruneConfig, apply_pruning
from tiny_models import IMAGE_ID, build_model, make_inputs

pytestmark = pytest.mark.core  # also run on the oldest supported transformers in CI

CFG = PruneConfig("sequential", 0.75, 2)


@pytest.fixture
def llava():
    model = build_model("llava")
    with apply_pruning(model, CFG) as pruner:
        yield model, pruner


def test_unknown_model_is_refused():
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2))
    with pytest.raises(ValueError, match="LlamaForCausalLM is not supported"):
        apply_pruning(lm, CFG)


def test_qwen3_5_is_refused_with_the_reason():
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration
    text = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                num_key_value_heads=1, head_dim=16, linear_conv_kernel_dim=4, linear_key_head_dim=8,
                linear_value_head_dim=8, linear_num_key_heads=1, linear_num_value_heads=2,
                layer_types=["linear_attention"] * 3 + ["full_attention"],
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                                 "mrope_section": [1, 1, 0], "mrope_interleaved": True})
    vision = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, patch_size=16, out_hidden_size=32,
                  num_position_embeddings=16)
    model = Qwen3_5ForConditionalGeneration(Qwen3_5Config(text_config=text, vision_config=vision,
                                                          image_token_id=60, video_token_id=61))
    with pytest.raises(ValueError, match="Qwen3_5ForConditionalGeneration is not supported.*linear-attention"):
        apply_pruning(model, CFG)


def test_a_scorer_keeping_the_wrong_count_is_caught(llava):
    from dataclasses import dataclass

    from SequentialPrune import SCORERS, Scorer, register_scorer

    @register_scorer("test_keeps_all")
    @dataclass
    class KeepsAll(Scorer):
        def select(self, inp):
            return inp.visual.clone()  # a keep mask with every image token: not what the schedule asks
    try:
        model = build_model("llava")
        with apply_pruning(model, PruneConfig("fastv", 0.5, 0, scorer="test_keeps_all")):
            with pytest.raises(RuntimeError, match=r"kept \[64\] image tokens, the schedule asks for 32"):
                model(**make_inputs("llava"))
    finally:
        SCORERS.pop("test_keeps_all")


def test_schedule_that_does_not_fit_the_model():
    model = build_model("llava", num_layers=8)
    with pytest.raises(ValueError, match="prunes up to layer 8, but the decoder has only 8 layers"):
        apply_pruning(model, CFG)
    with pytest.raises(ValueError, match="must be < the number of decoder layers"):
        apply_pruning(model, PruneConfig("fastv", 0.5, 8))


def test_applying_twice_is_refused(llava):
    model, _ = llava
    with pytest.raises(ValueError, match="already has a pruner"):
        apply_pruning(model, CFG)


def test_pixels_without_image_tokens(llava):
    model, _ = llava
    inputs = make_inputs("llava")
    inputs["input_ids"][inputs["input_ids"] == IMAGE_ID] = 7  # e.g. a wrong image-token id
    with pytest.raises(ValueError, match="no image token"):
        model(**inputs)


def test_inputs_embeds_without_input_ids(llava):
    model, _ = llava
    embeds = model.get_input_embeddings()(torch.randint(3, 100, (1, 10)))
    with pytest.raises(ValueError, match="pass\\s+input_ids"):
        model(inputs_embeds=embeds)


def test_right_padding(llava):
    model, _ = llava
    inputs = make_inputs("llava", batch=2, suffixes=[9, 4])
    inputs["input_ids"] = inputs["input_ids"].flip(1)  # pads last, image tokens still 64 per row
    inputs["attention_mask"] = inputs["attention_mask"].flip(1)
    with pytest.raises(ValueError, match="padding_side = 'left'"):
        model(**inputs)


def test_a_prompt_ending_on_an_image_token_is_refused(llava):
    model, _ = llava
    inputs = make_inputs("llava")
    ids = inputs["input_ids"]
    inputs["input_ids"] = torch.cat([ids[:, ~(ids[0] == IMAGE_ID)][:, :4], ids[:, ids[0] == IMAGE_ID]], 1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    with pytest.raises(ValueError, match="ends on an image token"):
        model(**inputs)


@pytest.mark.parametrize("cfg", [PruneConfig("fastv", 0.75, 2), PruneConfig("divprune", 0.75)], ids=["k2", "k0"])
def test_a_stale_or_copied_pruned_cache_is_refused(cfg):
    """A cache pruned by an earlier prefill, or a copy of the current one, is refused at any K (at K = 0 every
    layer is equally short, so lengths cannot tell); the current cache still decodes as before."""
    import copy

    model = build_model("llava")
    a, b = make_inputs("llava"), make_inputs("llava", seed=1)
    nxt = torch.tensor([[5]])
    with torch.no_grad(), apply_pruning(model, cfg):
        out_a = model(**a, use_cache=True)
        copied = copy.deepcopy(out_a.past_key_values)
        with pytest.raises(ValueError, match="no longer the latest"):
            model(input_ids=nxt, past_key_values=copied)
        want = model(input_ids=nxt, past_key_values=out_a.past_key_values).logits
        out_a = model(**a, use_cache=True)
        model(**b, use_cache=True)
        with pytest.raises(ValueError, match="no longer the latest"):
            model(input_ids=nxt, past_key_values=out_a.past_key_values)
        out_a = model(**a, use_cache=True)
        assert torch.equal(model(input_ids=nxt, past_key_values=out_a.past_key_values).logits, want)


def test_static_mode_refuses_generating_without_the_cache(llava):
    """generate(use_cache=False) re-runs the prompt at every step and would re-select the image tokens each
    time, which is cache_mode='recompute', not the static setting the results would be labelled with."""
    model, _ = llava
    with pytest.raises(ValueError, match="that is cache_mode='recompute'"):
        model.generate(**make_inputs("llava"), max_new_tokens=3, use_cache=False, do_sample=False)
    model(**make_inputs("llava"), use_cache=False)  # one forward without a cache is fine
    model(**make_inputs("llava", seed=1), use_cache=False)


def test_scoring_a_continuation_without_a_cache_is_two_fresh_prefills():
    """The log-likelihood pattern: model(prompt) then model(prompt + answer), both without a cache. Outside
    generate each call is its own prefill: the second equals the same call on a freshly pruned model."""
    model = build_model("llava")
    prompt = make_inputs("llava")
    answer = torch.tensor([[7, 9, 11]])
    longer = {**prompt, "input_ids": torch.cat([prompt["input_ids"], answer], 1),
              "attention_mask": torch.ones(1, prompt["input_ids"].shape[1] + 3, dtype=torch.long)}
    with torch.no_grad():
        with apply_pruning(model, CFG) as pruner:
            model(**prompt, use_cache=False)
            got = model(**longer, use_cache=False).logits
            assert pruner.stats.prefills == 2 and pruner.stats.seq_len == longer["input_ids"].shape[1]
            with pytest.raises(ValueError, match="that is cache_mode='recompute'"):  # generate still refuses
                model.generate(**prompt, max_new_tokens=2, use_cache=False, do_sample=False)
            with pytest.raises(ValueError, match="that is cache_mode='recompute'"):  # a failed generate is over
                model.generate(**prompt, max_new_tokens=2, use_cache=False, do_sample=False)
            model(**prompt, use_cache=False)
            assert torch.equal(model(**longer, use_cache=False).logits, got)
        with apply_pruning(model, CFG):
            want = model(**longer, use_cache=False).logits
    assert torch.equal(got, want)
    assert "generate" not in vars(model)  # remove() put the class's generate back


def test_static_cache(llava):
    model, _ = llava
    with pytest.raises(ValueError, match="DynamicCache"):
        model.generate(**make_inputs("llava"), max_new_tokens=2, cache_implementation="static")


def test_assisted_decoding(llava):
    model, _ = llava
    draft = build_model("llava", seed=1)
    with pytest.raises(ValueError, match="one token at a time"):
        model.generate(**make_inputs("llava"), max_new_tokens=4, assistant_model=draft, do_sample=False)


def test_continuing_from_a_non_empty_cache(llava):
    model, _ = llava
    inputs = make_inputs("llava")
    out = model(**inputs, use_cache=True)
    with pytest.raises(ValueError, match="in one prefill from an empty cache"):
        model(**make_inputs("llava", seed=1), past_key_values=out.past_key_values)
    more = torch.randint(3, 100, (1, 3))
    with pytest.raises(ValueError, match="one token at a time"):
        model(input_ids=more, past_key_values=out.past_key_values)


def test_chunked_prefill(llava):
    model, _ = llava
    with pytest.raises(ValueError, match="no prefill_chunk_size"):
        model.generate(**make_inputs("llava"), max_new_tokens=3, prefill_chunk_size=8)


def test_labels_are_refused(llava):
    model, _ = llava
    inputs = make_inputs("llava")
    with pytest.raises(ValueError, match="labels"):
        model(**inputs, labels=inputs["input_ids"])


def test_attention_swapped_after_apply_is_detected(llava):
    model, _ = llava
    model.set_attn_implementation({"text_config": "sdpa"})
    with pytest.raises(RuntimeError, match="attention wrapper did not run"):
        model(**make_inputs("llava"))


def test_layer_hooks_lost_is_detected(llava):
    model, pruner = llava
    for h in pruner._handles[2:]:  # the decoder layers' pre-hooks: nothing would be pruned
        h.remove()
    with pytest.raises(RuntimeError, match=r"layers \[0, 1, 2, .*11\] ran without the pruning hooks"):
        model(**make_inputs("llava"))


def test_recompute_mode_requires_use_cache_false():
    model = build_model("llava")
    with apply_pruning(model, CFG.replace(cache_mode="recompute")):
        with pytest.raises(ValueError, match="use_cache=False"):
            model(**make_inputs("llava"), use_cache=True)
        model(**make_inputs("llava"))  # a plain forward is switched to no cache


def test_removing_an_old_pruner_leaves_a_newer_one_working():
    model = build_model("llava")
    inputs = make_inputs("llava")
    with torch.no_grad():
        plain = model(**inputs).logits
        old = apply_pruning(model, CFG)
        old.remove()
        new = apply_pruning(model, CFG)
        pruned = model(**inputs).logits
        old.remove()  # a stale handle removed again: must not touch the newer pruner
        assert model.config.text_config._attn_implementation.startswith("seqprune_")
        again = model(**inputs).logits
        assert torch.equal(again, pruned) and not torch.equal(pruned, plain)
        new.remove()
        assert model.config.text_config._attn_implementation == "sdpa"
        assert torch.equal(model(**inputs).logits, plain)


def test_deep_copying_a_pruned_model_is_refused(llava):
    import copy
    model, _ = llava
    with pytest.raises(TypeError, match=r"remove\(\).*copy.*apply_pruning"):
        copy.deepcopy(model)


def test_pickling_a_pruned_model_is_refused(llava):
    import pickle
    model, pruner = llava
    with pytest.raises(TypeError, match=r"cannot pickle.*remove\(\)"):
        pickle.dumps(model)
    pruner.remove()
    assert pickle.loads(pickle.dumps(model)) is not None  # unpruned again: pickles as usual
