"""LLaVA-1.5, LLaVA-NeXT and LLaVA-OneVision (llava-hf classes)."""
from __future__ import annotations

import inspect
import math
import sys

import torch

from .base import CoordsContext, FamilyAdapter, grid_coords, register_adapter, square_chunk_coords, stack_rows, \
    visual_runs
from .vision import NEWLINE_SCORE, MergeSpec, VisionSpec, encoder_layers, feature_layer_index, inner_model, \
    patch_scores, patch_tensors, select_strategy


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


# ------------------------------------------------------------------ vision-side scores
def _tower_layers(model):
    return encoder_layers(inner_model(model).vision_tower)


def _select_layer(model) -> int:
    return feature_layer_index(model, len(_tower_layers(model)))


def llava_vision_scores(model, records) -> torch.Tensor:
    """LLaVA-1.5: each image's patch scores in raster order (CLS dropped under the ``"default"`` strategy)."""
    return torch.cat([patch_scores(model, r).flatten() for r in records])


def llava_token_units(model, records) -> torch.Tensor:
    """LLaVA-1.5: each image is one unit (the tower encodes each on its own)."""
    out, base = [], 0
    for r in records:
        crops, per = patch_scores(model, r).shape
        out.append(torch.arange(base, base + crops).repeat_interleave(per))
        base += crops
    return torch.cat(out)


def _projector(model):
    return inner_model(model).multi_modal_projector


def llava_token_keys(model, records) -> torch.Tensor:
    """LLaVA-1.5: each image's head-mean keys in raster order (CLS dropped as for the score)."""
    return torch.cat([patch_tensors(model, r, "keys").flatten(0, 1) for r in records])


def llava_token_features(model, records) -> torch.Tensor:
    """LLaVA-1.5: the projector's input, one row per patch (the select layer's output, CLS dropped)."""
    return torch.cat([torch.cat(r.features, 0).flatten(0, 1) for r in records])


def llava_project(model, x: torch.Tensor) -> torch.Tensor:
    return _projector(model)(x)


def llava_cls_features(model, records):
    """LLaVA-1.5 under the ``"default"`` strategy: each image's CLS feature of the select layer, with the index of
    the image's first LLM token (under ``"full"`` the CLS token is already an image token of the prompt)."""
    out, start = [], 0
    for r in records:
        per_image = torch.cat(r.chunks, 0).shape[1] - 1
        cls = torch.cat(r.cls, 0) if r.cls else None
        default = select_strategy(model, r) == "default"
        for j in range(torch.cat(r.chunks, 0).shape[0]):
            if default and cls is not None:
                out.append((start, cls[j]))
            start += per_image if default else per_image + 1
    return out


LLAVA_MERGE = MergeSpec(_projector, llava_token_keys, llava_token_features, llava_project, llava_cls_features)


def _crops_per_image(model, record, need_patching=None):
    """How many crops (base included) each image of a ``get_image_features`` call gave the tower."""
    mod = sys.modules[type(inner_model(model)).__module__]
    sizes = record.call["image_sizes"]
    need_patching = need_patching or [True] * len(sizes)
    return [mod.image_size_to_num_patches(image_size=sz, grid_pinpoints=model.config.image_grid_pinpoints,
                                          patch_size=model.config.vision_config.image_size) if p else 1
            for sz, p in zip(sizes, need_patching)]


def _onevision(model) -> bool:
    """Whether the model packs as OneVision does (``anyres_max`` downsampling, no select-strategy argument)."""
    return "vision_aspect_ratio" in inspect.signature(inner_model(model).pack_image_features).parameters


def _crop_counts(model, record):
    """Crops per image of one call (OneVision tiles only the image of a one-image sample)."""
    n = record.call.get("batch_num_images") if _onevision(model) else None
    need = None if n is None else [int(k) == 1 for k in n for _ in range(int(k))]
    return _crops_per_image(model, record, need)


def _pack(model, record, per_crop: torch.Tensor, newline: torch.Tensor):
    """Per image ``(tokens, X)``: a per-crop tensor ``(crops, T', X)`` of one call laid out as the model lays out
    its image features, by the model's own ``pack_image_features`` (base crop, then the unpadded tile canvas in
    raster order, ``newline`` closing each row; OneVision's ``anyres_max`` bilinear downsampling of a large
    canvas interpolates it as it does the features)."""
    inner = inner_model(model)
    crops = list(torch.split(per_crop, _crop_counts(model, record), 0))
    if _onevision(model):
        ratio = record.call.get("vision_aspect_ratio") or model.config.vision_aspect_ratio
        packed, _ = inner.pack_image_features(crops, record.call["image_sizes"], image_newline=newline,
                                              vision_aspect_ratio=ratio)
    else:
        packed, _ = inner.pack_image_features(crops, record.call["image_sizes"], select_strategy(model, record),
                                              image_newline=newline)
    return packed


