"""Attention-function wrappers that compute the last-token score on the way through.

For each stock implementation (sdpa, eager, flash attention) we register a
wrapper under ``seqprune_<name>`` in transformers' ``AttentionInterface`` and
the stock mask function under the same name in ``AttentionMaskInterface``
(without the latter, masking_utils returns no mask and padding is ignored).
The wrapper calls the stock function unchanged; when the module belongs to a
pruner that wants this layer's score, it first computes it from the query and
key states it was handed, so ``output_attentions`` is never needed.
"""
from __future__ import annotations

import sys
from typing import Dict, Optional

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

PREFIX = "seqprune_"
# id(attention module) -> callback(module, query, key, attention_mask, kwargs)
_ROUTES: Dict[int, object] = {}


def wrapped_name(base: str) -> str:
    return base if base.startswith(PREFIX) else PREFIX + base


def _stock_function(module, base: str):
    if base == "eager":
        # Eager attention is defined per model file, not in the global registry.
        fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if fn is None:
            raise RuntimeError(f"{type(module).__name__} has no eager_attention_forward in its model file")
        return fn
    return ALL_ATTENTION_FUNCTIONS[base]


def _make_wrapper(base: str):
    def attention(module, query, key, value, attention_mask, **kwargs):
        route = _ROUTES.get(id(module))
        if route is not None:
            route(module, query, key, attention_mask, kwargs)
        return _stock_function(module, base)(module, query, key, value, attention_mask, **kwargs)
    attention.__name__ = f"{PREFIX}{base}_attention"
    return attention


def ensure_registered(base: str) -> str:
    """Register the wrapper of stock implementation ``base``; return its name."""
    if base != "eager" and base not in ALL_ATTENTION_FUNCTIONS:
        raise ValueError(
            f"attention implementation {base!r} is not supported for pruning; use 'sdpa', 'eager' or a flash attention")
    if base not in ALL_MASK_ATTENTION_FUNCTIONS:
        raise ValueError(f"attention implementation {base!r} has no mask function; use 'sdpa', 'eager' or flash attention")
    name = wrapped_name(base)
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _make_wrapper(base))
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    return name


def route(module, callback) -> None:
    _ROUTES[id(module)] = callback


def unroute(module, callback) -> None:
    """Drop ``module``'s route if it is still ``callback`` (a newer pruner's route is left alone)."""
    if _ROUTES.get(id(module)) is callback:
        del _ROUTES[id(module)]


def last_row_validity(attention_mask: Optional[torch.Tensor], batch: int, kv_len: int):
    """The last query row of the mask as an additive float32 bias (batch, kv_len), or None."""
    if attention_mask is None:
        return None
    m = attention_mask
    if m.dim() == 4:
        row = m[:, 0, -1, :kv_len]
    elif m.dim() == 2:  # flash attention: (batch, kv_len) padding mask, 1 = keep
        row = m[:, :kv_len].bool()
    else:
        raise ValueError(f"unexpected attention mask of shape {tuple(m.shape)}")
    if row.dtype == torch.bool:
        bias = torch.zeros(row.shape, dtype=torch.float32, device=row.device)
        bias.masked_fill_(~row, float("-inf"))
    else:
        bias = row.float()
    return bias.expand(batch, kv_len)


def last_token_scores(query: torch.Tensor, key: torch.Tensor, attention_mask, scaling: Optional[float],
                      precision: str = "float32") -> torch.Tensor:
    """The last query row's attention probabilities, averaged over query heads: (batch, kv_len).

    ``precision="float32"``: ``softmax(q_last K^T * scaling + mask)`` computed in
    float32 (grouped-query attention is folded onto the key-value heads instead
    of repeating the keys). ``precision="model"``: what eager attention in the
    model's dtype gives, as the original research code ranked: logits in the
    model's dtype, softmax in float32 cast back to it, mean over heads in it
    (the logits are the last row of the full ``q K^T``, so they are eager's bits).
    """
    b, hq, _, d = query.shape
    hkv, kv_len = key.shape[1], key.shape[2]
    if scaling is None:
        scaling = d ** -0.5
    bias = last_row_validity(attention_mask, b, kv_len)
    if precision == "model":
        dtype = query.dtype
        k = key.repeat_interleave(hq // hkv, dim=1) if hq != hkv else key
        # The whole query block, as eager attention multiplies it: a one-row product may take another kernel
        # (GEMV rather than GEMM) whose half-precision rounding differs on some CPUs and GPUs.
        logits = torch.matmul(query, k.transpose(2, 3))[:, :, -1:, :] * scaling
        if bias is not None:
            bias = bias.to(logits.device).clamp(min=torch.finfo(dtype).min).to(dtype)
            logits = logits + bias[:, None, None, :]
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32).to(dtype)
        return probs[:, :, 0, :].mean(dim=1)
    q = query[:, :, -1, :].float().reshape(b, hkv, hq // hkv, d)
    logits = torch.einsum("bgrd,bgkd->bgrk", q, key.float()) * scaling
    if bias is not None:
        logits = logits + bias.to(logits.device)[:, None, None, :]
    probs = torch.softmax(logits, dim=-1)
    return probs.reshape(b, hq, kv_len).mean(dim=1)
