"""Qwen2-VL, Qwen2.5-VL, Qwen3-VL (dense and MoE): M-RoPE positions; Qwen3-VL's DeepStack."""
from __future__ import annotations

import torch

import sys

from .base import CoordsContext, FamilyAdapter, register_adapter, run_coords, stack_rows, visual_runs
from .vision import MergeSpec, VisionSpec, inner_model

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


# ------------------------------------------------------------------ vision-side scores
def _tower_layers(model):
    return [block.attn for block in inner_model(model).visual.blocks]


def _last_block(model) -> int:
    return len(_tower_layers(model)) - 1  # the merger reads the last block's output


def _window_index(tower, grid_thw):
    """Qwen2.5-VL's window permutation of the merge groups (None for towers without windows)."""
    if not hasattr(tower, "window_size"):
        return None
    if hasattr(tower, "get_window_index"):  # older transformers
        return tower.get_window_index(grid_thw)[0]
    fn = sys.modules[type(tower).__module__].get_vision_window_index
    return fn(grid_thw, spatial_merge_size=tower.spatial_merge_size, window_size=tower.window_size,
              patch_size=tower.patch_size, kwargs={})[0]


def qwen_vision_scores(model, records) -> torch.Tensor:
    """The attention each vision token receives, summed over the queries of its attention segment, pooled per
    2x2 merge group (4 consecutive tokens: one LLM token), put back from Qwen2.5-VL's window order into raster
    order, and divided by the tokens of the token's image (or frame) and by the group size: per image, the
    query mean of the received attention, averaged over each group. Every image's scores have the same total
    (1/4), so the images of a prompt compete on equal terms, as CLS rows (each summing to 1) do."""
    tower = inner_model(model).visual
    unit = tower.spatial_merge_size ** 2
    out = []
    for r in records:
        grid = r.call["image_grid_thw"].cpu()
        groups = torch.cat(r.chunks, dim=-1)[0].cpu().view(-1, unit).sum(dim=-1)
        order = _window_index(tower, grid)
        if order is not None:
            groups = torch.empty_like(groups).index_copy_(0, order.cpu().long(), groups)
        frame = torch.repeat_interleave(grid[:, 1] * grid[:, 2], grid[:, 0])
        out.append(groups / torch.repeat_interleave(frame, frame // unit) / unit)
    return torch.cat(out)


def qwen_token_units(model, records) -> torch.Tensor:
    """Each image is one unit: ``t * h * w / 4`` LLM tokens of ``image_grid_thw``."""
    unit = inner_model(model).visual.spatial_merge_size ** 2
    sizes = [int(t * h * w) // unit for r in records for t, h, w in r.call["image_grid_thw"].tolist()]
    return torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes, dtype=torch.long))


def _per_group(model, records, name: str, pool: str) -> torch.Tensor:
    """Per LLM image token, in raster order: ``name`` (``(seq, C)`` per record, in the tower's order) over each
    merge group of 4 consecutive vision tokens, concatenated (``"cat"``, the merger's input) or averaged."""
    tower = inner_model(model).visual
    unit = tower.spatial_merge_size ** 2
    out = []
    for r in records:
        x = torch.cat([t.reshape(-1, t.shape[-1]) for t in getattr(r, name)], 0)
        groups = x.reshape(-1, unit * x.shape[-1]) if pool == "cat" else x.reshape(-1, unit, x.shape[-1]).mean(1)
        order = _window_index(tower, r.call["image_grid_thw"].cpu())
        if order is not None:
            groups = torch.empty_like(groups).index_copy_(0, order.to(groups.device).long(), groups)
        out.append(groups)
    return torch.cat(out)


def qwen_project(model, x: torch.Tensor) -> torch.Tensor:
    """The merger on rows of 4 concatenated vision tokens (it normalises each token, then concatenates)."""
    tower = inner_model(model).visual
    return tower.merger(x.reshape(-1, x.shape[-1] // tower.spatial_merge_size ** 2))


# Qwen3-VL's DeepStack features of a merged token stay the target's own (the engine gathers them at kept slots).
QWEN_MERGE = MergeSpec(lambda m: inner_model(m).visual.merger, lambda m, r: _per_group(m, r, "keys", "mean"),
                       lambda m, r: _per_group(m, r, "features", "cat"), qwen_project)
QWEN_VISION = VisionSpec(_tower_layers, _last_block, qwen_vision_scores, qwen_token_units, merge=QWEN_MERGE)

register_adapter(FamilyAdapter(
    "qwen2_vl", ("Qwen2VLForConditionalGeneration", "Qwen2VLModel"), IDS, PIXELS, mrope=True,
    coords_fn=mrope_coords, vision=QWEN_VISION))
register_adapter(FamilyAdapter(
    "qwen2_5_vl", ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLModel"), IDS, PIXELS, mrope=True,
    coords_fn=mrope_coords, vision=QWEN_VISION))
register_adapter(FamilyAdapter(
    "qwen3_vl", ("Qwen3VLForConditionalGeneration", "Qwen3VLModel"), IDS, PIXELS, mrope=True,
    coords_fn=mrope_coords, installer=deepstack_installer, vision=QWEN_VISION))
register_adapter(FamilyAdapter(
    "qwen3_vl_moe", ("Qwen3VLMoeForConditionalGeneration", "Qwen3VLMoeModel"), IDS, PIXELS, mrope=True,
    coords_fn=mrope_coords, installer=deepstack_installer, vision=QWEN_VISION))

# Qwen3.5 mixes linear-attention (Gated DeltaNet) and full-attention layers: see docs/design.md.
_QWEN3_5 = ("its decoder mixes linear-attention (Gated DeltaNet) layers with full-attention layers. Dropping tokens "
            "from a recurrent layer changes the decay and convolution between the tokens it keeps, which no "
            "attention mask reproduces, so the masked-reference guarantee this library tests does not hold; "
            "scores exist only at every 4th layer; and the cache length is read from the first full-attention "
            "layer (layer 3), not layer 0. See docs/design.md, 'Qwen3.5'.")
for _name, _classes in (("qwen3_5", ("Qwen3_5ForConditionalGeneration", "Qwen3_5Model")),
                        ("qwen3_5_moe", ("Qwen3_5MoeForConditionalGeneration", "Qwen3_5MoeModel"))):
    register_adapter(FamilyAdapter(_name, _classes, refusal=_QWEN3_5))
