"""The adapter interface: where a family's decoder is, which ids are visual tokens, how its images lie.

The engine asks an adapter and never names a model. A model whose class is not
registered is refused: pruning that silently does nothing is worse than an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import transformers

ADAPTERS: Dict[str, "FamilyAdapter"] = {}


@dataclass
class CoordsContext:
    """What a family's coordinate function may read at the start of the text model's prefill."""
    model: nn.Module
    input_ids: torch.Tensor                 # (B, L)
    visual: torch.Tensor                    # (B, L) bool
    text_kwargs: dict                       # the text model's call keywords (inputs_embeds, position_ids, ...)


@dataclass(frozen=True)
class FamilyAdapter:
    """How to find the pieces of one model family.

    coords: ``fn(adapter, ctx) -> (B, N, 3)`` the (segment, row, col) of each of
    the N image tokens of every row, in prompt order, where a segment is one
    image, frame or tile laid out as a grid; the spatial scorer reads it.
    installer: ``fn(adapter, pruner) -> [handles]`` for family-specific hooks
    that must follow the kept tokens (each handle has ``.remove()``).
    vision: where the vision tower is and how its scores map to image tokens
    (``adapters/vision.py``), for vision-side scorers; None: they are refused.
    refusal: a reason this family cannot be pruned; :func:`adapter_for` raises it.
    """
    family: str                           # the transformers ``model_type`` of the family's configs
    classes: Tuple[str, ...]              # accepted model class names: the top-level class first, then inner ones
    visual_token_attrs: Tuple[str, ...] = ()   # config attributes holding visual token ids
    pixel_keys: Tuple[str, ...] = ("pixel_values",)   # forward arguments that carry visual inputs
    text_config_key: str = "text_config"
    mrope: bool = False                   # 3-D M-RoPE positions (Qwen2-VL and successors)
    coords_fn: Optional[Callable] = None
    installer: Optional[Callable] = None
    refusal: Optional[str] = None
    vision: Optional[object] = None       # a VisionSpec

    def multimodal_model(self, model: nn.Module) -> nn.Module:
        """The module that owns ``language_model`` (the inner ``XModel``)."""
        inner = model if hasattr(model, "language_model") and isinstance(model.language_model, nn.Module) else \
            getattr(model, "model", None)
        if inner is None or not isinstance(getattr(inner, "language_model", None), nn.Module):
            raise ValueError(f"{type(model).__name__}: could not find its language_model; the layout of this "
                             f"transformers version is not supported by the {self.family} adapter")
        return inner

    def text_model(self, model: nn.Module) -> nn.Module:
        return self.multimodal_model(model).language_model

    def layers(self, model: nn.Module) -> List[nn.Module]:
        layers = getattr(self.text_model(model), "layers", None)
        if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
            raise ValueError(f"{type(model).__name__}: its text model has no decoder `layers`")
        return list(layers)

    def text_config(self, model: nn.Module):
        return getattr(model.config, self.text_config_key)

    def visual_token_ids(self, model: nn.Module) -> Tuple[int, ...]:
        ids = []
        for attr in self.visual_token_attrs:
            v = getattr(model.config, attr, None)
            if v is not None:
                ids.append(int(v))
        if not ids:
            raise ValueError(f"{type(model).__name__}: config has none of {self.visual_token_attrs}")
        return tuple(ids)

    def rotary_embedding(self, model: nn.Module) -> nn.Module:
        """The text model's rotary embedding, ``fn(x, position_ids) -> (cos, sin)`` (renumbering)."""
        rot = getattr(self.text_model(model), "rotary_emb", None)
        if rot is None:
            raise ValueError(f"{type(model).__name__}: its text model has no rotary_emb to renumber positions with")
        return rot

    def input_norm(self, layer: nn.Module) -> nn.Module:
        """A decoder layer's pre-attention norm (PyramidDrop's probe)."""
        return layer.input_layernorm

    def final_norm(self, model: nn.Module) -> nn.Module:
        """The decoder's final norm (DART's features)."""
        return self.text_model(model).norm

    def coords(self, ctx: CoordsContext) -> torch.Tensor:
        """(B, N, 3) image-token coordinates; without a family function, one row per run of image tokens."""
        return (self.coords_fn or run_coords)(self, ctx)

    def install(self, pruner) -> list:
        return self.installer(self, pruner) if self.installer else []


