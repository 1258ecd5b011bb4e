"""LLaVA-1.5, LLaVA-NeXT and LLaVA-OneVision (llava-hf classes)."""
from __future__ import annotations

import math
import sys

import torch

from .base import CoordsContext, FamilyAdapter, grid_coords, register_adapter, square_chunk_coords, stack_rows, \
    visual_runs


def _patch_side(model) -> int:
    v = model.config.vision_config
    size = v.image_size if isinstance(v.image_size, int) else v.image_size[0]
    patch = v.patch_size if isinstance(v.patch_size, int) else v.patch_size[0]
    return size // patch


def llava_coords(adapter, ctx: CoordsContext) -> torch.Tensor:
    """LLaVA-1.5: one ``side x side`` patch grid per image (24 x 24 at 336 px)."""
    return square_chunk_coords(ctx, _patch_side(ctx.model))


def anyres_coords(adapter, ctx: CoordsContext) -> torch.Tensor:
    """LLaVA-NeXT / OneVision: per image, the ``side x side`` base grid, then the unpadded tile map whose
    rows each end in a newline token. Newline tokens are found as the embeddings equal to the model's
    ``image_newline``; video runs (OneVision) are frames of pooled grids plus one newline."""
    side = _patch_side(ctx.model)
    newline = getattr(adapter.multimodal_model(ctx.model), "image_newline", None)
    embeds = ctx.text_kwargs.get("inputs_embeds")
    video_id = getattr(ctx.model.config, "video_token_id", None)
    rows = []
    for r in range(ctx.visual.shape[0]):
        segs = []
        for start, n in visual_runs(ctx.visual[r]):
            is_nl = None
            if newline is not None and embeds is not None:
                is_nl = (embeds[r, start:start + n] == newline.to(embeds)).all(-1).cpu()
            if video_id is not None and int(ctx.input_ids[r, start]) == video_id:
                pooled = math.ceil(side / 2)
                frames, rest = divmod(n - 1, pooled * pooled)
                segs += [(pooled * pooled, pooled, pooled)] * frames if rest == 0 else [(n - 1, 1, n - 1)]
                segs.append((1, 1, 1))
                continue
            base = side * side if n > side * side else 0
            if base:
                segs.append((base, side, side))
            rest = n - base
            if rest == 0:
                continue
            nl = is_nl[base:] if is_nl is not None else None
            if nl is None or not bool(nl[-1]):
                segs.append((rest, 1, rest))
                continue
            ends = nl.nonzero().flatten()
            widths = torch.diff(torch.cat([torch.tensor([-1]), ends]))
            if bool((widths == widths[0]).all()):  # a rectangle: rows of equal width, newline last
                segs.append((rest, len(ends), int(widths[0])))
            else:
                segs.append((rest, 1, rest))
        rows.append(grid_coords(segs))
    return stack_rows(rows)


register_adapter(FamilyAdapter(
    "llava", ("LlavaForConditionalGeneration", "LlavaModel"), ("image_token_id",), ("pixel_values",),
    coords_fn=llava_coords))
register_adapter(FamilyAdapter(
    "llava_next", ("LlavaNextForConditionalGeneration", "LlavaNextModel"), ("image_token_id",), ("pixel_values",),
    coords_fn=anyres_coords))
register_adapter(FamilyAdapter(
    "llava_onevision", ("LlavaOnevisionForConditionalGeneration", "LlavaOnevisionModel"),
    ("image_token_id", "video_token_id"), ("pixel_values", "pixel_values_videos"), coords_fn=anyres_coords))
