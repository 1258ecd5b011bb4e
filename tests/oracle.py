"""An independent masked reference for pruning.

The reference never removes a token. It runs the full sequence with eager
attention and, from each pruning layer on, masks every dropped image token out
of attention as a key. Which tokens it drops it decides itself, from the eager
attention weights (last row, mean over heads) of the previous layer, among the
image tokens not yet dropped. Physical removal must match it: masked keys get
zero probability, so the kept tokens see exactly what they would see without
the dropped ones.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

NAME = "seqprune_test_masked_reference"
_ACTIVE = {}


def _reference_attention(module, query, key, value, attention_mask, **kwargs):
    eager = sys.modules[type(module).__module__].eager_attention_forward
    ref = _ACTIVE.get(id(module))
    if ref is None:
        return eager(module, query, key, value, attention_mask, **kwargs)
    return ref.attend(eager, module, query, key, value, attention_mask, kwargs)


AttentionInterface.register(NAME, _reference_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


class MaskedReference:
    """Masked-reference pruning for one prompt batch; ``plan`` = {layer: image tokens kept}."""

    def __init__(self, model, layers, visual_ids, plan, scorer=None):
        self.model, self.layers, self.plan = model, layers, plan
        self.visual_ids = torch.tensor(visual_ids)
        # None: attention; else callable(layer, present (B, L) bool) -> (B, L) scores
        self.scorer = scorer
        self.dropped_from = {}  # layer -> (B, L) bool of keys masked at that layer and after
        self.kept_image_indices = {}
        self.scores = {}

    def start(self, input_ids):
        self.visual = torch.isin(input_ids, self.visual_ids)
        self.dropped = torch.zeros_like(self.visual)
        self.layer_dropped = {}
        self.kept_image_indices, self.scores = {}, {}

    def attend(self, eager, module, query, key, value, mask, kwargs):
        i = module.layer_idx
        prefill = query.shape[2] > 1
        if prefill and i in self.plan:
            self._select(i)
        if prefill:
            self.layer_dropped[i] = self.dropped.clone()
        drop = self.layer_dropped.get(i)
        b, kv = key.shape[0], key.shape[2]
        if mask is None:
            mask = torch.zeros(b, 1, query.shape[2], kv, dtype=query.dtype)
            if prefill:
                mask = mask.masked_fill(torch.ones(query.shape[2], kv, dtype=torch.bool).triu(1),
                                        torch.finfo(query.dtype).min)
        mask = mask[..., :kv].expand(b, -1, -1, -1).clone()
        if drop is not None and drop.any():
            cols = torch.zeros(b, kv, dtype=torch.bool)
            cols[:, :drop.shape[1]] = drop
            mask = mask.masked_fill(cols[:, None, None, :], torch.finfo(mask.dtype).min)
        out, weights = eager(module, query, key, value, mask, **kwargs)
        if prefill and (i + 1) in self.plan:
            self.scores[i] = weights[:, :, -1, :].float().mean(dim=1)
        return out, weights

    def _select(self, i):
        alive = self.visual & ~self.dropped
        n_alive = int(alive[0].sum())
        k = min(self.plan[i], n_alive)
        if k == n_alive:
            return
        if self.scorer is None:
            s = self.scores[i - 1]
        else:
            s = self.scorer(i, ~self.dropped)
        s = s.masked_fill(~alive, float("-inf"))
        top = s.topk(k, dim=1).indices
        keep = torch.zeros_like(alive).scatter(1, top, True)
        self.dropped = self.dropped | (alive & ~keep)
        rank = torch.cumsum(self.visual.long(), 1) - 1
        kept = self.visual & ~self.dropped
        self.kept_image_indices[i] = rank[kept].view(kept.shape[0], -1)


@contextmanager
def masked_reference(model, plan, visual_ids, scorer=None):
    # plan: {layer: image tokens kept entering it}, from the config under test
    """Run ``model`` as the masked reference of ``plan`` inside the block.

    Every forward on an empty cache starts a new prompt.
    """
    text_cfg = model.config.text_config
    orig = text_cfg._attn_implementation
    layers = model.model.language_model.layers
    ref = MaskedReference(model, layers, visual_ids, plan, scorer)
    model.set_attn_implementation({"text_config": NAME})
    for layer in layers:
        _ACTIVE[id(layer.self_attn)] = ref

    def on_call(module, args, kwargs):
        pkv = kwargs.get("past_key_values")
        if pkv is None or pkv.get_seq_length() == 0:
            ref.start(kwargs["input_ids"] if "input_ids" in kwargs else args[0])

    handle = model.register_forward_pre_hook(on_call, with_kwargs=True)
    try:
        yield ref
    finally:
        handle.remove()
        for layer in layers:
            _ACTIVE.pop(id(layer.self_attn), None)
        model.set_attn_implementation({"text_config": orig})