def register_adapter(adapter: FamilyAdapter) -> FamilyAdapter:
    """Add ``adapter`` for each of its class names."""
    for cls in adapter.classes:
        ADAPTERS[cls] = adapter
    return adapter


def adapter_for(model: nn.Module) -> FamilyAdapter:
    """The adapter of ``model``'s class, or a ValueError listing the supported ones."""
    name = type(model).__name__
    if name not in ADAPTERS:
        supported = sorted(n for n, a in ADAPTERS.items() if a.refusal is None)
        raise ValueError(
            f"{name} is not supported by SequentialPrune (supported: {supported}). "
            "Pass the vision-language model itself, e.g. LlavaForConditionalGeneration.")
    adapter = ADAPTERS[name]
    if adapter.refusal:
        raise ValueError(f"{name} is not supported by SequentialPrune: {adapter.refusal}")
    return adapter


def families() -> Dict[str, FamilyAdapter]:
    """Every family the library prunes, by ``model_type``, in registration order (refused families left out).

    The one table of supported families: the scripts' and tests' per-family tables are checked against it.
    """
    out: Dict[str, FamilyAdapter] = {}
    for adapter in ADAPTERS.values():
        if adapter.refusal is None:
            out.setdefault(adapter.family, adapter)
    return out


def model_class(model_type: str) -> type:
    """The transformers class that loads a checkpoint of ``model_type`` (its adapter's top-level class), e.g.
    ``LlavaForConditionalGeneration`` for ``"llava"``; a ValueError lists the supported model types."""
    supported = families()
    if model_type not in supported:
        raise ValueError(f"model_type {model_type!r} is not supported by SequentialPrune; "
                         f"choose a model of {sorted(supported)}")
    return getattr(transformers, supported[model_type].classes[0])


# ------------------------------------------------------------------ coordinates
def visual_runs(visual_row: torch.Tensor) -> List[Tuple[int, int]]:
    """(start, length) of each run of consecutive visual tokens in one row."""
    v = visual_row.to(torch.int8).cpu()
    edges = torch.diff(torch.cat([torch.zeros(1, dtype=torch.int8), v, torch.zeros(1, dtype=torch.int8)]))
    starts = (edges == 1).nonzero().flatten().tolist()
    ends = (edges == -1).nonzero().flatten().tolist()
    return [(s, e - s) for s, e in zip(starts, ends)]


def grid_coords(segments: List[Tuple[int, int, int]]) -> torch.Tensor:
    """(n, 3) coordinates of segments given as (count, rows, cols), each laid out row-major."""
    out = []
    for seg, (count, _, cols) in enumerate(segments):
        idx = torch.arange(count)
        out.append(torch.stack([torch.full_like(idx, seg), idx // cols, idx % cols], 1))
    return torch.cat(out) if out else torch.zeros(0, 3, dtype=torch.long)


def stack_rows(rows: List[torch.Tensor]) -> torch.Tensor:
    """Per-row (N_r, 3) coordinates into (B, max N_r, 3), a shorter row padded with -1 rows."""
    if not rows:
        return torch.zeros(0, 0, 3, dtype=torch.long)
    n = max(r.shape[0] for r in rows)
    out = torch.full((len(rows), n, 3), -1, dtype=torch.long)
    for b, r in enumerate(rows):
        out[b, :r.shape[0]] = r
    return out


def run_coords(adapter, ctx: CoordsContext) -> torch.Tensor:
    """Fallback: each run of image tokens is one row of a grid."""
    rows = []
    for r in range(ctx.visual.shape[0]):
        rows.append(grid_coords([(n, 1, n) for _, n in visual_runs(ctx.visual[r])]))
    return stack_rows(rows)


def square_chunk_coords(ctx: CoordsContext, side: int) -> torch.Tensor:
    """Each run of image tokens is a sequence of ``side x side`` grids (images or tiles);
    a run of any other length is one row."""
    rows = []
    for r in range(ctx.visual.shape[0]):
        segs = []
        for _, n in visual_runs(ctx.visual[r]):
            if n % (side * side) == 0:
                segs += [(side * side, side, side)] * (n // (side * side))
            else:
                segs.append((n, 1, n))
        rows.append(grid_coords(segs))
    return stack_rows(rows)
