"""InternVL (the -hf checkpoints): pixel-shuffled 448 px tiles of 256 <IMG_CONTEXT> tokens."""
from __future__ import annotations

import math

import torch

from .base import CoordsContext, FamilyAdapter, register_adapter, square_chunk_coords
from .vision import MergeSpec, VisionSpec, feature_layer_index, inner_model, patch_scores, patch_tensors


def internvl_coords(adapter, ctx: CoordsContext):
    """One ``sqrt(image_seq_length)``-sided grid per tile (16 x 16), thumbnails and video frames alike."""
    return square_chunk_coords(ctx, math.isqrt(int(ctx.model.config.image_seq_length)))


def _tower_layers(model):
    return [layer.attention for layer in inner_model(model).vision_tower.encoder.layer]


def _select_layer(model) -> int:
    return feature_layer_index(model, len(_tower_layers(model)))


def internvl_vision_scores(model, records) -> torch.Tensor:
    """Per tile, the patch scores (CLS dropped) through the model's own ``pixel_shuffle`` as a one-channel
    "feature": each LLM token gets the mean of the 2x2 patches it concatenates."""
    inner, out = inner_model(model), []
    for r in records:
        s = patch_scores(model, r)
        side = math.isqrt(s.shape[1])
        grouped = inner.pixel_shuffle(s.reshape(s.shape[0], side, side, 1), scale_factor=model.config.downsample_ratio)
        out.append(grouped.mean(dim=-1).flatten())
    return torch.cat(out)


def internvl_token_units(model, records) -> torch.Tensor:
    """Each tile (the thumbnail too) is one unit: the tower encodes each on its own."""
    out, base = [], 0
    for r in records:
        tiles, per = patch_scores(model, r).shape
        per = round(per * model.config.downsample_ratio ** 2)  # LLM tokens per tile, after pixel_shuffle
        out.append(torch.arange(base, base + tiles).repeat_interleave(per))
        base += tiles
    return torch.cat(out)


def internvl_token_keys(model, records) -> torch.Tensor:
    """Per tile, the head-mean keys (CLS dropped) through ``pixel_shuffle``: each LLM token gets the mean of the
    keys of the 2x2 patches it concatenates (the shuffle concatenates whole per-patch channel blocks)."""
    inner, out = inner_model(model), []
    for r in records:
        k = patch_tensors(model, r, "keys")
        side, dh = math.isqrt(k.shape[1]), k.shape[-1]
        grouped = inner.pixel_shuffle(k.reshape(k.shape[0], side, side, dh), scale_factor=model.config.downsample_ratio)
        out.append(grouped.reshape(-1, grouped.shape[-1] // dh, dh).mean(dim=1))
    return torch.cat(out)


def internvl_token_features(model, records) -> torch.Tensor:
    """The projector's input: per tile, the pixel-shuffled features, one row (4 patches' channels) per LLM token."""
    return torch.cat([torch.cat(r.features, 0).flatten(0, 1) for r in records])


def internvl_project(model, x: torch.Tensor) -> torch.Tensor:
    return inner_model(model).multi_modal_projector(x)


# InternViT has a CLS token, but the projector reads 2x2 patch groups (4x the width), so CLS has no slot.
INTERNVL_MERGE = MergeSpec(lambda m: inner_model(m).multi_modal_projector, internvl_token_keys,
                           internvl_token_features, internvl_project)

# Video frames use the image token too; <img> and </img> around each tile are text.
register_adapter(FamilyAdapter(
    "internvl", ("InternVLForConditionalGeneration", "InternVLModel"), ("image_token_id",), ("pixel_values",),
    coords_fn=internvl_coords,
    vision=VisionSpec(_tower_layers, _select_layer, internvl_vision_scores, internvl_token_units,
                      merge=INTERNVL_MERGE)))
