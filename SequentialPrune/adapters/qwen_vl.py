"""Qwen2-VL, Qwen2.5-VL, Qwen3-VL (dense and MoE): M-RoPE positions; Qwen3-VL's DeepStack."""
from __future__ import annotations

import torch

import sys

from .base import CoordsContext, FamilyAdapter, register_adapter, run_coords, stack_rows, visual_runs

IDS = ("image_token_id", "video_token_id")
PIXELS = ("pixel_values", "pixel_values_videos")


def mrope_coords(adapter, ctx: CoordsContext) -> torch.Tensor:
    """Coordinates read off the M-RoPE positions the text model receives: rows (t, h, w) of
    ``position_ids`` (3, B, L), or rows 1-3 of the (4, B, L) form ``generate`` passes. A segment is a
    run of visual tokens with one temporal position (an image, or one frame group of a video)."""
    pos = ctx.text_kwargs.get("position_ids")
    if pos is None or pos.dim() != 3 or pos.shape[0] not in (3, 4):
        return run_coords(adapter, ctx)
    thw = pos[-3:].cpu()
    rows = []
    for r in range(ctx.visual.shape[0]):
        out, seg = [], 0
        for start, n in visual_runs(ctx.visual[r]):
            t, h, w = (thw[k, r, start:start + n] for k in range(3))
            cut = torch.cat([torch.tensor([True]), t[1:] != t[:-1]])
            for piece in torch.tensor_split(torch.arange(n), cut.nonzero().flatten()[1:].tolist()):
                hh, ww = h[piece], w[piece]
                out.append(torch.stack([torch.full_like(hh, seg), hh - hh.min(), ww - ww.min()], 1))
                seg += 1
        rows.append(torch.cat(out) if out else torch.zeros(0, 3, dtype=torch.long))
    return stack_rows(rows)


class _Restore:
    """A handle that deletes the instance attribute shadowing a method."""

    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def remove(self):
        self.obj.__dict__.pop(self.name, None)


def deepstack_installer(adapter, pruner) -> list:
    """Qwen3-VL adds DeepStack features to the visual tokens after the first decoder layers, with the
    full-length ``visual_pos_masks``. When a layer before them prunes (K <= 2), the mask and the feature
    rows must follow the kept tokens: the text model's ``_deepstack_process`` is shadowed on this instance
    by a wrapper that gathers both and calls the stock method (removed with the pruner)."""
    lm = adapter.text_model(pruner.model)
    stock = getattr(lm, "_deepstack_process", None)
    if stock is None:
        raise ValueError(f"{type(lm).__name__} has no _deepstack_process: this transformers version's Qwen3-VL "
                         "layout is not supported")

    def deepstack_process(hidden_states, visual_pos_masks, visual_embeds):
        kept = pruner.kept_positions()
        # after a pruning layer the hidden states hold the kept slots (in a batch, padding slots too, which
        # point at each row's last token: never visual), even when there happen to be as many as the prompt's
        if kept is not None:
            vm = visual_pos_masks.to(kept.device)
            # row of each visual token in visual_embeds: row-major over (batch, position)
            rank = vm.flatten().long().cumsum(0).view_as(vm) - 1
            vm_kept = vm.gather(1, kept)
            return stock(hidden_states, vm_kept, visual_embeds[rank.gather(1, kept)[vm_kept].to(visual_embeds.device)])
        return stock(hidden_states, visual_pos_masks, visual_embeds)

    lm._deepstack_process = deepstack_process
    return [_Restore(lm, "_deepstack_process")]


register_adapter(FamilyAdapter(
    "qwen2_vl", ("Qwen2VLForConditionalGeneration", "Qwen2VLModel"), IDS, PIXELS, mrope=True,
    coords_fn=mrope_coords))
register_adapter(FamilyAdapter(
    "qwen2_5_vl", ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLModel"), IDS, PIXELS, mrope=True,
    coords_fn=mrope_coords))
register_adapter(FamilyAdapter(
    "qwen3_vl", ("Qwen3VLForConditionalGeneration", "Qwen3VLModel"), IDS, PIXELS, mrope=True,
    coords_fn=mrope_coords, installer=deepstack_installer))
register_adapter(FamilyAdapter(
    "qwen3_vl_moe", ("Qwen3VLMoeForConditionalGeneration", "Qwen3VLMoeModel"), IDS, PIXELS, mrope=True,
    coords_fn=mrope_coords, installer=deepstack_installer))

# Qwen3.5 mixes linear-attention (Gated DeltaNet) and full-attention layers: see docs/design.md.
_QWEN3_5 = ("its decoder mixes linear-attention (Gated DeltaNet) layers with full-attention layers. Dropping tokens "
            "from a recurrent layer changes the decay and convolution between the tokens it keeps, which no "
            "attention mask reproduces, so the masked-reference guarantee this library tests does not hold; "
            "scores exist only at every 4th layer; and the cache length is read from the first full-attention "
            "layer (layer 3), not layer 0. See docs/design.md, 'Qwen3.5'.")
for _name, _classes in (("qwen3_5", ("Qwen3_5ForConditionalGeneration", "Qwen3_5Model")),
                        ("qwen3_5_moe", ("Qwen3_5MoeForConditionalGeneration", "Qwen3_5MoeModel"))):
    register_adapter(FamilyAdapter(_name, _classes, refusal=_QWEN3_5))
