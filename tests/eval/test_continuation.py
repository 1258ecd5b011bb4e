"""A continuation's log-probability under pruning equals what generate assigns to it, in both cache modes."""
import pytest
import torch
from tiny_models import build_model, make_inputs

from SequentialPrune import PruneConfig, apply_pruning
from SequentialPrune.evaluation.continuation import continuation_logprob

NEW = 4


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
@pytest.mark.parametrize("cache_mode", ["static", "recompute"])
def test_the_greedy_continuation_scores_as_generate_logits_say(family, cache_mode):
    model = build_model(family)
    inputs = make_inputs(family)
    cfg = PruneConfig("sequential", 0.75, 2, cache_mode=cache_mode)
    with torch.no_grad(), apply_pruning(model, cfg) as pruner:
        out = model.generate(**inputs, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, use_cache=cache_mode == "static")
        tokens = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
        want = sum(float(torch.log_softmax(lg[0].float(), -1)[t]) for lg, t in zip(out.logits, tokens))
        got, greedy = continuation_logprob(model, inputs, tokens, recompute=cache_mode == "recompute")
        assert pruner.stats.image_tokens_per_layer == cfg.tokens_per_layer(pruner.stats.n_image_tokens, 12)
        other = tokens[:-1] + [(tokens[-1] + 1) % model.config.text_config.vocab_size]
        worse, other_greedy = continuation_logprob(model, inputs, other, recompute=cache_mode == "recompute")
    assert greedy and not other_greedy
    assert got == pytest.approx(want, abs=1e-4) and worse < got


def test_a_batch_or_an_empty_continuation_is_refused():
    model = build_model("llava")
    with pytest.raises(ValueError, match="no tokens"):
        continuation_logprob(model, make_inputs("llava"), [])
    with pytest.raises(ValueError, match="one prompt at a time"):
        continuation_logprob(model, make_inputs("llava", batch=2), [5])
