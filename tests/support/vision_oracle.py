"""The test's own vision-tower scores for the vision-side methods (FasterVLM), per family, from eager attention
weights (``output_attentions=True``; a recording attention function for the Qwen towers, which return none)
and the slow rules of ``SequentialPrune.testing.reference_vision``, independent of the library's capture."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import List

import torch
from transformers import AttentionInterface

from SequentialPrune.testing import reference_vision as rv
from tiny_models import IMAGE_ID, QWEN, VIDEO_ID

RECORD = "seqprune_test_vision_record"
_CALLS: List[tuple] = []


def _record(module, query, key, value, attention_mask, **kwargs):
    out, weights = sys.modules[type(module).__module__].eager_attention_forward(
        module, query, key, value, attention_mask, **kwargs)
    _CALLS.append((module, weights.detach()))
    return out, weights


AttentionInterface.register(RECORD, _record)


def vision_attention_modules(model):
    """The tower's attention modules in layer order (the test's own list, by module type name)."""
    names = ("CLIPAttention", "SiglipAttention", "InternVLVisionAttention", "VisionAttention")
    return [m for m in model.modules() if type(m).__name__ in names or type(m).__name__.endswith("VLVisionAttention")
            or type(m).__name__.endswith("VLMoeVisionAttention")]


def sharpen(model, factor: float = 3.0) -> None:
    """Scale the tower's query and key projections: the tiny random towers attend almost uniformly, and a ranking
    decided by float rounding would make the comparison with the reference a coin toss."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("cls_token") and not p.any():  # InternViT's zero CLS would query nothing
                p.copy_(torch.randn(p.shape, generator=g))
        for m in vision_attention_modules(model):
            if hasattr(m, "qkv"):  # Qwen: fused q, k, v rows; received attention is flatter than a CLS row
                d = m.qkv.weight.shape[0] // 3
                m.qkv.weight[:2 * d] *= 3 * factor
                m.qkv.bias[:2 * d] *= 3 * factor
            else:
                for proj in (m.q_proj, m.k_proj):
                    proj.weight *= factor
                    if proj.bias is not None:
                        proj.bias *= factor


@contextmanager
def eager_vision(model, recorder: bool = False):
    """The vision tower on eager attention (or the recording function) inside the block."""
    cfg = model.config.vision_config
    orig = cfg._attn_implementation
    model.set_attn_implementation({"vision_config": RECORD if recorder else "eager"})
    _CALLS.clear()
    try:
        yield _CALLS
    finally:
        model.set_attn_implementation({"vision_config": orig})


NEWLINE = -1.0  # the library's documented rank for LLaVA-NeXT / OneVision newline tokens: below every patch


def _tower_pixels(family, inputs):
    pix = inputs["pixel_values"]
    return pix.flatten(0, 1) if pix.dim() == 5 else pix  # NeXT / OneVision: every crop of the tiny images is used


def _anyres_layout(crops: List[List[float]], side: int) -> List[float]:
    """The tiny NeXT / OneVision image: the base crop, then one tile whose rows each end in a newline."""
    base, tile = crops
    out = list(base)
    for r in range(side):
        out += tile[r * side:(r + 1) * side] + [NEWLINE]
    return out


def _anyres_rows(crops: torch.Tensor, side: int) -> torch.Tensor:
    """As :func:`_anyres_layout` for per-token vectors ``(2, T, C)``: a newline token has no vision-tower patch,
    so its row is NaN (the references leave such tokens out of a feature method's candidates)."""
    base, tile = crops
    nan = torch.full((1, crops.shape[-1]), float("nan"), dtype=crops.dtype)
    return torch.cat([base] + [torch.cat([tile[r * side:(r + 1) * side], nan]) for r in range(side)])


def window_index(model, grid_thw):
    from transformers.vision_utils import get_vision_window_index
    v = model.model.visual
    return get_vision_window_index(grid_thw, spatial_merge_size=v.spatial_merge_size, window_size=v.window_size,
                                   patch_size=v.patch_size)[0].tolist()


def qwen_scores(model, inputs, calls, block: int = -1) -> List[float]:
    """Per LLM image token (all images, in order): the attention each vision token receives at ``block`` (the
    last by default), head mean, query mean over its image, pooled per 2x2 merge group, un-windowed
    (Qwen2.5-VL)."""
    last = model.model.visual.blocks[block].attn
    chunks = [w[0].double() for m, w in calls if m is last]
    attn = rv.block_diagonal(chunks)  # the whole packed sequence, in the tower's order
    grid = inputs["image_grid_thw"]
    out, s = [], 0
    for t, h, w in grid.tolist():
        n = t * h * w
        received = rv.received_attention(attn[:, s:s + n, s:s + n])
        out += rv.pool_groups(received, rv.qwen_merge_groups(n))
        s += n
    if hasattr(model.model.visual, "window_size"):
        out = rv.unwindow(out, window_index(model, grid))
    return out


