"""InternVL (the -hf checkpoints): pixel-shuffled 448 px tiles of 256 <IMG_CONTEXT> tokens."""
from __future__ import annotations

import math

import torch

from .base import CoordsContext, FamilyAdapter, register_adapter, square_chunk_coords


def internvl_coords(adapter, ctx: CoordsContext):
    """One ``sqrt(image_seq_length)``-sided grid per tile (16 x 16), thumbnails and video frames alike."""
    return square_chunk_coords(ctx, math.isqrt(int(ctx.model.config.image_seq_length)))


# Video frames use the image token too; <img> and </img> around each tile are text.
register_adapter(FamilyAdapter(
    "internvl", ("InternVLForConditionalGeneration", "InternVLModel"), ("image_token_id",), ("pixel_values",),
    coords_fn=internvl_coords))
