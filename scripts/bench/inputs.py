"""Synthetic prompts with each family's real image-token layout.

Text tokens are random ids; image placeholders, pixel tensors and grid metadata
have exactly the shapes the family's processor would produce, so the vision
tower runs and the decoder sees the real number of image tokens.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from transformers.image_processing_utils import select_best_resolution


@dataclass
class Layout:
    """Model inputs plus what the benchmark needs to know about them."""
    inputs: dict
    n_image_tokens: int      # image tokens per prompt (all images)
    seq_len: int
    images: int
    image_size: Tuple[int, int]

    def describe(self) -> str:
        h, w = self.image_size
        return f"{self.images} x {h}x{w} -> {self.n_image_tokens} image tokens, {self.seq_len} tokens"


# model_type -> fn(config, images, image_size or None) -> (pixel inputs, tokens per image, image_size, wrap ids)
LAYOUTS: Dict[str, Callable] = {}


def register_layout(*model_types: str):
    def deco(fn):
        for t in model_types:
            LAYOUTS[t] = fn
        return fn
    return deco


@register_layout("llava")
def llava_layout(cfg, images: int, size, gen):
    """LLaVA-1.5: every image is resized to the tower's square; (side/patch)^2 tokens (576 at 336 px)."""
    v = cfg.vision_config
    side = v.image_size
    per = (side // v.patch_size) ** 2 + (cfg.vision_feature_select_strategy == "full")
    return {"pixel_values": torch.randn(images, 3, side, side, generator=gen)}, per, (side, side), ([], [])


def _anyres(cfg, images: int, size, gen):
    """Pixels of a base view plus the tiles of the best pinpoint, the patch grid of one tile, and the tile map's
    size after unpadding (rows, cols)."""
    v = cfg.vision_config
    side = v.image_size
    h, w = size
    best_h, best_w = select_best_resolution((h, w), cfg.image_grid_pinpoints)
    pix = torch.randn(images, 1 + (best_h // side) * (best_w // side), 3, side, side, generator=gen)
    grid = side // v.patch_size
    inputs = {"pixel_values": pix, "image_sizes": torch.tensor([[h, w]] * images)}
    return inputs, grid, _unpadded(h, w, grid * (best_h // side), grid * (best_w // side))


@register_layout("llava_next")
def llava_next_layout(cfg, images: int, size, gen):
    """LLaVA-NeXT anyres: a base view plus tiles of the best pinpoint, unpadded, with a newline per row (the
    processor's arithmetic)."""
    size = size or (672, 672)
    inputs, grid, (cur_h, cur_w) = _anyres(cfg, images, size, gen)
    return inputs, grid * grid + cur_h * (cur_w + 1), size, ([], [])


@register_layout("llava_onevision")
def onevision_layout(cfg, images: int, size, gen):
    """LLaVA-OneVision anyres_max_9: as LLaVA-NeXT, the tile map bilinear-shrunk when over 9 tiles' worth
    (1485 tokens at 384x384 for the 7B's SigLIP 384/14)."""
    size = size or (768, 768)
    inputs, grid, (cur_h, cur_w) = _anyres(cfg, images, size, gen)
    ratio = math.sqrt(cur_h * cur_w / (9 * grid ** 2))
    if ratio > 1.1:
        cur_h, cur_w = int(cur_h // ratio), int(cur_w // ratio)
    return inputs, grid * grid + cur_h * (cur_w + 1), size, ([], [])


@register_layout("internvl")
def internvl_layout(cfg, images: int, size, gen):
    """InternVL: 448 px tiles, each ``image_seq_length`` (256) tokens after pixel shuffle; several tiles get a
    thumbnail tile too."""
    v = cfg.vision_config
    side = v.image_size[0] if isinstance(v.image_size, (list, tuple)) else v.image_size
    h, w = size or (side, side)
    tiles = max(1, round(h / side)) * max(1, round(w / side))
    tiles += tiles > 1
    pix = torch.randn(images * tiles, 3, side, side, generator=gen)
    return {"pixel_values": pix}, tiles * cfg.image_seq_length, (h, w), ([], [])


def _unpadded(h: int, w: int, cur_h: int, cur_w: int) -> Tuple[int, int]:
    """The tile map's size after ``unpad_image`` removes the padding of an h x w image."""
    if w / h > cur_w / cur_h:
        new_h = int(round(h * (cur_w / w), 7))
        cur_h -= ((cur_h - new_h) // 2) * 2
    else:
        new_w = int(round(w * (cur_h / h), 7))
        cur_w -= ((cur_w - new_w) // 2) * 2
    return cur_h, cur_w


@register_layout("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")
def qwen_layout(cfg, images: int, size, gen):
    """Qwen2-VL and successors: native resolution; (h/p)(w/p) patches (p = 14, or 16 for Qwen3-VL) merged 2x2
    into tokens, framed by vision start/end."""
    v = cfg.vision_config
    unit = v.patch_size * v.spatial_merge_size
    h, w = size or (448, 448)
    if h % unit or w % unit:
        raise ValueError(f"Qwen2-VL image size must be a multiple of {unit}, got {h}x{w}")
    gh, gw = h // v.patch_size, w // v.patch_size
    pix = torch.randn(images * gh * gw, v.in_channels * v.temporal_patch_size * v.patch_size ** 2, generator=gen)
    return ({"pixel_values": pix, "image_grid_thw": torch.tensor([[1, gh, gw]] * images)},
            gh * gw // v.spatial_merge_size ** 2, (h, w), ([cfg.vision_start_token_id], [cfg.vision_end_token_id]))


def make_layout(model, images: int = 1, image_size: Optional[Tuple[int, int]] = None, text_tokens: int = 40,
                batch: int = 1, seed: int = 0) -> Layout:
    """A prompt of ``text_tokens`` text tokens around ``images`` images, repeated ``batch`` times."""
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    pixels, per, size, (pre, post) = LAYOUTS[cfg.model_type](cfg, images, image_size, gen)
    ids = _prompt(cfg, images, per, pre, post, text_tokens, gen)
    input_ids = torch.tensor([ids] * batch)
    if batch > 1:
        pixels = {k: torch.cat([t] * batch) for k, t in pixels.items()}
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), **pixels}
    if "mm_token_type_ids" in inspect.signature(type(model).forward).parameters:
        # transformers 5.2x needs it for M-RoPE; 1 marks image tokens
        inputs["mm_token_type_ids"] = (input_ids == cfg.image_token_id).long()
    dev, dt = model.device, model.dtype
    inputs = {k: (t.to(dev, dt) if t.is_floating_point() else t.to(dev)) for k, t in inputs.items()}
    return Layout(inputs, per * images, len(ids), images, size)


def _prompt(cfg, images: int, per: int, pre: List[int], post: List[int], text_tokens: int, gen) -> List[int]:
    """``BOS USER: [<img> \\n]*images question ASSISTANT:`` with random text ids."""
    vocab = cfg.text_config.vocab_size
    special = {getattr(cfg, a, None) for a in ("image_token_id", "video_token_id", "vision_start_token_id",
                                               "vision_end_token_id")}
    hi = min(vocab, 32000)

    def text(n):
        out = []
        while len(out) < n:
            t = int(torch.randint(3, hi, (1,), generator=gen))
            if t not in special:
                out.append(t)
        return out

    framing = len(pre) + len(post) + 1  # + one newline token per image
    head = 4
    tail = text_tokens - head - images * framing
    if tail < 1:
        raise ValueError(f"--text-tokens {text_tokens} is too few for {images} images")
    ids = [1] + text(head - 1)
    nl = text(1)
    for _ in range(images):
        ids += pre + [cfg.image_token_id] * per + post + nl
    return ids + text(tail)