def reference_scores(model, family: str, inputs, received: bool = False, layer=None) -> List[List[float]]:
    """Per batch row, one vision score per prompt image token, in prompt order: the CLS row where the tower has
    CLS, else (or with ``received``) the attention each token receives (query mean over all queries, CLS's
    included, CLS column dropped), at the select layer or at 0-based ``layer``."""
    with torch.no_grad(), eager_vision(model, recorder=family in QWEN) as calls:
        if family in QWEN:
            model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
            flat = qwen_scores(model, inputs, calls, -1 if layer is None else layer)
        else:
            out = model.model.vision_tower(_tower_pixels(family, inputs), output_attentions=True, return_dict=True)
            at = model.config.vision_feature_layer if layer is None else layer
            attn = out.attentions[at].double()  # (images or crops, H, T, T)
            if family == "llava_onevision":  # SigLIP: no CLS, "full" strategy
                per = [rv.received_attention(a) for a in attn]
            elif received:
                per = [rv.received_attention(a, drop_cls=True) for a in attn]
            else:
                per = [rv.cls_attention(a) for a in attn]
            if family == "internvl":
                side = int(len(per[0]) ** 0.5)
                per = [rv.pool_groups(p, rv.internvl_pixel_shuffle_groups(side)) for p in per]
            if family in ("llava_next", "llava_onevision"):
                side = int(len(per[0]) ** 0.5)
                per = [_anyres_layout(per[i:i + 2], side) for i in range(0, len(per), 2)]
            flat = [x for p in per for x in p]
    visual = torch.isin(inputs["input_ids"], torch.tensor([IMAGE_ID, VIDEO_ID]))
    counts = visual.sum(dim=1).tolist()
    assert sum(counts) == len(flat), (counts, len(flat))
    rows, s = [], 0
    for c in counts:
        rows.append(flat[s:s + c])
        s += c
    return rows


def reference_features(model, family: str, inputs) -> List[torch.Tensor]:
    """Per batch row, ``(N, C)``: each prompt image token's pre-projector feature, from the tower's own outputs
    (LLaVA: the select layer's hidden states, CLS dropped; InternVL: the last hidden state, CLS dropped, each
    LLM token's 2x2 patches concatenated in pixel-shuffle order; Qwen: the merger's input, 4 consecutive tokens
    concatenated, un-windowed for Qwen2.5-VL; LLaVA-NeXT / OneVision: each crop's select-layer states, laid out
    as the test's tiny images are, NaN at newline tokens)."""
    with torch.no_grad():
        if family in QWEN:
            grid = inputs["image_grid_thw"]
            hidden = model.model.visual(inputs["pixel_values"], grid_thw=grid).last_hidden_state
            groups = list(hidden.reshape(-1, 4 * hidden.shape[-1]))
            if hasattr(model.model.visual, "window_size"):
                groups = rv.unwindow(groups, window_index(model, grid))
            flat = torch.stack(groups)
        else:
            out = model.model.vision_tower(_tower_pixels(family, inputs), output_hidden_states=True, return_dict=True)
            if family == "internvl":
                hidden = out.last_hidden_state[:, 1:]
                side = int(hidden.shape[1] ** 0.5)
                flat = torch.cat([torch.stack([torch.cat([h[i] for i in g]) for g in rv.internvl_pixel_shuffle_groups(
                    side)]) for h in hidden])
            elif family == "llava":
                flat = out.hidden_states[model.config.vision_feature_layer][:, 1:].flatten(0, 1)
            elif family in ("llava_next", "llava_onevision"):
                hidden = out.hidden_states[model.config.vision_feature_layer]
                hidden = hidden if family == "llava_onevision" else hidden[:, 1:]  # SigLIP has no CLS
                side = int(hidden.shape[1] ** 0.5)
                flat = torch.cat([_anyres_rows(hidden[i:i + 2], side) for i in range(0, hidden.shape[0], 2)])
            else:
                raise ValueError(f"no reference features for {family}")
    counts = torch.isin(inputs["input_ids"], torch.tensor([IMAGE_ID, VIDEO_ID])).sum(dim=1).tolist()
    return list(torch.split(flat, counts))
