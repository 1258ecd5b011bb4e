"""The log-probability of a continuation under a pruned model, as generation would see it.

A harness that scores answers by likelihood (lmms-eval's ``loglikelihood``) usually runs one forward over
context + continuation. Under pruning that would rank the image tokens by the continuation's last token, so
the answer being scored would choose which image tokens it sees. Here the continuation is scored the way
``generate`` produces it: ``generate`` itself runs, with every step forced to the continuation's next token,
and the scores are its raw logits. The context is therefore pruned once, ranked by its own last token, and
the continuation decoded on the pruned KV cache (``cache_mode="static"``), or, with ``recompute``, every
prefix re-run without a cache (``cache_mode="recompute"``); each family's decode positions are generate's.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from transformers import LogitsProcessor, LogitsProcessorList


class _Forced(LogitsProcessor):
    """Makes step j choose ``tokens[j]`` (the raw logits, which are what is scored, are left as they are)."""

    def __init__(self, tokens: Sequence[int], prompt_len: int):
        self.tokens, self.prompt_len = list(tokens), prompt_len

    def __call__(self, input_ids, scores):
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.tokens[input_ids.shape[1] - self.prompt_len]] = 0.0
        return forced


def continuation_logprob(model, inputs: dict, continuation: Sequence[int], recompute: bool = False
                         ) -> Tuple[float, bool]:
    """(sum of log p(token | before), whether greedy decoding gives every token) of ``continuation`` after the
    prompt ``inputs`` (a batch of one, as the processor returns it)."""
    tokens = [int(t) for t in continuation]
    if not tokens:
        raise ValueError("the continuation has no tokens")
    ids = inputs["input_ids"]
    if ids.shape[0] != 1:
        raise ValueError(f"continuation_logprob scores one prompt at a time, got a batch of {ids.shape[0]}")
    n = len(tokens)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1,
                             logits_processor=LogitsProcessorList([_Forced(tokens, ids.shape[1])]),
                             output_logits=True, return_dict_in_generate=True, use_cache=not recompute)
    if len(out.logits) != n:  # generate stopped early: an end-of-sequence token inside the continuation
        raise ValueError(f"generate stopped after {len(out.logits)} of the continuation's {n} tokens (an "
                         "end-of-sequence token before its end?)")
    total, greedy = 0.0, True
    for logits, token in zip(out.logits, tokens):
        logp = torch.log_softmax(logits[0].float(), dim=-1)
        total += float(logp[token])
        greedy = greedy and int(logp.argmax()) == token
    return total, greedy