def anyres_vision_scores(model, records) -> torch.Tensor:
    """LLaVA-NeXT / OneVision: per-crop patch scores packed as the features (a one-channel "feature"); each
    newline token scores NEWLINE_SCORE; images of a OneVision multi-image prompt are not tiled."""
    return torch.cat([p[:, 0] for r in records
                      for p in _pack(model, r, patch_scores(model, r)[..., None], torch.tensor([NEWLINE_SCORE]))])


def anyres_token_units(model, records) -> torch.Tensor:
    """LLaVA-NeXT / OneVision: each crop (the base image and every tile) is one unit, its tokens found by packing a
    one-hot "feature" of the crop through the model's own layout; newline tokens (a -1 "feature"): -1. On a
    OneVision canvas large enough for its ``anyres_max`` downsampling, a token blended from several tiles gets the
    tile of the largest weight (a number interpolated between tiles would name a tile that is not there)."""
    out, base = [], 0
    for r in records:
        crops, per = patch_scores(model, r).shape
        onehot = torch.eye(crops)[:, None, :].expand(crops, per, crops)
        for p in _pack(model, r, onehot, -torch.ones(crops)):
            weight, crop = p.max(dim=-1)
            out.append(torch.where(weight > 0, crop + base, -1))
        base += crops
    return torch.cat(out)


def _anyres_tensors(model, records, per_crop) -> torch.Tensor:
    out = []
    for r in records:
        x = per_crop(r)
        out += _pack(model, r, x, x.new_zeros(x.shape[-1]))
    return torch.cat(out)


def anyres_token_keys(model, records) -> torch.Tensor:
    """LLaVA-NeXT / OneVision: each crop's head-mean keys laid out as the features (newline rows: zeros)."""
    return _anyres_tensors(model, records, lambda r: patch_tensors(model, r, "keys").float())


def anyres_token_features(model, records) -> torch.Tensor:
    """LLaVA-NeXT / OneVision: each crop's projector input laid out as the features (newline rows: zeros)."""
    return _anyres_tensors(model, records, lambda r: torch.cat(r.features, 0))


def anyres_token_pool(model, records) -> torch.Tensor:
    """LLaVA-NeXT / OneVision: True for the tokens laid out from the tower's patches, False for newline tokens."""
    return _anyres_tensors(model, records, lambda r: torch.ones_like(patch_scores(model, r)[..., None]))[:, 0] > 0.5


def anyres_cls_features(model, records):
    """LLaVA-NeXT under the ``"default"`` strategy: every crop's CLS feature of the select layer (the official
    VisionZip keeps one per crop), each with the index of its image's first LLM token."""
    out, start = [], 0
    for r in records:
        lens = [p.shape[0] for p in _pack(model, r, patch_scores(model, r)[..., None], torch.zeros(1))]
        if r.cls and select_strategy(model, r) == "default":
            firsts = torch.tensor([0] + lens[:-1]).cumsum(0) + start  # each image's first LLM token
            for first, image_cls in zip(firsts.tolist(), torch.split(torch.cat(r.cls, 0), _crop_counts(model, r))):
                out += [(first, c) for c in image_cls]
        start += sum(lens)
    return out


ANYRES_MERGE = MergeSpec(_projector, anyres_token_keys, anyres_token_features, llava_project, anyres_cls_features,
                         token_pool=anyres_token_pool)


register_adapter(FamilyAdapter(
    "llava", ("LlavaForConditionalGeneration", "LlavaModel"), ("image_token_id",), ("pixel_values",),
    coords_fn=llava_coords,
    vision=VisionSpec(_tower_layers, _select_layer, llava_vision_scores, llava_token_units, merge=LLAVA_MERGE)))
register_adapter(FamilyAdapter(
    "llava_next", ("LlavaNextForConditionalGeneration", "LlavaNextModel"), ("image_token_id",), ("pixel_values",),
    coords_fn=anyres_coords,
    vision=VisionSpec(_tower_layers, _select_layer, anyres_vision_scores, anyres_token_units, merge=ANYRES_MERGE)))
register_adapter(FamilyAdapter(
    "llava_onevision", ("LlavaOnevisionForConditionalGeneration", "LlavaOnevisionModel"),
    ("image_token_id", "video_token_id"), ("pixel_values", "pixel_values_videos"), coords_fn=anyres_coords,
    vision=VisionSpec(_tower_layers, _select_layer, anyres_vision_scores, anyres_token_units, merge=ANYRES_MERGE)))
